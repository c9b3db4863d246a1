"""Swarm launch and watch: create the job's services, stream their logs, watch their tasks.

:meth:`Launch.launch` checks (pre-flight), creates, all labelled ``autocnnp.job=<job>`` and
recorded in ``RUN_DIR/swarm.json``, the overlay network, the per-job secret, the rendezvous
service and the rank services; streams the tasks' output to
``RUN_DIR/logs/container-rank-K.log`` (rank 0's to the terminal too); watches the tasks (the
first task that fails, is rejected or cannot be scheduled fails the job within seconds, naming
the rank, the node and the reason; a node running ranks that stops answering the manager,
whose tasks the swarm still shows running, fails it naming the node); and always cleans up,
whatever the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets as _secrets
import threading
import time
from pathlib import Path
from typing import Any

from autocnnp.engine import rundir
from autocnnp.engine.plan_swarm import SwarmPlan, build_swarm_plan
from autocnnp.engine.rundir import RunState
from autocnnp.engine.spec import TrainingSpec
from autocnnp.errors import AutocnnpError, JobFailedError
from autocnnp.run_manage.docker_api import DAEMON_REMEDY, docker_call
from autocnnp.run_manage.launcher_monitor import LauncherMonitor
from autocnnp.run_manage.swarm.cleanup import Cleanup
from autocnnp.run_manage.swarm.preflight import Preflight
from autocnnp.run_manage.swarm.session import (ENDED_BY_SWARM, FAILED, NODE_GRACE_S, POLL_S,
                                               SWARM_FILE, TOKEN_HASH_FILE)

SIGNALS = {137: "SIGKILL", 143: "SIGTERM", 139: "SIGSEGV", 134: "SIGABRT"}


class Launch(Preflight, Cleanup):
    """Create, stream, watch; see the module docstring."""

    def launch(self, spec: TrainingSpec, plan: SwarmPlan, run_dir: Path, resume: bool = False) -> int:
        """Run the job to its end; returns 0, raises JobFailedError (rank, node, reason)."""
        if resume and not plan.resume:
            plan = build_swarm_plan(spec, run_dir, plan.job_id, resume=True,
                                    gpu_resource_kind=plan.gpu_resource_kind)
        self.ensure_swarm()
        self.cleanup(plan.job_id, quiet=True)          # leftovers of a launcher that crashed
        plan, _ = self.preflight(plan, spec)
        # the layout pre-flight chose is what runs: plan.json says the same as swarm.json
        rundir.write_json(run_dir / rundir.PLAN_FILE, plan.to_dict())
        record = run_dir / SWARM_FILE
        rundir.write_json(record, {"job_id": plan.job_id, "launcher_pid": os.getpid(),
                                   "started": rundir.timestamp(), "plan": plan.to_dict(),
                                   "created": {"networks": [], "secrets": [], "services": []}})
        rundir.record_state(run_dir, state=RunState.RUNNING, backend=self.name,
                            job_id=plan.job_id, pid=os.getpid(), started=rundir.timestamp())
        self.say(f"swarm job {plan.job_id}: {plan.world_size} rank(s) on "
                 f"{', '.join(plan.nodes) or 'the swarm'}; image {plan.image}")
        for slot in plan.ranks:
            self.say(f"  rank {slot.rank} -> node {slot.node or '(scheduler)'}, task "
                     f"{slot.service}.{slot.slot}" + (f", {slot.gpus} GPU" if slot.gpus else ""))
        started = time.monotonic()
        self.lost_nodes: set[str] = set()
        state = RunState.FAILED
        streams: list[threading.Thread] = []
        # the hang watch and the metrics exporter read what the ranks write to the run
        # directory (bind mounts or the shared volume); a hang ends _watch, then the cleanup
        hung = threading.Event()
        monitor = LauncherMonitor(run_dir, spec.monitoring, stop_job=hung.set, say=self.say)
        try:
            self._create(plan, record)
            streams = self._stream_logs(plan)
            self._watch(plan, lambda: monitor.hang_error() if hung.is_set() else None)
            state = RunState.FINISHED
            self.say(f"swarm job {plan.job_id} finished in {time.monotonic() - started:.0f} s; "
                     f"run directory: {run_dir}")
            return 0
        except JobFailedError as failure:
            try:
                stopped = rundir.read_json(record).get("stop_requested") is not None
            except AutocnnpError:
                stopped = False
            state = RunState.STOPPED if stopped else RunState.FAILED
            if stopped:
                self.say(f"swarm job {plan.job_id} stopped after {time.monotonic() - started:.0f} s")
            else:
                # say it now: removing the services takes a moment more
                self.say(f"swarm job {plan.job_id} failed after {time.monotonic() - started:.0f} s: "
                         f"{failure.message.splitlines()[0]}; removing its services")
                rundir.record_state(run_dir, failure=failure.message,
                                    failed_rank=failure.rank, failed_host=failure.host)
            raise
        except AutocnnpError as failure:   # docker refused to create something, a damaged file
            state = RunState.FAILED
            self.say(f"swarm job {plan.job_id} failed: {failure.message.splitlines()[0]}; "
                     f"removing what it created")
            try:
                rundir.record_state(run_dir, failure=failure.message)
            except AutocnnpError:
                pass
            raise
        except BaseException:
            state = RunState.STOPPED
            raise
        finally:
            monitor.stop()
            removed, problems = self._cleanup(plan.job_id, node_docker=plan.node_docker,
                                              skip_nodes=self.lost_nodes)
            flushed = time.monotonic() + 2.0  # log streams end with their services
            for thread in streams:
                thread.join(timeout=max(0.0, flushed - time.monotonic()))
            ended = rundir.timestamp()
            for path, fields in ((record, dict(ended=ended, state=state, removed=removed,
                                               cleanup_problems=problems)),
                                 (run_dir / rundir.STATE_FILE,
                                  dict(state=state, ended=ended,
                                       seconds=round(time.monotonic() - started, 1)))):
                try:
                    rundir.update_json(path, **fields)
                except (AutocnnpError, OSError) as exc:
                    problems.append(f"cannot record the end of the job in {path.name}: {exc}")
            if problems:
                cleanup_error = self._cleanup_error(plan.job_id, problems, run_dir)
                if state != RunState.FINISHED:   # the job's own failure is the error; say this one
                    self.say(f"autocnnp: warning: {cleanup_error}")
                else:
                    raise cleanup_error

    def _create(self, plan: SwarmPlan, record: Path) -> None:
        import docker.types

        def remember(kind: str, name: str) -> None:
            data = rundir.read_json(record)
            data.setdefault("created", {}).setdefault(kind, []).append(name)
            rundir.write_json(record, data)

        def conflict(kind: str, name: str) -> str:
            return (f"a {kind} named {name} exists without this job's label: remove it "
                    f"(docker {kind} rm {name}) or launch under another run name")

        net = plan.network
        if not net.external:   # a network the config names was checked in pre-flight
            with docker_call(f"cannot create network {net.name} (overlay, for job {plan.job_id})",
                         conflict=conflict("network", net.name)):
                self.client.networks.create(net.name, driver=net.driver,
                                            attachable=net.attachable,
                                            labels=dict(net.labels), scope="swarm")
            remember("networks", net.name)
        secret_refs = {}
        for secret in plan.secrets:
            token = _secrets.token_hex(32)
            with docker_call(f"cannot create secret {secret.name} (for job {plan.job_id})",
                         conflict=conflict("secret", secret.name)):
                created = self.client.secrets.create(name=secret.name, data=token.encode(),
                                                     labels=dict(secret.labels))
            remember("secrets", secret.name)
            secret_refs[secret.name] = docker.types.SecretReference(
                created.id, secret.name, filename=secret.target, mode=0o400)
            (plan.run_dir / TOKEN_HASH_FILE).write_text(hashlib.sha256(token.encode()).hexdigest())
            del token
        for svc in plan.services:
            mode = docker.types.ServiceMode(svc.mode, replicas=svc.replicas)
            resources = None
            if svc.generic_resources:
                resources = docker.types.Resources(generic_resources=dict(svc.generic_resources))
            with docker_call(f"cannot create service {svc.name} ({svc.role} of job {plan.job_id}, "
                         f"image {svc.image})", conflict=conflict("service", svc.name)):
                self.client.services.create(
                    svc.image, args=list(svc.command), name=svc.name, hostname=svc.hostname,
                    env=[f"{k}={v}" for k, v in svc.env], mode=mode,
                    constraints=list(svc.constraints), networks=[net.name],
                    endpoint_spec=docker.types.EndpointSpec(mode=svc.endpoint_mode),
                    restart_policy=docker.types.RestartPolicy(condition=svc.restart_condition),
                    mounts=[docker.types.Mount(m.target, m.source, type=m.type,
                                               read_only=m.read_only) for m in svc.mounts],
                    secrets=[secret_refs[s] for s in svc.secrets if s in secret_refs],
                    resources=resources, labels=dict(svc.labels),
                    container_labels=dict(svc.labels), init=svc.init,
                    stop_grace_period=svc.stop_grace_s * 1_000_000_000)
            remember("services", svc.name)
            self.say(f"  created service {svc.name} ({svc.role}, {svc.replicas} task(s))")

    def _stream_logs(self, plan: SwarmPlan) -> list[threading.Thread]:
        """One thread per rank service: container output to logs/container-rank-K.log."""
        log_dir = plan.run_dir / rundir.LOGS
        log_dir.mkdir(parents=True, exist_ok=True)
        threads = []
        for svc in plan.services:
            thread = threading.Thread(target=self._follow, args=(plan, svc.name, log_dir),
                                      daemon=True, name=f"logs-{svc.name}")
            thread.start()
            threads.append(thread)
        return threads

    def _follow(self, plan: SwarmPlan, service: str, log_dir: Path) -> None:
        slots = {(s.service, s.slot): s.rank for s in plan.ranks}
        files: dict[str, Any] = {}
        task_slots: dict[str, int] = {}
        try:
            stream = self.client.api.service_logs(service, details=True, follow=True,
                                                  stdout=True, stderr=True)
            for raw in stream:
                line = raw.decode("utf-8", "replace")
                details, _, message = line.partition(" ")
                attrs = dict(kv.split("=", 1) for kv in details.split(",") if "=" in kv)
                task_id = attrs.get("com.docker.swarm.task.id", "")
                if task_id not in task_slots:
                    try:
                        task_slots[task_id] = self.client.api.inspect_task(task_id).get("Slot", 0)
                    except Exception:
                        task_slots[task_id] = 0
                rank = slots.get((service, task_slots[task_id]))
                name = f"container-rank-{rank}.log" if rank is not None else f"container-{service}.log"
                if name not in files:
                    files[name] = open(log_dir / name, "a", encoding="utf-8")
                files[name].write(message)
                files[name].flush()
                if rank == 0 and message.strip():
                    self.out.write(f"[rank 0] {message}" if message.endswith("\n") else
                                   f"[rank 0] {message}\n")
                    self.out.flush()
        except Exception:
            pass  # the service was removed: the stream ends
        finally:
            for handle in files.values():
                handle.close()

    def _tasks(self, plan: SwarmPlan) -> dict[int, dict] | None:
        """Latest task of every rank, by rank; None when the rank services are gone."""
        import docker.errors

        by_rank: dict[int, dict] = {}
        slots = {(s.service, s.slot): s.rank for s in plan.ranks}
        for svc in plan.rank_services:
            try:
                with docker_call(f"lost contact with the swarm while watching service {svc.name} "
                             f"of job {plan.job_id}", error=JobFailedError,
                             remedy=f"{DAEMON_REMEDY}; continue with: autocnnp run --resume "
                                    f"{plan.run_dir}"):
                    tasks = self.client.api.tasks(filters={"service": svc.name})
                    self.client.api.inspect_service(svc.name)
            except JobFailedError as exc:
                if isinstance(exc.__cause__, docker.errors.NotFound):
                    return None
                raise
            for task in tasks:
                rank = slots.get((svc.name, task.get("Slot")))
                if rank is None:
                    continue
                if rank not in by_rank or task["Version"]["Index"] > by_rank[rank]["Version"]["Index"]:
                    by_rank[rank] = task
        return by_rank

    def _watch(self, plan: SwarmPlan, hang: Any = lambda: None) -> None:
        """Wait for the job's end; ``hang()`` returns the hang watch's error once it fired."""
        deadline_start = time.monotonic() + plan.rendezvous_timeout_s
        resume = f"continue from the last checkpoint with: autocnnp run --resume {plan.run_dir}"
        record = plan.run_dir / SWARM_FILE

        def check_stopped() -> None:
            if rundir.read_json(record).get("stop_requested"):
                raise JobFailedError(f"swarm job {plan.job_id} was stopped (autocnnp stop)",
                                     remedy=resume)

        while True:
            check_stopped()
            hung = hang()
            if hung is not None:
                raise hung
            tasks = self._tasks(plan)
            if tasks is None or any(t["Status"]["State"] in FAILED | ENDED_BY_SWARM
                                    for t in (tasks or {}).values()):
                time.sleep(0.2)   # `autocnnp stop` removes what it kills; let its flag be seen
                check_stopped()
            if tasks is None:
                raise JobFailedError(f"swarm job {plan.job_id} was stopped (its services were "
                                     f"removed)", remedy=resume)
            with docker_call(f"lost contact with the swarm while watching service "
                         f"{plan.rendezvous.name} of job {plan.job_id}", error=JobFailedError,
                         remedy=f"{DAEMON_REMEDY}; continue with: autocnnp run --resume "
                                f"{plan.run_dir}"):
                rdv = self.client.api.tasks(filters={"service": plan.rendezvous.name})
            for task in rdv:
                if task["Status"]["State"] in FAILED:
                    raise JobFailedError(
                        f"the rendezvous service failed on {self._node_name(task.get('NodeID'))}: "
                        f"{self._reason(task)}", host=self._node_name(task.get("NodeID")),
                        remedy=resume)
            lost = self._lost_nodes(tasks)
            if lost:
                raise self._node_failure(lost, resume)
            failed = [(rank, t) for rank, t in tasks.items()
                      if t["Status"]["State"] in FAILED | ENDED_BY_SWARM
                      and t.get("DesiredState") != "remove"]
            if failed:
                rank, task = min(failed, key=lambda rt: rt[1]["Status"].get("Timestamp", ""))
                lost = self._nodes_behind(plan, tasks, task)
                if lost:
                    raise self._node_failure(lost, resume)
                raise self._failure(plan, rank, task, resume)
            states = [t["Status"]["State"] for t in tasks.values()]
            if len(tasks) == plan.world_size and all(s == "complete" for s in states):
                return
            if time.monotonic() > deadline_start:
                waiting = [(rank, t) for rank, t in sorted(tasks.items())
                           if t["Status"]["State"] in ("new", "pending", "assigned", "accepted",
                                                       "preparing")]
                missing = [r for r in range(plan.world_size) if r not in tasks]
                if waiting or missing:
                    rank, task = waiting[0] if waiting else (missing[0], None)
                    why = (task["Status"].get("Err") or task["Status"].get("Message") or
                           task["Status"]["State"]) if task else "no task was created"
                    raise JobFailedError(
                        f"rank {rank} did not start within the rendezvous timeout "
                        f"({plan.rendezvous_timeout_s} s): {why}", rank=rank,
                        host=self._node_name(task.get("NodeID")) if task else None,
                        remedy="check `docker node ls` and the node resources; raise "
                               "rendezvous_timeout_s for slow image pulls")
            time.sleep(POLL_S)

    def _node_failure(self, lost: dict[str, tuple[str, str, list[int]]], resume: str) -> JobFailedError:
        self.lost_nodes = set(lost)
        name, (state, message, ranks) = min(lost.items(), key=lambda kv: kv[1][2])
        return JobFailedError(
            f"node {name} is {state} ({message}): rank(s) {', '.join(map(str, ranks))} ran "
            f"there; the job cannot go on without them", rank=ranks[0], host=name,
            remedy=f"{resume} (a node that is down or does not answer is left out of the new "
                   f"plan)")

    def _nodes_behind(self, plan: SwarmPlan, tasks: dict[int, dict], first: dict
                      ) -> dict[str, tuple[str, str, list[int]]]:
        """After a rank failed: was a dead node behind it? When a node dies, the ranks it ran
        vanish without a word and the others fail on the broken ring within seconds, well
        before the manager marks the node down (about 16 s). So while ranks on other nodes
        still read running, look for up to NODE_GRACE_S: at their daemons (``node_docker``),
        or at the manager's view of the nodes. A rank that failed on its own ends the others
        in seconds, and its failure is reported as it is."""
        deadline = time.monotonic() + NODE_GRACE_S
        while True:
            lost = self._lost_nodes(tasks) or self._silent_nodes(plan, tasks)
            if lost:
                return lost
            others = [t for t in tasks.values() if t.get("NodeID") != first.get("NodeID")
                      and t["Status"]["State"] == "running"]
            if not others or time.monotonic() > deadline:
                return {}
            time.sleep(POLL_S)
            tasks = self._tasks(plan) or tasks

    def _silent_nodes(self, plan: SwarmPlan, tasks: dict[int, dict]
                      ) -> dict[str, tuple[str, str, list[int]]]:
        """Nodes running ranks whose own Docker daemon does not answer (``node_docker``)."""
        if not plan.node_docker:
            return {}
        from autocnnp.run_manage.swarm.images import node_client, node_url

        running: dict[str, list[int]] = {}
        for rank, task in tasks.items():
            if task.get("NodeID") and task["Status"]["State"] == "running":
                running.setdefault(task["NodeID"], []).append(rank)
        silent = {}
        for node in self.nodes():
            if node.id not in running or node.is_self:
                continue
            try:
                node_client(plan.node_docker, node, timeout_s=5).close()
            except AutocnnpError:
                silent[node.name] = ("unreachable", f"its Docker daemon at "
                                     f"{node_url(plan.node_docker, node)} does not answer",
                                     sorted(running[node.id]))
        return silent

    def _lost_nodes(self, tasks: dict[int, dict]) -> dict[str, tuple[str, str, list[int]]]:
        """Nodes running ranks that the manager no longer hears from: name -> (state, its
        message, the ranks there). A dead node's tasks stay "running" in the swarm's view, so
        only the node's own state tells the job it has lost them."""
        by_node: dict[str, list[int]] = {}
        for rank, task in tasks.items():
            if task.get("NodeID") and task["Status"]["State"] in ("running", "starting",
                                                                  "preparing", "assigned"):
                by_node.setdefault(task["NodeID"], []).append(rank)
        if not by_node:
            return {}
        with docker_call("lost contact with the swarm while watching its nodes",
                         error=JobFailedError, remedy=DAEMON_REMEDY):
            listed = self.client.api.nodes()
        lost = {}
        for node in listed:
            status = node.get("Status", {})
            if node["ID"] in by_node and status.get("State") not in ("ready", None):
                name = node.get("Description", {}).get("Hostname", node["ID"][:12])
                lost[name] = (status["State"], status.get("Message") or "no heartbeat",
                              sorted(by_node[node["ID"]]))
        return lost

    @staticmethod
    def _reason(task: dict) -> str:
        status = task["Status"]
        code = (status.get("ContainerStatus") or {}).get("ExitCode")
        reason = status.get("Err") or status.get("Message") or status["State"]
        if code in SIGNALS:
            reason += f" (killed by {SIGNALS[code]})"
        return reason

    def _failure(self, plan: SwarmPlan, rank: int, task: dict, resume: str) -> JobFailedError:
        node = self._node_name(task.get("NodeID"))
        reason = self._reason(task)
        report_path = plan.run_dir / rundir.ERRORS / f"rank-{rank}.json"
        log = plan.run_dir / rundir.LOGS / f"rank-{rank}.log"
        if task["Status"]["State"] == "failed" and not report_path.exists():
            time.sleep(1.0)  # the worker may still be writing its report
        if report_path.exists():
            try:
                report = json.loads(report_path.read_text())
                reason = f"{report.get('type')}: {report.get('message')} ({reason})"
            except (OSError, ValueError):
                pass
        return JobFailedError(
            f"rank {rank} on node {node} failed: {reason}\n  task: {task['ID'][:12]} "
            f"({task['Status']['State']}); log: {log}", rank=rank, host=node, remedy=resume)
