"""One owner per run directory, and the truth about a run whose launcher is gone.

Two lock files in the run directory, both ``fcntl.flock`` locks, which the kernel releases
when the last process holding them ends, however it ends (SIGKILL included):

* ``.owner.lock``: taken exclusively by the launcher (``autocnnp run``, ``run --resume``)
  for the whole job. Its descriptor is passed on to ``mpirun``, which keeps it: when the
  launcher is SIGKILLed, mpirun and the ranks run on in their own session, and the run stays
  owned until they end.
  A group's launcher owns the group folder the same way; in a group run one training after
  another, each training's mpirun keeps the group's lock too, so a group whose launcher was
  SIGKILLed stays owned while a training of it runs.
* ``.ranks.lock``: taken shared by every rank (the worker), because Open MPI closes
  inherited descriptors in the ranks it starts: ranks orphaned by a dead mpirun still own
  the run.

A run is *live* while either lock is held. Nothing else counts: a pid in ``state.json``
may be stale or reused by an unrelated process. The processes holding the locks are found in
``/proc/*/fd`` and named in messages; ``autocnnp stop`` signals only processes that hold the
run's locks.

What happened to a run whose launcher died is read from what the ranks leave, not from the
launcher's last write: rank 0 writes ``completed.json`` after training and evaluation
(:func:`write_completion`), a failing rank writes ``errors/rank-K.json``. :func:`settle`
turns those into the final ``state.json`` once the run is no longer live.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from autocnnp.errors import AutocnnpError, EnvironmentProblemError

OWNER_LOCK = ".owner.lock"
RANKS_LOCK = ".ranks.lock"
COMPLETION_FILE = "completed.json"

#: descriptors this process holds locks through (the launcher's owner lock, a rank's lock)
_HELD: dict[str, int] = {}


class RunBusyError(AutocnnpError):
    """The run directory is owned by live processes (another launcher, or its ranks)."""

    exit_code = 1


@dataclass(frozen=True)
class Holder:
    """A process that holds one of a run's lock files open."""

    pid: int
    command: str
    lock: str

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.command})"


def _lock_paths(run_dir: Path) -> dict[str, Path]:
    return {name: Path(run_dir).resolve() / name for name in (OWNER_LOCK, RANKS_LOCK)}


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    text = " ".join(raw.replace(b"\0", b" ").decode(errors="replace").split())
    return text if len(text) <= 120 else text[:117] + "..."


def holders(run_dir: Path) -> list[Holder]:
    """Every process with one of ``run_dir``'s lock files open (from ``/proc/*/fd``)."""
    wanted = {str(path): name for name, path in _lock_paths(run_dir).items()}
    found: dict[int, Holder] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target in wanted:
                pid = int(entry.name)
                found.setdefault(pid, Holder(pid, _command(pid), wanted[target]))
    return [found[pid] for pid in sorted(found)]


def _held_by_others(path: Path) -> bool:
    """True when some process holds a flock on ``path`` (probed without waiting)."""
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock the probe took
    return False


def is_live(run_dir: Path) -> bool:
    """True while a launcher, its mpirun or any rank of the run is alive (other than this
    process: a lock it holds itself does not count)."""
    return any(_held_by_others(path) for path in _lock_paths(run_dir).values()
               if str(path) not in _HELD)


def launcher_alive(run_dir: Path) -> bool:
    """True while the run's launcher (the owner lock's holder, other than this process) lives;
    its ranks may outlive it (a SIGKILLed launcher), which :func:`is_live` counts too."""
    path = _lock_paths(run_dir)[OWNER_LOCK]
    return str(path) not in _HELD and _held_by_others(path)


def busy_message(run_dir: Path, found: list[Holder]) -> str:
    """The message of :class:`RunBusyError` (kept in one place for the tests)."""
    names = ", ".join(str(h) for h in found) or "processes this user cannot see"
    return f"{run_dir} is in use by a running job: {names}"


