"""Local and hosts backends: execute a JobPlan with mpirun (or horovodrun) and watch it.

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
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, TextIO

from autocnnp.engine import rundir
from autocnnp.engine.plan import JobPlan
from autocnnp.errors import EnvironmentProblemError, JobFailedError
from autocnnp.atomic import atomic_write_json
from autocnnp.run_manage.ownership import held_fds

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
            remedy="run `bash scripts/setup.sh` (builds horovod==0.28.1 with MPI and Gloo)")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


#: space the launcher sets aside so that it can record the job's end on a full disk
STATE_RESERVE = ".state.reserve"


def record_state(run_dir: Path, **fields) -> dict:
    """Merge ``fields`` into RUN_DIR/state.json; return the new state. On a full disk the
    launcher's reserve (see :func:`launch`) is given up to make room for it."""
    from autocnnp.diskspace import write_with_reserve

    path = run_dir / rundir.STATE_FILE
    current = rundir.read_run_json(path) if path.exists() else {}
    current.update(fields)
    write_with_reserve(lambda: atomic_write_json(path, current), run_dir / STATE_RESERVE)
    if "ended" in fields:  # the launcher's last word: the reserve is not needed any more
        (run_dir / STATE_RESERVE).unlink(missing_ok=True)
    return current


def _log_line(log: BinaryIO, line: str, failed: list[bool]) -> None:
    """Append to launcher.log (unbuffered: nothing is left to flush at close); a full disk
    stops the log, not the job (said once)."""
    if failed:
        return
    try:
        log.write(line.encode())
    except OSError as exc:
        failed.append(True)
        sys.stderr.write(f"autocnnp: launcher.log not written further: {exc}\n")


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
        return JobFailedError(
            f"rank {r.get('rank')} on {r.get('host')} failed: {r.get('type')}: {r.get('message')}"
            f"\n  log: {log}", rank=r.get("rank"), host=r.get("host"),
            remedy=r.get("remedy") or (None if r.get("user_error") else resume),
            exit_code=r.get("exit_code") if r.get("user_error") else None)
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
    from autocnnp.diskspace import reserve
    reserve(run_dir / STATE_RESERVE)
    log_failed: list[bool] = []
    with open(logs / "launcher.log", "ab", buffering=0) as log:
        _log_line(log, f"# {_now()} {' '.join(plan.command)}\n", log_failed)
        # mpirun keeps the run's owner lock: the run stays owned if this process is killed
        proc = subprocess.Popen(plan.command, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1,
                                start_new_session=True, pass_fds=held_fds())
        record_state(run_dir, state="running", pid=proc.pid, pgid=proc.pid,
                     launcher_pid=os.getpid(), backend=plan.backend.value,
                     stop_requested=False, failure=None, failed_rank=None, failed_host=None,
               started=_now(), command=list(plan.command))
        output: list[str] = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                _log_line(log, line, log_failed)
                output.append(line)
                if not _MPI_NOISE.match(line.strip()) and line.strip():
                    out.write(line)
                    out.flush()
            code = proc.wait()
        except BaseException:
            stop_group(proc.pid)
            record_state(run_dir, state="stopped", ended=_now())
            raise
    elapsed = time.monotonic() - started
    if code != 0 and rundir.read_run_json(run_dir / rundir.STATE_FILE).get("stop_requested"):
        record_state(run_dir, state="stopped", ended=_now(), seconds=round(elapsed, 1), exit_code=code)
        raise JobFailedError("the job was stopped on request (autocnnp stop); finished checkpoints "
                             "are intact", remedy=f"continue with: autocnnp run --resume {run_dir}")
    if code == 0:
        record_state(run_dir, state="finished", ended=_now(), seconds=round(elapsed, 1), exit_code=0)
        return
    failure = first_failure(run_dir, "".join(output))
    record_state(run_dir, state="failed", ended=_now(), seconds=round(elapsed, 1), exit_code=code,
           failure=failure.message, failed_rank=failure.rank, failed_host=failure.host)
    raise failure


def stop_group(pgid: int, grace_s: float = 10.0) -> bool:
    """SIGTERM a job's process group, then SIGKILL what is left after ``grace_s``."""
    return _stop(lambda sig: os.killpg(pgid, sig), grace_s)


def stop_process(pid: int, grace_s: float = 10.0) -> bool:
    """SIGTERM one process, then SIGKILL it if it is still there after ``grace_s``."""
    return _stop(lambda sig: os.kill(pid, sig), grace_s)


def _stop(send, grace_s: float) -> bool:
    """``send(SIGTERM)``, wait until ``send(0)`` finds nothing, SIGKILL after ``grace_s``;
    False when there was nothing to signal."""
    try:
        send(signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            send(0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    try:
        send(signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True
