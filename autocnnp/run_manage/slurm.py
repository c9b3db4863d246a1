"""Slurm backend: submit the planned batch script with ``sbatch`` and follow the job.

What runs is :class:`~autocnnp.engine.plan_slurm.SlurmPlan`'s script, written to
``RUN_DIR/slurm.sbatch``. ``autocnnp run`` checks the cluster first (``sbatch`` on PATH, the
partition exists, enough GPUs per node), submits, then follows the job: it prints the job's
output (rank 0's epoch lines) as Slurm writes it to ``RUN_DIR/logs/slurm-JOBID.out`` and waits
for a final state. Ctrl-C stops following, not the job: a batch job belongs to Slurm, so it
keeps running and ``autocnnp status|logs|stop RUN`` reach it (``stop`` is ``scancel``).

Slurm's job states map onto run states: PENDING, REQUEUED and friends -> ``pending``;
RUNNING, CONFIGURING, COMPLETING -> ``running``; COMPLETED -> ``finished``; CANCELLED ->
``stopped``; everything else (FAILED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, ...) -> ``failed``.
The job's state is read from ``scontrol show job`` while the controller remembers the job,
then from ``sacct`` (clusters with accounting).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from autocnnp.engine import rundir
from autocnnp.engine.plan_slurm import SCRIPT_FILE, SlurmPlan, build_slurm_plan
from autocnnp.engine.spec import MonitoringSpec, TrainingSpec
from autocnnp.errors import AutocnnpError, EnvironmentProblemError, JobFailedError
from autocnnp.run_manage.failures import first_failure
from autocnnp.run_manage.backend import Backend
from autocnnp.run_manage.machine import detect_machine

PENDING = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED",
           "PREEMPTED", "RESIZING", "SIGNALING", "STAGE_OUT", "CONFIGURING")
RUNNING = ("RUNNING", "COMPLETING")
RUN_STATE = {"COMPLETED": "finished", "CANCELLED": "stopped"}
#: seconds between two looks at the job while following it
POLL_S = 1.0


def run_state(slurm_state: str) -> str:
    """The run state (pending, running, finished, stopped, failed) of a Slurm job state."""
    base = slurm_state.split()[0].rstrip("+") if slurm_state else "UNKNOWN"
    if base in PENDING:
        return "pending"
    if base in RUNNING:
        return "running"
    return RUN_STATE.get(base, "failed")


def _run(cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        raise EnvironmentProblemError(
            f"{tool} not found on PATH: the slurm backend needs Slurm's client commands",
            remedy="run autocnnp on a Slurm login node (or load the cluster's slurm module); to "
                   "try the backend on this machine: bash scripts/slurm-local.sh up, then export "
                   "SLURM_CONF=/tmp/autocnnp-slurm/slurm.conf")


def partitions() -> dict[str, dict[str, object]]:
    """The cluster's partitions: name -> {nodes, cpus, gpus per node, default}."""
    _need("sinfo")
    proc = _run(["sinfo", "-h", "-o", "%P|%D|%c|%G"])
    if proc.returncode != 0:
        raise EnvironmentProblemError(f"sinfo failed: {proc.stderr.strip() or proc.stdout.strip()}",
                                      remedy="is slurmctld reachable? check SLURM_CONF and `sinfo`")
    found: dict[str, dict[str, object]] = {}
    for line in proc.stdout.splitlines():
        name, nodes, cpus, gres = (line.split("|") + ["", "", "", ""])[:4]
        default = name.endswith("*")
        gpus = sum(int(m.group(1)) for m in re.finditer(r"gpu(?::[^:,(]+)?:(\d+)", gres))
        found[name.rstrip("*")] = {"nodes": int(nodes or 0), "cpus": cpus, "gpus": gpus,
                                   "default": default}
    return found


def check_cluster(plan: SlurmPlan) -> None:
    """Refuse, before submitting, what the cluster cannot run: no sbatch, an unknown partition,
    more GPUs per node than the partition's nodes have."""
    _need("sbatch")
    known = partitions()
    name = plan.partition or next((n for n, p in known.items() if p["default"]), None)
    if plan.partition and plan.partition not in known:
        raise EnvironmentProblemError(
            f"Slurm has no partition {plan.partition!r} (partitions: {', '.join(known) or 'none'})",
            remedy="set <deployment><property name=\"partition\"> to one of them")
    if plan.gpus_per_task and name in known:
        per_node = plan.gpus_per_task * (plan.tasks_per_node or 1)
        have = int(known[name]["gpus"])
        if per_node > have:
            raise EnvironmentProblemError(
                f"the job asks for {per_node} GPU(s) per node but partition {name!r} offers "
                f"{have}", remedy="lower gpus_per_rank or tasks_per_node, or pick a GPU partition")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def submit(plan: SlurmPlan, run_dir: Path, record_state) -> str:
    """Write the batch script into the run directory and submit it; return the job id."""
    check_cluster(plan)
    (run_dir / rundir.LOGS).mkdir(parents=True, exist_ok=True)
    script = run_dir / SCRIPT_FILE
    script.write_text(plan.script())
    proc = _run(["sbatch", "--parsable", str(script)])
    if proc.returncode != 0:
        raise EnvironmentProblemError(f"sbatch refused the job: {proc.stderr.strip()}",
                                      remedy=f"the script is {script}; `autocnnp plan` shows it")
    job_id = proc.stdout.strip().split(";")[0]
    record_state(run_dir, state="pending", backend="slurm", slurm_job_id=job_id,
                 stop_requested=False, failure=None, failed_rank=None, failed_host=None,
                 started=_now(), command=["sbatch", str(script)])
    return job_id


