"""Local and hosts backends: execute a JobPlan with mpirun (or horovodrun) and watch it.

:class:`LocalBackend` (this machine) and :class:`HostsBackend` (a list of hosts over ssh, MPI's
own launcher) differ only in the plan :func:`~autocnnp.engine.plan.build_plan` makes.

One process group per job: a dead rank makes mpirun end the others, Ctrl-C or ``autocnnp
stop`` ends the whole group, and the first failure is reported with its rank, host and cause
from ``RUN_DIR/errors/rank-K.json`` (written by the worker) or from mpirun's own report when a
rank was killed before it could write one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

from autocnnp.engine import rundir
from autocnnp.engine.plan import JobPlan, build_plan
from autocnnp.engine.rundir import RunState, record_state
from autocnnp.engine.spec import TrainingSpec
from autocnnp.engine.vocabulary import HOROVOD_VERSION
from autocnnp.errors import EnvironmentProblemError, JobFailedError
from autocnnp.run_manage.backend import Backend
from autocnnp.run_manage.machine import detect_machine

_MPI_SIGNAL = re.compile(r"process rank (\d+) with PID (\d+) on node (\S+) exited on signal (\d+) \(([^)]+)\)")
_MPI_EXIT = re.compile(r"Process name: \[\[\d+,\d+\],(\d+)\]\s+Exit code:\s+(\d+)")
_MPI_NOISE = re.compile(r"^(-{20,}|Primary job\s+terminated|mpirun (noticed|detected)|"
                        r"Child job \d+ terminated|with errorcode|  Process name|  Exit code)")


def check_launcher(plan: JobPlan) -> None:
    """Fail early, with the remedy, when the launcher or Horovod is missing."""
    exe = plan.command[0]
    if shutil.which(exe) is None:
        raise EnvironmentProblemError(
            f"{exe} not found on PATH: ranks cannot be started",
            remedy="install Open MPI (apt-get install openmpi-bin libopenmpi-dev) or run "
                   "`bash scripts/setup.sh`, which installs the whole stack")
    import importlib.util
    if importlib.util.find_spec("horovod") is None:
        raise EnvironmentProblemError(
            "Horovod is not installed in this Python environment",
            remedy=f"run `bash scripts/setup.sh` (builds horovod=={HOROVOD_VERSION} with MPI and Gloo)")


def first_failure(run_dir: Path, launcher_output: str) -> JobFailedError:
    """The first failure of a job, from the ranks' error files or mpirun's report."""
    reports = []
    for path in (run_dir / rundir.ERRORS).glob("rank-*.json"):
        try:
            reports.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    resume = f"continue from the last checkpoint with: autocnnp run --resume {run_dir}"
    killed = _MPI_SIGNAL.search(launcher_output)
    if killed and not reports:
        rank, pid, host, signum, name = killed.groups()
        who = f"rank {rank} (pid {pid})" if pid != "0" else f"rank {rank}"  # Open MPI 4 may say PID 0
        return JobFailedError(
            f"{who} on {host} was killed by signal {signum} ({name}); "
            f"the other ranks were stopped", rank=int(rank), host=host, remedy=resume)
    if reports:
        reports.sort(key=lambda r: r.get("time", ""))
        r = reports[0]
        log = run_dir / rundir.LOGS / f"rank-{r.get('rank')}.log"
        failure = JobFailedError(
            f"rank {r.get('rank')} on {r.get('host')} failed: {r.get('type')}: {r.get('message')}"
            f"\n  log: {log}", rank=r.get("rank"), host=r.get("host"),
            remedy=r.get("remedy") or (None if r.get("user_error") else resume))
        if r.get("user_error") and isinstance(r.get("exit_code"), int):
            failure.exit_code = r["exit_code"]  # a data error found by a rank is still a 2
        return failure
    exited = _MPI_EXIT.search(launcher_output)
    if exited:
        return JobFailedError(f"rank {exited.group(1)} exited with code {exited.group(2)} "
                              f"without a report; see {run_dir / rundir.LOGS}",
                              rank=int(exited.group(1)), remedy=resume)
    tail = "\n".join(launcher_output.strip().splitlines()[-15:])
    return JobFailedError(f"the job failed before any rank reported:\n{tail}", remedy=resume)


def launch(plan: JobPlan, run_dir: Path, *, out: TextIO = sys.stdout) -> None:
    """Run ``plan`` to completion, streaming rank 0's progress; raise JobFailedError."""
    check_launcher(plan)
    logs = run_dir / rundir.LOGS
    logs.mkdir(parents=True, exist_ok=True)
    env = os.environ.copy()
    env.update(plan.env_dict())
    started = time.monotonic()
    with open(logs / "launcher.log", "a") as log:
        log.write(f"# {rundir.timestamp()} {' '.join(plan.command)}\n")
        proc = subprocess.Popen(plan.command, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1,
                                start_new_session=True)
        record_state(run_dir, state=RunState.RUNNING, pid=proc.pid, pgid=proc.pid,
                     backend=plan.backend.value, stop_requested=False, failure=None,
                     failed_rank=None, failed_host=None, started=rundir.timestamp(),
                     command=list(plan.command))
        output: list[str] = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                log.flush()
                output.append(line)
                if not _MPI_NOISE.match(line.strip()) and line.strip():
                    out.write(line)
                    out.flush()
            code = proc.wait()
        except BaseException:
            stop_group(proc.pid)
            record_state(run_dir, state=RunState.STOPPED, ended=rundir.timestamp())
            raise
    elapsed = time.monotonic() - started
    if code != 0 and rundir.read_state(run_dir).get("stop_requested"):
        record_state(run_dir, state=RunState.STOPPED, ended=rundir.timestamp(), seconds=round(elapsed, 1), exit_code=code)
        raise JobFailedError("the job was stopped on request (autocnnp stop); finished checkpoints "
                             "are intact", remedy=f"continue with: autocnnp run --resume {run_dir}")
    if code == 0:
        record_state(run_dir, state=RunState.FINISHED, ended=rundir.timestamp(), seconds=round(elapsed, 1), exit_code=0)
        return
    failure = first_failure(run_dir, "".join(output))
    record_state(run_dir, state=RunState.FAILED, ended=rundir.timestamp(), seconds=round(elapsed, 1),
                 exit_code=code, failure=failure.message, failed_rank=failure.rank, failed_host=failure.host)
    raise failure


