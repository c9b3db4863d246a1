"""The swarm backend: run a :class:`~autocnnp.engine.plan_swarm.SwarmPlan` on Docker Swarm.

The only backend that talks to a swarm (through :mod:`autocnnp.run_manage.docker_api`). Its
parts, one concern a module: :mod:`.preflight` (checks before anything is created),
:mod:`.launch` (create, stream logs, watch), :mod:`.cleanup` (remove what a job created),
:mod:`.rendezvous` (the Gloo rendezvous service's program). Here: the plan, and status, logs
and stop for a run directory from any process.

Ranks write the run directory in place (bind mounts on a one-node swarm, the shared volume
otherwise), so it is complete on the launcher when the job ends.
"""

from __future__ import annotations

from pathlib import Path

from autocnnp.engine import rundir
from autocnnp.engine.plan_swarm import JOB_LABEL, NodeInfo, SwarmPlan, build_swarm_plan
from autocnnp.engine.rundir import RunState
from autocnnp.engine.spec import TrainingSpec
from autocnnp.errors import AutocnnpError, EnvironmentProblemError
from autocnnp.run_manage.docker_api import docker_call
from autocnnp.run_manage.swarm.launch import Launch
from autocnnp.run_manage.swarm.preflight import discover_nodes
from autocnnp.run_manage.swarm.session import SWARM_FILE


#: swarm task states in which a rank is (about to be) running
_ACTIVE_TASK_STATES = frozenset({"new", "pending", "assigned", "accepted", "ready", "preparing",
                                 "starting", "running"})