def acquire(run_dir: Path) -> int:
    """Take the run's owner lock for this process (kept until it exits or :func:`release`);
    raise :class:`RunBusyError` naming the live processes when the run is owned already or
    ranks of an earlier job still run. Returns the lock's descriptor."""
    paths = _lock_paths(run_dir)
    owner = paths[OWNER_LOCK]
    if str(owner) in _HELD:
        return _HELD[str(owner)]
    try:
        fd = os.open(owner, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise EnvironmentProblemError(f"cannot create the lock file {owner}: {exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunBusyError(busy_message(run_dir, holders(run_dir)),
                           remedy=f"wait for it (autocnnp status {run_dir}) or end it "
                                  f"(autocnnp stop {run_dir})") from None
    except OSError as exc:  # ENOLCK: a filesystem without flock
        os.close(fd)
        raise EnvironmentProblemError(
            f"cannot lock {owner}: {exc}",
            remedy="put the run directory (<run_root>) on a filesystem that supports flock "
                   "(local disks, NFSv4)") from None
    if _held_by_others(paths[RANKS_LOCK]):  # ranks orphaned by a dead mpirun
        os.close(fd)
        raise RunBusyError(busy_message(run_dir, holders(run_dir)),
                           remedy=f"wait for them, or end them with: autocnnp stop {run_dir}")
    _HELD[str(owner)] = fd
    return fd


def release(run_dir: Path) -> None:
    """Give up the owner lock this process holds on ``run_dir`` (if any)."""
    fd = _HELD.pop(str(_lock_paths(run_dir)[OWNER_LOCK]), None)
    if fd is not None:
        os.close(fd)


@contextmanager
def owned(run_dir: Path) -> Iterator[None]:
    """Own ``run_dir`` for the ``with`` block (:func:`acquire`); the lock is given up at its
    end only when this block took it, so an inner ``owned`` of a run already owned keeps it."""
    taken = str(_lock_paths(run_dir)[OWNER_LOCK]) not in _HELD
    acquire(run_dir)
    try:
        yield
    finally:
        if taken:
            release(run_dir)


def held_fds() -> tuple[int, ...]:
    """The lock descriptors to pass on to a launched ``mpirun`` (``Popen(pass_fds=...)``)."""
    return tuple(_HELD.values())


def hold_rank_lock(run_dir: Path) -> str | None:
    """Called by every rank at start: hold the run's rank lock (shared) for this process's
    life, so that the run counts as live while any rank runs. Returns why it could not (a
    filesystem without flock), for the rank to log: training goes on without it."""
    path = _lock_paths(run_dir)[RANKS_LOCK]
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        return f"cannot open {path}: {exc}"
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError as exc:
        os.close(fd)
        return f"cannot lock {path}: {exc}"
    _HELD[str(path)] = fd
    return None


# --- what the ranks leave: the ground truth when the launcher is gone -------------------------

def write_completion(run_dir: Path, **fields) -> Path:
    """Rank 0, after training and evaluation: ``completed.json`` says the job finished."""
    from autocnnp.engine.rundir import write_json

    path = Path(run_dir) / COMPLETION_FILE
    write_json(path, {"state": "finished", "pid": os.getpid(),
                             "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields})
    return path


def completion(run_dir: Path) -> dict | None:
    """Rank 0's completion record, or None."""
    try:
        record = json.loads((Path(run_dir) / COMPLETION_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def settle(run_dir: Path, state: dict) -> dict:
    """The true state of a run whose ``state.json`` says ``running``: unchanged while the run
    is live; otherwise what the ranks recorded (finished / failed), or ``dead`` when they
    recorded nothing. The settled state is written back when the launcher did not."""
    if state.get("state") != "running" or is_live(run_dir):
        return state
    from autocnnp.engine.rundir import record_state
    from autocnnp.run_manage.failures import first_failure

    done = completion(run_dir)
    if done is not None:
        fields = {"state": "finished", "ended": done.get("time"), "exit_code": 0,
                  "settled": f"from rank 0's {COMPLETION_FILE}; the launcher ended without "
                             f"recording the end"}
    elif any((Path(run_dir) / "errors").glob("rank-*.json")):
        failure = first_failure(Path(run_dir), "")
        fields = {"state": "failed", "failure": failure.message, "failed_rank": failure.rank,
                  "failed_host": failure.host,
                  "settled": "from the ranks' error records; the launcher ended without "
                             "recording the end"}
    else:
        return {**state, "state": "dead (launcher and ranks gone without recording an end)"}
    owned_here = str(_lock_paths(run_dir)[OWNER_LOCK]) in _HELD
    try:
        if not owned_here:
            acquire(run_dir)  # nobody may start on the run while its end is written
        return record_state(Path(run_dir), **fields)
    except (OSError, RunBusyError):  # read-only, or a job just started: report, do not write
        return {**state, **fields}
    finally:
        if not owned_here:
            release(run_dir)