def stop_group(pgid: int, grace_s: float = 10.0) -> bool:
    """SIGTERM a job's process group, then SIGKILL what is left after ``grace_s``."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalBackend(Backend):
    """N ranks on this machine through mpirun or horovodrun (the default backend)."""

    name = "local"

    def plan(self, spec: TrainingSpec, run_dir: Path, *, resume: bool = False) -> JobPlan:
        return build_plan(spec, run_dir, detect_machine(), resume=resume)

    def announce(self, plan: JobPlan) -> str:
        return f"launching {plan.size} rank(s): {' '.join(plan.command[:4])} ..."

    def check(self, plan: JobPlan, spec: TrainingSpec | None = None) -> JobPlan:
        check_launcher(plan)
        return plan

    def launch(self, spec: TrainingSpec, plan: JobPlan, run_dir: Path, *, resume: bool = False) -> None:
        launch(plan, run_dir, out=self.out)

    def status(self, run_dir: Path, state: dict) -> dict:
        if state.get("state") == RunState.RUNNING and not _alive(state.get("pid")):
            state["state"] = "dead (launcher gone without recording an end)"
        return state

    def stop(self, run_dir: Path, state: dict) -> str:
        if state.get("state") != RunState.RUNNING or not _alive(state.get("pgid")):
            return f"{run_dir.name} is not running (state: {state.get('state')})"
        record_state(run_dir, stop_requested=True)  # the launcher reports "stopped", not "failed"
        stop_group(int(state["pgid"]))
        return f"stopped {run_dir.name}; resume with: autocnnp run --resume {run_dir}"


class HostsBackend(LocalBackend):
    """N ranks on a list of hosts over ssh (``<deployment backend="hosts">``)."""

    name = "hosts"