class SwarmBackend(Launch):
    """Plan, check, launch, watch, stop and clean up swarm jobs; see the module docstring."""

    def plan(self, spec: TrainingSpec, run_dir: Path, *, resume: bool = False) -> SwarmPlan:
        """The plan before pre-flight lays it out on the swarm's nodes (:meth:`launch` plans a
        resume again with the ranks' ``--resume``)."""
        return build_swarm_plan(spec, run_dir, job_id=run_dir.name)

    plan_formats = {"stack": "an equivalent Docker stack file (YAML)"}

    def render_plan(self, plan: SwarmPlan, fmt: str) -> str:
        from autocnnp.engine.plan_swarm import to_stack_yaml

        return to_stack_yaml(plan)

    def preview_plan(self, spec: TrainingSpec, run_dir: Path, *, assume_nodes: str | None = None) -> SwarmPlan:
        """Laid out on ``assume_nodes`` (``NxG``), or on this machine's swarm when it has one."""
        if assume_nodes:
            nodes = assumed_nodes(assume_nodes, spec.deployment.node_constraints)
        else:
            nodes = discover_nodes()
        return build_swarm_plan(spec, run_dir, job_id=run_dir.name, nodes=nodes)

    def check(self, plan: SwarmPlan, spec: TrainingSpec | None = None) -> SwarmPlan:
        return self.preflight(plan, spec)[0]

    def _job_id(self, run_dir: Path) -> str:
        record = run_dir / SWARM_FILE
        if not record.exists():
            raise AutocnnpError(f"{run_dir} has no {SWARM_FILE}: it was not launched on a swarm")
        job_id = rundir.read_json(record).get("job_id")
        if not isinstance(job_id, str) or not job_id:
            raise AutocnnpError(f"{record}: has no job_id; the run directory is damaged "
                                f"(repair or delete {SWARM_FILE})")
        return job_id

    def _recorded_plan(self, run_dir: Path) -> dict | None:
        record = run_dir / SWARM_FILE
        if not record.exists():
            return None
        plan = rundir.read_json(record).get("plan")
        if not isinstance(plan, dict):
            raise AutocnnpError(f"{record}: has no plan; the run directory is damaged "
                                f"(repair or delete {SWARM_FILE})")
        return plan

    def status(self, run_dir: Path, state: dict) -> dict:
        """``state`` with the job's swarm side: its services and the state of every rank's task.

        A launcher that died without recording the end leaves ``running`` in ``state.json``:
        while tasks of the job still run, the status says so and names the remedy; when none
        runs, the state is settled from what the ranks recorded
        (:func:`~autocnnp.run_manage.ownership.settle`)."""
        from autocnnp.run_manage import ownership

        swarm = self._swarm_status(run_dir)
        state.update(swarm)
        if state.get("state") != "running" or ownership.launcher_alive(run_dir):
            return state
        tasks = swarm["swarm"].get("tasks", []) if isinstance(swarm.get("swarm"), dict) else []
        if any(t["state"] in _ACTIVE_TASK_STATES for t in tasks):
            state["launcher"] = (f"gone: the job's tasks run on without it; stop them with: "
                                 f"autocnnp stop {run_dir} (then autocnnp run --resume {run_dir})")
            return state
        return {**ownership.settle(run_dir, state), **swarm}

    def _swarm_status(self, run_dir: Path) -> dict:
        job_id = self._job_id(run_dir)
        try:
            client = self.client
        except EnvironmentProblemError as exc:
            return {"swarm": f"docker not reachable: {exc.message}"}
        plan = self._recorded_plan(run_dir) or {}
        slots = {(r["service"], r["slot"]): r["rank"] for r in plan.get("ranks", [])}
        import docker.errors

        try:
            with docker_call(f"cannot list the services of swarm job {job_id}"):
                services = client.services.list(filters={"label": f"{JOB_LABEL}={job_id}"})
        except EnvironmentProblemError as exc:
            return {"swarm": f"docker error: {exc.message}"}
        tasks = []
        for svc in services:
            try:
                with docker_call(f"cannot list the tasks of service {svc.name}"):
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

    def stop(self, run_dir: Path, state: dict) -> str:
        """Remove everything the job created; its launcher, if alive, then reports it stopped.

        A job that had finished (rank 0 recorded its completion) stays ``finished``: only
        what its dead launcher left behind is removed."""
        from autocnnp.run_manage import ownership

        job_id = self._job_id(run_dir)
        # the launcher reads it first
        rundir.update_json(run_dir / SWARM_FILE, stop_requested=rundir.timestamp())
        node_docker = (self._recorded_plan(run_dir) or {}).get("node_docker")
        removed, problems = self._cleanup(job_id, quiet=True, node_docker=node_docker)
        what = ", ".join(removed) if removed else "nothing was left to remove"
        done = ownership.completion(run_dir)
        if done is not None and not ownership.is_live(run_dir):
            ownership.settle(run_dir, rundir.read_state(run_dir))
            if problems:
                raise self._cleanup_error(job_id, problems, run_dir)
            return (f"swarm job {job_id} had finished (rank 0 recorded its completion at "
                    f"{done.get('time')}); removed what its launcher left: {what}")
        rundir.record_state(run_dir, state=RunState.STOPPED, ended=rundir.timestamp())
        if problems:
            raise self._cleanup_error(job_id, problems, run_dir)
        return f"stopped swarm job {job_id} ({what}); resume with: autocnnp run --resume {run_dir}"


def assumed_nodes(text: str, constraints: tuple[str, ...]) -> list[NodeInfo]:
    """``NxG`` -> N hypothetical ready nodes with G GPUs and the labels ``constraints`` need."""
    count, sep, gpus = text.lower().partition("x")
    if not (sep and count.isdigit() and gpus.isdigit() and int(count) > 0):
        raise AutocnnpError(f"--assume-nodes {text!r}: expected NxG, e.g. 3x2 (3 nodes, 2 GPUs each)")
    labels = {}
    for constraint in constraints:
        key, eq, value = constraint.partition("==")
        if eq and key.strip().startswith("node.labels."):
            labels[key.strip().removeprefix("node.labels.")] = value.strip()
    return [NodeInfo(name=f"node{i + 1}", labels=labels, gpus=int(gpus), id=f"node{i + 1}",
                     role="manager" if i == 0 else "worker", is_self=i == 0)
            for i in range(int(count))]
