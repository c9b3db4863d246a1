"""Local and hosts backends: execute a JobPlan with mpirun (or horovodrun) and watch it.

:class:`LocalBackend` (this machine) and :class:`HostsBackend` (a list of hosts over ssh, MPI's
own launcher) differ only in the plan :func:`~autocnnp.engine.plan.build_plan` makes.

One process group per job: a dead rank makes mpirun end the others, Ctrl-C or ``autocnnp
stop`` ends the whole group, and the first failure is reported with its rank, host and cause
from ``RUN_DIR/errors/rank-K.json`` (written by the worker) or from mpirun's own report when a
rank was killed before it could write one.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO, TextIO

from autocnnp.engine import rundir
from autocnnp.engine.plan import JobPlan, build_plan
from autocnnp.engine.rundir import RunState, record_state
from autocnnp.engine.spec import MonitoringSpec, TrainingSpec
from autocnnp.engine.vocabulary import HOROVOD_VERSION
from autocnnp.errors import EnvironmentProblemError, JobFailedError
from autocnnp.run_manage.backend import Backend
from autocnnp.run_manage.failures import first_failure
from autocnnp.run_manage.machine import detect_machine
from autocnnp.run_manage.ownership import held_fds

_MPI_NOISE = re.compile(r"^(-{20,}|Primary job\s+terminated|mpirun (noticed|detected)|"
                        r"Child job \d+ terminated|with errorcode|  Process name|  Exit code)")
# the first sign that a rank is failing: from there on the terminal gets the launcher's one
# message (first_failure) and the rest (tracebacks, the other ranks' errors) goes to the logs
_FAILING = re.compile(r"^(Traceback \(most recent call last\):|rank \d+: (error|interrupted)\b)")


def check_launcher(plan: JobPlan) -> None:
    """Fail early, with the remedy, when the launcher or Horovod is missing."""
    exe = plan.command[0]
    if shutil.which(exe) is None:
        raise EnvironmentProblemError(
            f"{exe} not found on PATH: ranks cannot be started",
            remedy="install Open MPI (apt-get install openmpi-bin libopenmpi-dev) or run "
                   "`bash scripts/setup.sh`, which installs the whole stack")
    import importlib.util
    if plan.engine == "torch":
        if importlib.util.find_spec("torch") is None:
            raise EnvironmentProblemError(
                "torch is not installed in this Python environment (dist_strategy torch_ddp)",
                remedy="run `bash scripts/setup.sh`, or pip install -c constraints.txt "
                       "'autocnnp[torch]' (the CPU build torch==2.13.0+cpu)")
        return
    if importlib.util.find_spec("horovod") is None:
        raise EnvironmentProblemError(
            "Horovod is not installed in this Python environment",
            remedy=f"run `bash scripts/setup.sh` (builds horovod=={HOROVOD_VERSION} with MPI and Gloo)")


#: space the launcher sets aside so that it can record the job's end on a full disk
STATE_RESERVE = ".state.reserve"


def record_launcher_state(run_dir: Path, **fields) -> dict:
    """:func:`~autocnnp.engine.rundir.record_state`, but on a full disk the launcher's
    reserve (see :func:`launch`) is given up to make room for it."""
    from autocnnp.diskspace import write_with_reserve

    current: dict = {}

    def write() -> None:
        current.update(record_state(run_dir, **fields))

    write_with_reserve(write, run_dir / STATE_RESERVE)
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


def launch(plan: JobPlan, run_dir: Path, *, out: TextIO = sys.stdout,
           launcher_env: dict[str, str] | None = None,
           monitoring: MonitoringSpec | None = None) -> None:
    """Run ``plan`` to completion, streaming rank 0's progress; raise JobFailedError
    (:class:`~autocnnp.run_manage.watchdog.JobHangError` when the hang watch stopped it).
    ``launcher_env``: more environment for mpirun itself (the hosts backend's ssh agent);
    ``monitoring``: the hang watch and metrics exporter to run beside the job."""
    check_launcher(plan)
    logs = run_dir / rundir.LOGS
    logs.mkdir(parents=True, exist_ok=True)
    env = os.environ.copy()
    env.update(plan.env_dict())
    env.update(launcher_env or {})
    started = time.monotonic()
    from autocnnp.diskspace import reserve
    reserve(run_dir / STATE_RESERVE)
    log_failed: list[bool] = []
    with open(logs / "launcher.log", "ab", buffering=0) as log:
        _log_line(log, f"# {rundir.timestamp()} {' '.join(plan.command)}\n", log_failed)
        # mpirun keeps the run's owner lock: the run stays owned if this process is killed
        proc = subprocess.Popen(plan.command, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1,
                                start_new_session=True, pass_fds=held_fds())
        record_launcher_state(run_dir, state=RunState.RUNNING, pid=proc.pid, pgid=proc.pid,
                              launcher_pid=os.getpid(), backend=plan.backend,
                              stop_requested=False, failure=None, failed_rank=None,
                              failed_host=None, started=rundir.timestamp(),
                              command=list(plan.command))
        output: list[str] = []
        failing = False
        monitor = None
        if monitoring is not None:
            from autocnnp.run_manage.launcher_monitor import LauncherMonitor, line_writer

            monitor = LauncherMonitor(run_dir, monitoring,
                                      stop_job=lambda: stop_group(proc.pid, leader=proc),
                                      output=output, say=line_writer(out))
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                _log_line(log, line, log_failed)
                output.append(line)
                failing = failing or bool(_FAILING.match(line))
                if not failing and line.strip() and not _MPI_NOISE.match(line.strip()):
                    out.write(line)
                    out.flush()
            code = proc.wait()
        except BaseException:
            stop_group(proc.pid, leader=proc)
            record_launcher_state(run_dir, state=RunState.STOPPED, ended=rundir.timestamp())
            raise
        finally:
            if monitor is not None:
                monitor.stop()
    elapsed = time.monotonic() - started
    hang = monitor.hang_error() if monitor is not None else None
    if hang is not None:
        record_launcher_state(run_dir, state=RunState.FAILED, ended=rundir.timestamp(),
                              seconds=round(elapsed, 1), exit_code=code, failure=hang.message,
                              failed_rank=hang.rank, failed_host=hang.host)
        raise hang
    if code != 0 and rundir.read_state(run_dir).get("stop_requested"):
        record_launcher_state(run_dir, state=RunState.STOPPED, ended=rundir.timestamp(), seconds=round(elapsed, 1), exit_code=code)
        raise JobFailedError("the job was stopped on request (autocnnp stop); finished checkpoints "
                             "are intact", remedy=f"continue with: autocnnp run --resume {run_dir}")
    if code == 0:
        record_launcher_state(run_dir, state=RunState.FINISHED, ended=rundir.timestamp(), seconds=round(elapsed, 1), exit_code=0)
        return
    failure = first_failure(run_dir, "".join(output))
    record_launcher_state(run_dir, state=RunState.FAILED, ended=rundir.timestamp(), seconds=round(elapsed, 1),
                 exit_code=code, failure=failure.message, failed_rank=failure.rank, failed_host=failure.host)
    raise failure


def stop_group(pgid: int, grace_s: float = 10.0, *,
               leader: subprocess.Popen | None = None) -> bool:
    """SIGTERM a job's process group, then SIGKILL what is left after ``grace_s``.
    ``leader``: the group's leader when it is this process's child (mpirun started by
    :func:`launch`); it is reaped as soon as it ends, since an unreaped leader keeps the group
    in existence and the wait would last the whole grace period."""
    def send(sig: int) -> None:
        os.killpg(pgid, sig)

    def alive() -> bool:
        if leader is not None:
            leader.poll()
        return _answers(send)

    return _stop(send, alive, grace_s)


def stop_process(pid: int, grace_s: float = 10.0) -> bool:
    """SIGTERM one process, then SIGKILL it if it is still there after ``grace_s``; a process
    that has ended but is not yet reaped by its parent (a zombie) counts as gone."""
    import psutil

    def alive() -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
        except psutil.Error:  # its state is not readable: ask the kernel whether it exists
            return _alive(pid)

    return _stop(lambda sig: os.kill(pid, sig), alive, grace_s)


def _stop(send, alive, grace_s: float) -> bool:
    """``send(SIGTERM)``, wait until ``alive()`` is false, ``send(SIGKILL)`` after ``grace_s``;
    False when there was nothing to signal."""
    try:
        send(signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not alive():
            return True
        time.sleep(0.2)
    try:
        send(signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


def _answers(send) -> bool:
    """Whether ``send(0)`` finds a process (one we may not signal counts as there)."""
    try:
        send(0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _alive(pid: int | None) -> bool:
    return bool(pid) and _answers(lambda sig: os.kill(pid, sig))


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
        launch(plan, run_dir, out=self.out, monitoring=spec.monitoring)

    def status(self, run_dir: Path, state: dict) -> dict:
        """"running" only while the run's locks are held (launcher, mpirun or a rank alive);
        a run whose launcher died is settled from what its ranks recorded
        (:func:`~autocnnp.run_manage.ownership.settle`), and a live one names its processes."""
        from autocnnp.run_manage import ownership

        state = ownership.settle(run_dir, state)
        if state.get("state") == RunState.RUNNING:
            live = ownership.holders(run_dir)
            state["processes"] = [str(h) for h in live]
            launcher = state.get("launcher_pid")
            if launcher and not any(h.pid == launcher for h in live):
                state["note"] = (f"the launcher (pid {launcher}) is gone; the job runs on: "
                                 f"watch it here, end it with `autocnnp stop`, and status "
                                 f"records its end once it is over")
        return state

    def stop(self, run_dir: Path, state: dict) -> str:
        """Only processes that hold the run's locks are signalled (the mpirun process group
        that ``state.json`` names, once it is proven to hold the lock, then any rank left),
        never a process group a stale ``state.json`` merely names."""
        from autocnnp.run_manage import ownership

        state = ownership.settle(run_dir, state)
        pgid = state.get("pgid")
        live = ownership.holders(run_dir)
        if not ownership.is_live(run_dir):
            note = (f"; process group {pgid} named in state.json does not hold the run's lock "
                    f"and was not signalled") if pgid and _alive(pgid) else ""
            return f"{run_dir.name} is not running (state: {state.get('state')}){note}"
        launcher = state.get("launcher_pid")
        launcher_alive = bool(launcher) and any(h.pid == launcher for h in live)
        record_state(run_dir, stop_requested=True)  # the launcher reports "stopped", not "failed"
        if pgid and any(h.pid == pgid for h in live):  # mpirun, proven by the lock it holds
            stop_group(int(pgid))
        elif launcher_alive:  # still preparing (no mpirun yet): SIGTERM makes it stop and record
            stop_process(int(launcher), grace_s=30.0)
        for holder in ownership.holders(run_dir):  # ranks orphaned by a dead mpirun
            if holder.pid != launcher and holder.pid != os.getpid():
                stop_process(holder.pid)
        if not launcher_alive:  # nobody else will record the end
            record_state(run_dir, state=RunState.STOPPED, ended=rundir.timestamp(),
                         settled="recorded by autocnnp stop; the launcher was gone")
        return f"stopped {run_dir.name}; resume with: autocnnp run --resume {run_dir}"


class HostsBackend(LocalBackend):
    """N ranks on a list of hosts over ssh (``<deployment backend="hosts">``).

    Before anything starts, every remote host must answer over ssh (a pre-flight error names
    each one that does not); the job then runs with its own ssh key, authorised on the hosts
    for the job and removed after it (:mod:`autocnnp.run_manage.ssh_access`)."""

    name = "hosts"

    @staticmethod
    def remote_hosts(plan: JobPlan) -> list[str]:
        from autocnnp.run_manage.ssh_access import is_this_machine

        hosts = dict.fromkeys(slot.host for slot in plan.ranks)  # in rank order, once each
        return [host for host in hosts if not is_this_machine(host)]

    def check(self, plan: JobPlan, spec: TrainingSpec | None = None) -> JobPlan:
        from autocnnp.run_manage.ssh_access import check_hosts

        check_launcher(plan)
        check_hosts(self.remote_hosts(plan))
        return plan

    def launch(self, spec: TrainingSpec, plan: JobPlan, run_dir: Path, *, resume: bool = False) -> None:
        from autocnnp.run_manage.ssh_access import job_key

        self.check(plan, spec)
        with job_key(run_dir, self.remote_hosts(plan)) as ssh_env:
            launch(plan, run_dir, out=self.out, launcher_env=ssh_env,
                   monitoring=spec.monitoring)
