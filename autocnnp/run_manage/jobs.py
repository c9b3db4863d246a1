"""Status, logs and stop for runs of any backend, read from the run directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

from autocnnp.engine import rundir
from autocnnp.errors import AutocnnpError


def resolve_run(run: str | Path, root: Path | None = None) -> Path:
    """A run directory from a path or a run name under ``root`` (default ./runs)."""
    path = Path(run)
    if (path / rundir.SPEC_FILE).exists():
        return path.resolve()
    candidate = (root or Path.cwd() / "runs") / str(run)
    if (candidate / rundir.SPEC_FILE).exists():
        return candidate.resolve()
    looked = f"{path}" if path.is_absolute() else f"{path} and {candidate}"
    raise AutocnnpError(f"no run directory {run!r} (looked for {rundir.SPEC_FILE} in {looked})")


def read_state(run_dir: Path) -> dict:
    path = run_dir / rundir.STATE_FILE
    return rundir.read_run_json(path) if path.exists() else {"state": "prepared"}


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


def status(run_dir: Path) -> dict:
    """The run's state, last epoch, and failure if any.

    Local and hosts runs: "running" only while the run's locks are held (launcher, mpirun or
    a rank alive); a run whose launcher died is settled from what its ranks recorded
    (:func:`~autocnnp.run_manage.ownership.settle`), and a live one names its processes.
    """
    state = read_state(run_dir)
    if state.get("backend") != "swarm":
        from autocnnp.run_manage import ownership

        state = ownership.settle(run_dir, state)
        if state.get("state") == "running":
            live = ownership.holders(run_dir)
            state["processes"] = [str(h) for h in live]
            launcher = state.get("launcher_pid")
            if launcher and not any(h.pid == launcher for h in live):
                state["note"] = (f"the launcher (pid {launcher}) is gone; the job runs on: "
                                 f"watch it here, end it with `autocnnp stop`, and status "
                                 f"records its end once it is over")
    if state.get("backend") == "swarm":
        from autocnnp.run_manage.swarm import SwarmBackend
        state.update(SwarmBackend().status(run_dir))
    epochs = run_dir / "metrics" / "epochs.jsonl"
    if epochs.exists():
        lines = [l for l in epochs.read_text().splitlines() if l.strip()]
        try:
            if lines:
                state["last_epoch"] = json.loads(lines[-1])
        except ValueError:
            state["last_epoch"] = f"unreadable last line of {epochs}"
    ckpts = sorted(p.name for p in (run_dir / rundir.CHECKPOINTS).glob("*") if not p.name.startswith("."))
    state["checkpoints"] = ckpts
    return state


def logs(run_dir: Path, rank: int | None = None) -> str:
    state = read_state(run_dir)
    if state.get("backend") == "swarm":
        from autocnnp.run_manage.swarm import SwarmBackend
        text = SwarmBackend().logs(run_dir, rank)
        if text:
            return text
    log_dir = run_dir / rundir.LOGS
    files = [log_dir / f"rank-{rank}.log"] if rank is not None else sorted(log_dir.glob("*.log"))
    missing = [f for f in files if not f.exists()]
    if missing:
        raise AutocnnpError(f"no log {missing[0]} (ranks write rank-K.log once they start)")
    return "\n".join(f"==> {f.name} <==\n{f.read_text()}" for f in files)


def stop(run_dir: Path) -> str:
    """Stop a run. Local and hosts: only processes that hold the run's locks are signalled
    (the mpirun process group that ``state.json`` names, once it is proven to hold the lock,
    then any rank left), never a process group a stale ``state.json`` merely names."""
    state = read_state(run_dir)
    if state.get("backend") == "swarm":
        from autocnnp.run_manage.swarm import SwarmBackend
        return SwarmBackend().stop(run_dir)
    from autocnnp.run_manage import ownership
    from autocnnp.run_manage.local import _now, record_state, stop_group, stop_process

    state = ownership.settle(run_dir, state)
    pgid = state.get("pgid")
    live = ownership.holders(run_dir)
    if not ownership.is_live(run_dir):
        note = (f"; process group {pgid} named in state.json does not hold the run's lock and "
                f"was not signalled") if pgid and _alive(pgid) else ""
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
        record_state(run_dir, state="stopped", ended=_now(),
                     settled="recorded by autocnnp stop; the launcher was gone")
    return f"stopped {run_dir.name}; resume with: autocnnp run --resume {run_dir}"

