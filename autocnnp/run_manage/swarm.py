"""The swarm backend: run a :class:`~autocnnp.engine.plan_swarm.SwarmPlan` on Docker Swarm.

This is the only module that talks to a swarm (through the docker SDK, imported lazily so the
rank images need not carry it). ``SwarmBackend.launch``

1. pre-flight, before anything is created: the swarm is active here (``init=True`` makes a
   one-node one), the nodes have the ranks' GPUs (the plan is laid out on them and refused
   with what is missing otherwise), the image is on the nodes, the run directory and data
   exist;
2. creates, all labelled ``autocnnp.job=<job>`` and recorded in ``RUN_DIR/swarm.json``: the
   overlay network, the per-job secret, the rendezvous service, the rank services;
3. streams the tasks' output to ``RUN_DIR/logs/container-rank-K.log`` (rank 0's to the
   terminal too) and watches the tasks: the first task that fails, is rejected or cannot be
   scheduled fails the job within seconds, naming the rank, the node and the reason;
4. always removes every service, network, secret and config it created: on success, on
   failure, on Ctrl-C and when ``autocnnp stop`` removed them from another process.

Ranks write the run directory in place (bind mounts on a one-node swarm, the shared volume
otherwise), so it is complete on the launcher when the job ends.

``python -m autocnnp.run_manage.swarm rendezvous --port P`` is the rendezvous service's
program: Horovod's Gloo HTTP rendezvous server, initialised with the plan's host layout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets as _secrets
import sys
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from autocnnp.engine import rundir
from autocnnp.engine.plan_swarm import (GPU_RESOURCE_KIND, JOB_LABEL, NodeInfo, SwarmPlan,
                                        build_swarm_plan, check_placement)
from autocnnp.engine.spec import TrainingSpec
from autocnnp.errors import AutocnnpError, EnvironmentProblemError, JobFailedError

SWARM_FILE = "swarm.json"
TOKEN_HASH_FILE = "swarm-token.sha256"
POLL_S = 1.0
_FAILED = {"failed", "rejected", "orphaned", "remove"}
_ENDED_BY_SWARM = {"shutdown"}
_SIGNALS = {137: "SIGKILL", 143: "SIGTERM", 139: "SIGSEGV", 134: "SIGABRT"}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, data: Any) -> None:
    from autocnnp.atomic import atomic_write_json

    atomic_write_json(path, data)


def _read_json(path: Path) -> dict:
    """A run file (swarm.json, state.json) as a dict; a damaged one is an AutocnnpError
    naming the file, not a JSONDecodeError traceback."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise AutocnnpError(f"{path}: no such file; is {path.parent} a run directory?") from None
    except OSError as exc:
        raise AutocnnpError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        where = (f" at line {exc.lineno} column {exc.colno}"
                 if isinstance(exc, json.JSONDecodeError) else "")
        raise AutocnnpError(f"{path}: not valid JSON{where}; the run directory is damaged "
                            f"(repair or delete {path.name})") from None
    if not isinstance(data, dict):
        raise AutocnnpError(f"{path}: not a JSON object; the run directory is damaged "
                            f"(repair or delete {path.name})")
    return data


def _update_json(path: Path, **fields: Any) -> None:
    current = _read_json(path) if path.exists() else {}
    current.update(fields)
    _write_json(path, current)


def _docker_exceptions() -> tuple[type[BaseException], ...]:
    """What the docker SDK raises when the daemon refuses or cannot be reached."""
    import docker.errors

    kinds: list[type[BaseException]] = [docker.errors.DockerException]
    try:
        import requests.exceptions

        kinds.append(requests.exceptions.RequestException)
    except ImportError:  # pragma: no cover - the docker SDK depends on requests
        pass
    return tuple(kinds)


def _explain(exc: BaseException) -> str:
    """The daemon's own words for a docker SDK error, on one line."""
    text = getattr(exc, "explanation", None) or str(exc) or exc.__class__.__name__
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(str(text).split())