def job_state(job_id: str) -> str | None:
    """Slurm's state of ``job_id`` (``RUNNING``, ``COMPLETED``, ...) or None if unknown."""
    if shutil.which("scontrol"):
        proc = _run(["scontrol", "show", "job", "-o", job_id])
        match = re.search(r"\bJobState=(\S+)", proc.stdout)
        if proc.returncode == 0 and match:
            return match.group(1)
    if shutil.which("sacct"):
        proc = _run(["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "State"])
        lines = [l for l in proc.stdout.splitlines() if l.strip()]
        if proc.returncode == 0 and lines:
            return lines[-1].strip()
    return None


def output_file(run_dir: Path, job_id: str) -> Path:
    return run_dir / rundir.LOGS / f"slurm-{job_id}.out"


def follow(run_dir: Path, job_id: str, record_state, *, out: TextIO = sys.stdout,
           monitoring: MonitoringSpec | None = None) -> None:
    """Print the job's output as it grows and wait for a final state; record it; raise
    :class:`JobFailedError` when the job did not finish (the hang watch's
    :class:`~autocnnp.run_manage.watchdog.JobHangError` when it cancelled a hung job)."""
    log = output_file(run_dir, job_id)
    offset, last, started = 0, None, time.monotonic()
    monitor = None
    if monitoring is not None:
        from autocnnp.run_manage.launcher_monitor import LauncherMonitor, line_writer

        monitor = LauncherMonitor(run_dir, monitoring, say=line_writer(out),
                                  stop_job=lambda: _run(["scancel", str(job_id)]))
    try:
        while True:
            state = job_state(job_id) or "UNKNOWN"
            if state != last:
                out.write(f"slurm job {job_id}: {state}\n")
                out.flush()
                record_state(run_dir, state=run_state(state), slurm_state=state)
                last = state
            if log.exists():
                with open(log, "r", errors="replace") as handle:
                    handle.seek(offset)
                    chunk = handle.read()
                    offset = handle.tell()
                if chunk:
                    out.write(chunk)
                    out.flush()
            if run_state(state) not in ("pending", "running") and state != "UNKNOWN":
                break
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        out.write(f"\nstopped following; slurm job {job_id} keeps running: autocnnp status "
                  f"{run_dir} | autocnnp stop {run_dir}\n")
        raise
    finally:
        if monitor is not None:
            monitor.stop()
    hang = monitor.hang_error() if monitor is not None else None
    if hang is not None:
        record_state(run_dir, state="failed", ended=_now(),
                     seconds=round(time.monotonic() - started, 1), failure=hang.message,
                     failed_rank=hang.rank, failed_host=hang.host)
        raise hang
    result = run_state(last or "UNKNOWN")
    record_state(run_dir, state=result, ended=_now(), seconds=round(time.monotonic() - started, 1))
    if result == "finished":
        return
    if result == "stopped":
        raise JobFailedError(f"slurm job {job_id} was cancelled; finished checkpoints are intact",
                             remedy=f"continue with: autocnnp run --resume {run_dir}")
    failure = first_failure(run_dir, log.read_text(errors="replace") if log.exists() else "")
    record_state(run_dir, failure=f"slurm job {job_id} ended {last}: {failure.message}",
                 failed_rank=failure.rank, failed_host=failure.host)
    raise failure


def status(run_dir: Path, state: dict) -> dict:
    """The live Slurm state of a run's job, merged into its recorded state."""
    job_id = state.get("slurm_job_id")
    if not job_id:
        return {}
    live = job_state(str(job_id))
    if live is None:
        return {"slurm": f"job {job_id} unknown to Slurm (finished long ago?)"}
    return {"state": run_state(live), "slurm": f"job {job_id} {live}"}


def stop(run_dir: Path, state: dict) -> str:
    """Cancel the run's Slurm job (``scancel``)."""
    _need("scancel")
    job_id = state.get("slurm_job_id")
    if not job_id:
        raise AutocnnpError(f"{run_dir} records no Slurm job id: nothing to cancel")
    proc = _run(["scancel", str(job_id)])
    if proc.returncode != 0:
        raise AutocnnpError(f"scancel {job_id} failed: {proc.stderr.strip()}")
    return f"cancelled slurm job {job_id}"


class SlurmBackend(Backend):
    """Submit the planned batch script with sbatch and follow the job (see the module doc)."""

    name = "slurm"

    def plan(self, spec: TrainingSpec, run_dir: Path, *, resume: bool = False) -> SlurmPlan:
        return build_slurm_plan(spec, run_dir, detect_machine(), resume=resume)

    def check(self, plan: SlurmPlan, spec: TrainingSpec | None = None) -> SlurmPlan:
        check_cluster(plan)
        return plan

    def launch(self, spec: TrainingSpec, plan: SlurmPlan, run_dir: Path, *, resume: bool = False) -> None:
        job_id = submit(plan, run_dir, rundir.record_state)
        follow(run_dir, job_id, rundir.record_state, out=self.out, monitoring=spec.monitoring)

    def status(self, run_dir: Path, state: dict) -> dict:
        state.update(status(run_dir, state))
        return state

    def stop(self, run_dir: Path, state: dict) -> str:
        return stop(run_dir, state)