def _status_code(exc: BaseException) -> int | None:
    try:
        return exc.status_code  # type: ignore[attr-defined]
    except Exception:
        return None


DAEMON_REMEDY = ("check that dockerd is running and this node is a swarm manager "
                 "(docker info; docker node ls), then retry")


@contextmanager
def _docker(what: str, *, remedy: str | None = None, error: type[AutocnnpError] = EnvironmentProblemError,
            conflict: str | None = None, **kwargs: Any):
    """Turn a docker SDK error raised in the block into ``error`` ("WHAT: the daemon's reason"),
    with ``remedy`` (``conflict`` instead when the daemon answered 409 Conflict)."""
    try:
        yield
    except AutocnnpError:
        raise
    except _docker_exceptions() as exc:
        fix = conflict if conflict and _status_code(exc) == 409 else remedy
        raise error(f"{what}: {_explain(exc)}", remedy=fix or DAEMON_REMEDY, **kwargs) from exc


class SwarmBackend:
    """Launch, watch, stop and clean up swarm jobs; see the module docstring."""

    def __init__(self, client: Any = None, *, init: bool | None = None,
                 out: TextIO | None = None) -> None:
        self._client = client
        self.init = (os.environ.get("AUTOCNNP_SWARM_INIT") == "1") if init is None else init
        self.out = out or sys.stdout

    # ------------------------------------------------------------------ docker access
    @property
    def client(self):
        if self._client is None:
            from autocnnp.run_manage.image_build import docker_client

            self._client = docker_client()
        return self._client

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def swarm_state(self) -> dict:
        with _docker("cannot ask the Docker daemon for its swarm state (docker info)"):
            return self.client.info().get("Swarm") or {}

    def ensure_swarm(self) -> dict:
        """The swarm this daemon manages; with ``init``, a one-node swarm is made when absent."""
        state = self.swarm_state()
        if state.get("LocalNodeState") != "active":
            if not self.init:
                raise EnvironmentProblemError(
                    "this Docker daemon is not part of a swarm",
                    remedy="run on a swarm manager, or make a one-node swarm here with "
                           "`docker swarm init --advertise-addr 127.0.0.1` (autocnnp run --init)")
            self.say("making a one-node swarm: docker swarm init --advertise-addr 127.0.0.1")
            with _docker("cannot make a one-node swarm (docker swarm init)",
                         remedy="run `docker swarm init --advertise-addr 127.0.0.1` yourself and "
                                "read its error, or join this node to a swarm"):
                self.client.swarm.init(advertise_addr="127.0.0.1")
            state = self.swarm_state()
        if not state.get("ControlAvailable"):
            raise EnvironmentProblemError(
                "this node is a swarm worker; services can only be created on a manager",
                remedy="run autocnnp on a manager node (docker node ls shows them)")
        return state

    def nodes(self, kind: str = GPU_RESOURCE_KIND) -> list[NodeInfo]:
        self_id = self.swarm_state().get("NodeID", "")
        found = []
        with _docker("cannot list the swarm nodes (docker node ls)"):
            listed = self.client.api.nodes()
        for node in listed:
            spec, desc = node.get("Spec", {}), node.get("Description", {})
            gpus = 0
            for res in (desc.get("Resources", {}).get("GenericResources") or []):
                discrete, named = res.get("DiscreteResourceSpec"), res.get("NamedResourceSpec")
                if discrete and discrete.get("Kind") == kind:
                    gpus += int(discrete.get("Value", 0))
                elif named and named.get("Kind") == kind:
                    gpus += 1
            found.append(NodeInfo(
                name=desc.get("Hostname", node["ID"][:12]),
                labels=dict(spec.get("Labels") or {}),
                gpus=gpus,
                ready=node.get("Status", {}).get("State") == "ready"
                and spec.get("Availability") == "active",
                role=spec.get("Role", "worker"), id=node["ID"], is_self=node["ID"] == self_id))
        return found

    # ------------------------------------------------------------------ pre-flight
    def preflight(self, plan: SwarmPlan, spec: TrainingSpec | None = None) -> tuple[SwarmPlan, list[NodeInfo]]:
        """Check everything before anything is created; returns the plan laid out on the nodes."""
        self.ensure_swarm()
        nodes = self.nodes(plan.gpu_resource_kind)
        if spec is not None and plan.placement != "nodes":
            plan = build_swarm_plan(spec, plan.run_dir, plan.job_id, nodes, resume=plan.resume,
                                    gpu_resource_kind=plan.gpu_resource_kind)
        check_placement(plan, nodes)
        run_dir = plan.run_dir
        if not (run_dir / rundir.SPEC_FILE).exists():
            raise EnvironmentProblemError(f"{run_dir} has no {rundir.SPEC_FILE}: not a prepared run "
                                          f"directory")
        for svc in plan.rank_services:
            for mount in svc.mounts:
                if mount.type == "bind" and not Path(mount.source).exists():
                    raise EnvironmentProblemError(
                        f"{mount.source} (mounted into the ranks) does not exist on this node",
                        remedy="fix the data paths of the config, or mount the shared volume here")
        self._check_network(plan)
        self._check_image(plan, nodes)
        return plan, nodes

    def _check_network(self, plan: SwarmPlan) -> None:
        """A network the config names must exist and be usable by services."""
        import docker.errors

        net = plan.network
        if not net.external:
            return
        drop = "or remove the network property of <deployment> so autocnnp makes one per job"
        create = f"create it: docker network create --driver overlay --attachable {net.name}; {drop}"
        try:
            with _docker(f"cannot look up network {net.name} (the network property of "
                         f"<deployment>)"):
                found = self.client.networks.get(net.name)
        except EnvironmentProblemError as exc:
            if isinstance(exc.__cause__, docker.errors.NotFound):
                raise EnvironmentProblemError(
                    f"network {net.name} (the network property of <deployment>) does not exist "
                    f"on this swarm", remedy=create) from None
            raise
        scope = (found.attrs or {}).get("Scope")
        if scope and scope != "swarm":
            raise EnvironmentProblemError(
                f"network {net.name} (the network property of <deployment>) is a {scope} "
                f"network ({(found.attrs or {}).get('Driver', '?')} driver); swarm services "
                f"can only join swarm-scoped networks",
                remedy=f"name an overlay network (docker network ls --filter scope=swarm); {drop}")

    def _check_image(self, plan: SwarmPlan, nodes: list[NodeInfo]) -> None:
        import docker.errors

        by_name = {n.name: n for n in nodes}
        here = next((n for n in nodes if n.is_self), None)
        targets = set(plan.nodes) or ({here.name} if here else set())
        remote = sorted(t for t in targets if not (here and t == here.name))
        if here is not None and (here.name in targets or plan.rendezvous.constraints):
            try:
                with _docker(f"cannot look up image {plan.image} on this node ({here.name})"):
                    self.client.images.get(plan.image)
            except EnvironmentProblemError as exc:
                if isinstance(exc.__cause__, docker.errors.ImageNotFound):
                    raise EnvironmentProblemError(
                        f"image {plan.image} is not on this node ({here.name})",
                        remedy="build it: autocnnp image build" +
                               (" --gpu" if plan.gpus_per_rank else "")) from None
                raise
        if remote:
            missing = self.probe_image(plan, [by_name[name] for name in remote if name in by_name])
            if missing:
                raise EnvironmentProblemError(
                    f"image {plan.image} cannot start on node(s): " + "; ".join(missing),
                    remedy="push it to a registry the nodes can pull from, or copy it: "
                           f"docker save {plan.image} | ssh NODE docker load")

    def probe_image(self, plan: SwarmPlan, nodes: list[NodeInfo], timeout_s: float = 120) -> list[str]:
        """Run ``true`` from the image on each remote node (a one-task job per node)."""
        import docker.types

        probes = []
        labels = {JOB_LABEL: plan.job_id, "autocnnp.role": "probe"}
        try:
            for i, node in enumerate(nodes):
                name = f"{plan.rendezvous.name[:-4]}-probe{i}"
                with _docker(f"cannot create the image probe service {name} (node {node.name})",
                             conflict=f"a service named {name} exists: remove it with "
                                      f"`docker service rm {name}` and retry"):
                    probes.append((node, self.client.services.create(
                        plan.image, args=["true"], name=name,
                        constraints=[f"node.id=={node.id}"], labels=labels,
                        container_labels=labels,
                        mode=docker.types.ServiceMode("replicated-job", replicas=1),
                        restart_policy=docker.types.RestartPolicy(condition="none"))))
            missing: dict[str, str] = {}
            deadline = time.monotonic() + timeout_s
            pending = {node.name for node, _ in probes}
            while pending and time.monotonic() < deadline:
                for node, svc in probes:
                    with _docker(f"cannot read the tasks of the image probe on {node.name}"):
                        tasks = svc.tasks()
                    for task in tasks:
                        state = task["Status"]["State"]
                        if state == "complete":
                            pending.discard(node.name)
                        elif state in _FAILED:
                            missing[node.name] = task["Status"].get("Err") or state
                            pending.discard(node.name)
                time.sleep(POLL_S)
            for name in pending:
                missing[name] = f"did not start within {timeout_s:.0f} s"
            return [f"{name}: {why}" for name, why in sorted(missing.items())]
        finally:
            for _, svc in probes:
                try:
                    svc.remove()
                except Exception:
                    pass
            try:
                left = self.client.containers.list(all=True, filters={"label": [
                    f"{JOB_LABEL}={plan.job_id}", "autocnnp.role=probe"]})
            except Exception:
                left = []
            for container in left:
                try:
                    container.remove(force=True)
                except Exception:
                    pass

    # ------------------------------------------------------------------ launch
    def launch(self, spec: TrainingSpec, plan: SwarmPlan, run_dir: Path, resume: bool = False) -> int:
        """Run the job to its end; returns 0, raises JobFailedError (rank, node, reason)."""
        if resume and not plan.resume:
            plan = build_swarm_plan(spec, run_dir, plan.job_id, resume=True,
                                    gpu_resource_kind=plan.gpu_resource_kind)
        self.ensure_swarm()
        self.cleanup(plan.job_id, quiet=True)          # leftovers of a launcher that crashed
        plan, _ = self.preflight(plan, spec)
        record = run_dir / SWARM_FILE
        _write_json(record, {"job_id": plan.job_id, "launcher_pid": os.getpid(),
                             "started": _now(), "plan": plan.to_dict(),
                             "created": {"networks": [], "secrets": [], "services": []}})
        _update_json(run_dir / rundir.STATE_FILE, state="running", backend="swarm",
                     job_id=plan.job_id, pid=os.getpid(), started=_now())
        self.say(f"swarm job {plan.job_id}: {plan.world_size} rank(s) on "
                 f"{', '.join(plan.nodes) or 'the swarm'}; image {plan.image}")
        for slot in plan.ranks:
            self.say(f"  rank {slot.rank} -> node {slot.node or '(scheduler)'}, task "
                     f"{slot.service}.{slot.slot}" + (f", {slot.gpus} GPU" if slot.gpus else ""))
        started = time.monotonic()
        state = "failed"
        streams: list[threading.Thread] = []
        try:
            self._create(plan, record)
            streams = self._stream_logs(plan)
            self._watch(plan)
            state = "finished"
            self.say(f"swarm job {plan.job_id} finished in {time.monotonic() - started:.0f} s; "
                     f"run directory: {run_dir}")
            return 0
        except JobFailedError as failure:
            # say it now: removing the services takes a few seconds more
            try:
                stopped = _read_json(record).get("stop_requested") is not None
            except AutocnnpError:
                stopped = False
            state = "stopped" if stopped else "failed"
            if stopped:
                self.say(f"swarm job {plan.job_id} stopped after {time.monotonic() - started:.0f} s")
            else:
                # say it now: removing the services takes a moment more
                self.say(f"swarm job {plan.job_id} failed after {time.monotonic() - started:.0f} s: "
                         f"{failure.message.splitlines()[0]}; removing its services")
                _update_json(run_dir / rundir.STATE_FILE, failure=failure.message,
                             failed_rank=failure.rank, failed_host=failure.host)
            raise
        except AutocnnpError as failure:   # docker refused to create something, a damaged file
            state = "failed"
            self.say(f"swarm job {plan.job_id} failed: {failure.message.splitlines()[0]}; "
                     f"removing what it created")
            try:
                _update_json(run_dir / rundir.STATE_FILE, failure=failure.message)
            except AutocnnpError:
                pass
            raise
        except BaseException:
            state = "stopped"
            raise
        finally:
            removed, problems = self._cleanup(plan.job_id)
            flushed = time.monotonic() + 2.0  # log streams end with their services
            for thread in streams:
                thread.join(timeout=max(0.0, flushed - time.monotonic()))
            for path, fields in ((record, dict(ended=_now(), state=state, removed=removed,
                                               cleanup_problems=problems)),
                                 (run_dir / rundir.STATE_FILE,
                                  dict(state=state, ended=_now(),
                                       seconds=round(time.monotonic() - started, 1)))):
                try:
                    _update_json(path, **fields)
                except (AutocnnpError, OSError) as exc:
                    problems.append(f"cannot record the end of the job in {path.name}: {exc}")
            if problems:
                cleanup_error = self._cleanup_error(plan.job_id, problems, run_dir)
                if state != "finished":   # the job's own failure is the error; say this one
                    self.say(f"autocnnp: warning: {cleanup_error}")
                else:
                    raise cleanup_error

    def _create(self, plan: SwarmPlan, record: Path) -> None:
        import docker.types

        def remember(kind: str, name: str) -> None:
            data = _read_json(record)
            data.setdefault("created", {}).setdefault(kind, []).append(name)
            _write_json(record, data)

        def conflict(kind: str, name: str) -> str:
            return (f"a {kind} named {name} exists without this job's label: remove it "
                    f"(docker {kind} rm {name}) or launch under another run name")

        net = plan.network
        if not net.external:   # a network the config names was checked in pre-flight
            with _docker(f"cannot create network {net.name} (overlay, for job {plan.job_id})",
                         conflict=conflict("network", net.name)):
                self.client.networks.create(net.name, driver=net.driver,
                                            attachable=net.attachable,
                                            labels=dict(net.labels), scope="swarm")
            remember("networks", net.name)
        secret_refs = {}
        for secret in plan.secrets:
            token = _secrets.token_hex(32)
            with _docker(f"cannot create secret {secret.name} (for job {plan.job_id})",
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
            with _docker(f"cannot create service {svc.name} ({svc.role} of job {plan.job_id}, "
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

    # ------------------------------------------------------------------ logs
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

    # ------------------------------------------------------------------ watch
    def _tasks(self, plan: SwarmPlan) -> dict[int, dict] | None:
        """Latest task of every rank, by rank; None when the rank services are gone."""
        import docker.errors

        by_rank: dict[int, dict] = {}
        slots = {(s.service, s.slot): s.rank for s in plan.ranks}
        for svc in plan.rank_services:
            try:
                with _docker(f"lost contact with the swarm while watching service {svc.name} "
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

    def _node_name(self, node_id: str | None) -> str:
        if not node_id:
            return "(not scheduled)"
        try:
            return self.client.api.inspect_node(node_id)["Description"]["Hostname"]
        except Exception:
            return node_id[:12]

    def _watch(self, plan: SwarmPlan) -> None:
        deadline_start = time.monotonic() + plan.rendezvous_timeout_s
        resume = f"continue from the last checkpoint with: autocnnp run --resume {plan.run_dir}"
        record = plan.run_dir / SWARM_FILE

        def check_stopped() -> None:
            if _read_json(record).get("stop_requested"):
                raise JobFailedError(f"swarm job {plan.job_id} was stopped (autocnnp stop)",
                                     remedy=resume)

        while True:
            check_stopped()
            tasks = self._tasks(plan)
            if tasks is None or any(t["Status"]["State"] in _FAILED | _ENDED_BY_SWARM
                                    for t in (tasks or {}).values()):
                time.sleep(0.2)   # `autocnnp stop` removes what it kills; let its flag be seen
                check_stopped()
            if tasks is None:
                raise JobFailedError(f"swarm job {plan.job_id} was stopped (its services were "
                                     f"removed)", remedy=resume)
            with _docker(f"lost contact with the swarm while watching service "
                         f"{plan.rendezvous.name} of job {plan.job_id}", error=JobFailedError,
                         remedy=f"{DAEMON_REMEDY}; continue with: autocnnp run --resume "
                                f"{plan.run_dir}"):
                rdv = self.client.api.tasks(filters={"service": plan.rendezvous.name})
            for task in rdv:
                if task["Status"]["State"] in _FAILED:
                    raise JobFailedError(
                        f"the rendezvous service failed on {self._node_name(task.get('NodeID'))}: "
                        f"{self._reason(task)}", host=self._node_name(task.get("NodeID")),
                        remedy=resume)
            failed = [(rank, t) for rank, t in tasks.items()
                      if t["Status"]["State"] in _FAILED | _ENDED_BY_SWARM
                      and t.get("DesiredState") != "remove"]
            if failed:
                rank, task = min(failed, key=lambda rt: rt[1]["Status"].get("Timestamp", ""))
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

    @staticmethod
    def _reason(task: dict) -> str:
        status = task["Status"]
        code = (status.get("ContainerStatus") or {}).get("ExitCode")
        reason = status.get("Err") or status.get("Message") or status["State"]
        if code in _SIGNALS:
            reason += f" (killed by {_SIGNALS[code]})"
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

    # ------------------------------------------------------------------ cleanup
    def cleanup(self, job_id: str, *, quiet: bool = False, timeout_s: float = 60) -> list[str]:
        """Remove every service, network, secret and config labelled with ``job_id``; returns
        what was removed. What could not be removed is tried to the end and then reported in
        one EnvironmentProblemError."""
        removed, problems = self._cleanup(job_id, quiet=quiet, timeout_s=timeout_s)
        if problems:
            raise self._cleanup_error(job_id, problems)
        return removed

    @staticmethod
    def _cleanup_error(job_id: str, problems: list[str], run_dir: Path | None = None
                       ) -> EnvironmentProblemError:
        again = f"autocnnp stop {run_dir}" if run_dir else "autocnnp stop RUN_DIR"
        return EnvironmentProblemError(
            f"could not remove everything swarm job {job_id} created: " + "; ".join(problems),
            remedy=f"run `{again}` again, or remove them by hand: docker service ls / "
                   f"docker network ls / docker secret ls --filter label={JOB_LABEL}={job_id}")

    def _cleanup(self, job_id: str, *, quiet: bool = False, timeout_s: float = 60
                 ) -> tuple[list[str], list[str]]:
        """(removed, problems): removes all it can, never raises for a docker error."""
        began = time.monotonic()
        label = {"label": f"{JOB_LABEL}={job_id}"}
        removed: list[str] = []
        problems: list[str] = []
        try:
            client = self.client
            import docker.errors
            docker_errors = _docker_exceptions()
        except AutocnnpError as exc:       # no daemon, no SDK: nothing can be removed
            return removed, [exc.message]

        def listed(kind: str, collection: Any, **kw: Any) -> list:
            try:
                return collection.list(filters=label, **kw)
            except docker_errors as exc:
                problems.append(f"cannot list the job's {kind}s ({_explain(exc)})")
                return []

        def remove(kind: str, item: Any) -> None:
            try:
                item.remove()
                removed.append(f"{kind} {item.name}")
            except docker.errors.NotFound:
                pass
            except docker_errors as exc:
                problems.append(f"{kind} {item.name} ({_explain(exc)})")

        services = listed("service", client.services)
        for container in listed("container", client.containers):
            try:  # this node's tasks: no stop grace period, the job is over
                container.kill()
            except docker_errors:
                pass
        for svc in services:
            remove("service", svc)
        # The swarm agent removes the containers of removed services asynchronously, and on
        # Docker 20.10 sometimes not at all (exited and never-started task containers stay);
        # the network is in use until they are gone, so remove this node's ones ourselves.
        deadline = time.monotonic() + timeout_s
        left: list = []
        while time.monotonic() < deadline:
            try:
                left = client.containers.list(all=True, filters=label)
            except docker_errors as exc:
                problems.append(f"cannot list the job's containers ({_explain(exc)})")
                left = []
                break
            if not left:
                break
            for container in left:
                try:
                    container.remove(force=True)
                except docker_errors:
                    pass  # gone already, or "removal already in progress"
            time.sleep(0.5)
        for container in left:
            problems.append(f"container {container.name} (still there after {timeout_s:.0f} s)")
        for kind, collection in (("secret", client.secrets), ("config", client.configs)):
            for item in listed(kind, collection):
                remove(kind, item)
        for net in listed("network", client.networks):
            while True:
                try:
                    net.remove()
                    removed.append(f"network {net.name}")
                    break
                except docker.errors.NotFound:
                    break
                except docker_errors as exc:   # in use until the containers are gone
                    if time.monotonic() > deadline:
                        problems.append(f"network {net.name} ({_explain(exc)})")
                        break
                    time.sleep(0.5)
        if removed and not quiet:
            self.say(f"removed {', '.join(removed)} ({time.monotonic() - began:.1f} s)")
        return removed, problems

    # ------------------------------------------------------------------ status / logs / stop
    def _job_id(self, run_dir: Path) -> str:
        record = run_dir / SWARM_FILE
        if not record.exists():
            raise AutocnnpError(f"{run_dir} has no {SWARM_FILE}: it was not launched on a swarm")
        job_id = _read_json(record).get("job_id")
        if not isinstance(job_id, str) or not job_id:
            raise AutocnnpError(f"{record}: has no job_id; the run directory is damaged "
                                f"(repair or delete {SWARM_FILE})")
        return job_id

    def _recorded_plan(self, run_dir: Path) -> dict | None:
        record = run_dir / SWARM_FILE
        if not record.exists():
            return None
        plan = _read_json(record).get("plan")
        if not isinstance(plan, dict):
            raise AutocnnpError(f"{record}: has no plan; the run directory is damaged "
                                f"(repair or delete {SWARM_FILE})")
        return plan

    def status(self, run_dir: Path) -> dict:
        """The job's swarm side: its services and the state of every rank's task."""
        job_id = self._job_id(run_dir)
        try:
            client = self.client
        except EnvironmentProblemError as exc:
            return {"swarm": f"docker not reachable: {exc.message}"}
        plan = self._recorded_plan(run_dir) or {}
        slots = {(r["service"], r["slot"]): r["rank"] for r in plan.get("ranks", [])}
        import docker.errors

        try:
            with _docker(f"cannot list the services of swarm job {job_id}"):
                services = client.services.list(filters={"label": f"{JOB_LABEL}={job_id}"})
        except EnvironmentProblemError as exc:
            return {"swarm": f"docker error: {exc.message}"}
        tasks = []
        for svc in services:
            try:
                with _docker(f"cannot list the tasks of service {svc.name}"):
                    svc_tasks = svc.tasks()
            except EnvironmentProblemError as exc:
                if isinstance(exc.__cause__, docker.errors.NotFound):
                    continue   # removed since it was listed
                return {"swarm": f"docker error: {exc.message}"}
            for task in svc_tasks:
                tasks.append({"rank": slots.get((svc.name, task.get("Slot"))),
                              "service": svc.name, "node": self._node_name(task.get("NodeID")),
                              "state": task["Status"]["State"],
                              "error": task["Status"].get("Err")})
        return {"swarm": {"job_id": job_id, "services": [s.name for s in services],
                          "tasks": sorted(tasks, key=lambda t: (t["rank"] is None, t["rank"] or 0))}}

    def logs(self, run_dir: Path, rank: int | None = None) -> str:
        """Each rank's worker log followed by its container output (entrypoint, stderr)."""
        log_dir = run_dir / rundir.LOGS
        plan = self._recorded_plan(run_dir)
        ranks = [rank] if rank is not None else list(range(plan["world_size"] if plan else 0))
        parts = []
        for r in ranks:
            for name in (f"rank-{r}.log", f"container-rank-{r}.log"):
                path = log_dir / name
                if path.exists():
                    parts.append(f"==> {name} <==\n{path.read_text()}")
        return "\n".join(parts)

    def stop(self, run_dir: Path) -> str:
        """Remove everything the job created; its launcher then reports it stopped."""
        job_id = self._job_id(run_dir)
        _update_json(run_dir / SWARM_FILE, stop_requested=_now())  # the launcher reads it first
        removed, problems = self._cleanup(job_id, quiet=True)
        _update_json(run_dir / rundir.STATE_FILE, state="stopped", ended=_now())
        if problems:
            raise self._cleanup_error(job_id, problems, run_dir)
        what = ", ".join(removed) if removed else "nothing was left to remove"
        return f"stopped swarm job {job_id} ({what}); resume with: autocnnp run --resume {run_dir}"


def discover_nodes(kind: str = GPU_RESOURCE_KIND) -> list[NodeInfo] | None:
    """The nodes of the swarm this machine manages, or None when there is none to ask
    (no docker SDK, no daemon, not a swarm manager). For ``autocnnp plan``: with nodes the
    plan shows which rank goes to which node and GPU."""
    try:
        backend = SwarmBackend()
        state = backend.swarm_state()
        if state.get("LocalNodeState") != "active" or not state.get("ControlAvailable"):
            return None
        return backend.nodes(kind)
    except Exception:
        return None


# ---------------------------------------------------------------------- rendezvous service
def serve_rendezvous(port: int, host_plan: list[list]) -> None:
    """Horovod's Gloo HTTP rendezvous on ``port`` for the given host layout (runs forever)."""
    from horovod.runner.common.util.hosts import SlotInfo
    from horovod.runner.http.http_server import RendezvousHandler, RendezvousHTTPServer

    slots = [SlotInfo(hostname=h, rank=r, local_rank=lr, cross_rank=cr, size=s, local_size=ls,
                      cross_size=cs) for h, r, lr, cr, s, ls, cs in host_plan]
    server = RendezvousHTTPServer(("0.0.0.0", port), RendezvousHandler, 0)
    server.init(slots)
    print(f"autocnnp rendezvous: listening on :{port} for {len(slots)} rank(s)", flush=True)
    server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autocnnp.run_manage.swarm")
    sub = parser.add_subparsers(dest="command", required=True)
    rdv = sub.add_parser("rendezvous", help="run the Gloo rendezvous server of a swarm job")
    rdv.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "rendezvous":
        serve_rendezvous(args.port, json.loads(os.environ["AUTOCNNP_HOST_PLAN"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
