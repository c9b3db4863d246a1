"""Status, logs and stop for runs of any backend, read from the run directory; for a group
of trainings (folds, repeats: ``group.json``), for each of its members."""

from __future__ import annotations

import json
import os
from pathlib import Path

from autocnnp.engine import rundir
from autocnnp.errors import AutocnnpError
from autocnnp.run_manage.backend import get_backend


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


def format_epoch(record: object, end_epoch: int | None = None) -> str:
    """One ``metrics/epochs.jsonl`` record as the run printed it: ``3/30  loss 0.41  val_dice
    0.80  lr 2.0e-03  12.1s`` (a value the log holds as null, a NaN, prints as ``nan``)."""
    if not isinstance(record, dict):
        return str(record)
    parts = [f"{record.get('epoch', '?')}" + (f"/{end_epoch}" if end_epoch else "")]
    for key, fmt in (("loss", ".3g"), ("dice", ".2f"), ("val_loss", ".3g"),
                     ("val_dice", ".2f"), ("lr", ".1e")):
        if key in record:
            value = record[key]
            parts.append(f"{key} {'nan' if value is None else format(value, fmt)}")
    if isinstance(record.get("time_s"), (int, float)):
        parts.append(f"{record['time_s']:.1f}s")
    return "  ".join(parts)


#: the states of a training that is not over: queued by a batch system, or running
ACTIVE = ("pending", "running")


def is_group(run_dir: Path) -> bool:
    """True for the folder of a group of trainings (k-fold or repeats)."""
    return (Path(run_dir) / rundir.GROUP_FILE).is_file()


def member_dirs(group: Path) -> list[Path]:
    """The run directories of a group's members, in order (``group.json``)."""
    return [group / name for name in rundir.read_json(group / rundir.GROUP_FILE).get("members", [])]


def group_status(group: Path) -> dict:
    """A group's state, from its launcher and its members: ``running`` while its launcher or
    a member lives, ``finished`` once the summary is written, else the first member that did
    not finish says why (``stopped``, ``failed``) or the group is ``incomplete``."""
    from autocnnp.run_manage import ownership

    info = rundir.read_json(group / rundir.GROUP_FILE)
    members = []
    for run_dir in member_dirs(group):
        if (run_dir / rundir.SPEC_FILE).exists():
            member = status(run_dir)
            metrics = rundir.read_test_metrics(run_dir)
            if metrics is not None:
                member["test_dice"] = (metrics.get("means") or {}).get("mean_dice_foreground")
        else:
            member = {"state": "not started", "checkpoints": []}
        members.append({"name": run_dir.name, **member})
    summary = group / (rundir.FOLDS_FILE if info.get("kind") == "folds" else rundir.REPEATS_FILE)
    if ownership.launcher_alive(group) or any(m["state"] in ACTIVE for m in members):
        state = "running"
    elif summary.exists():
        state = "finished"
    else:
        # "dead (launcher and ranks gone ...)": the first word is the state
        ended = [word for word in (m["state"].split()[0] for m in members)
                 if word in ("stopped", "failed", "dead")]
        state = ended[0] if ended else "incomplete"
    return {"state": state, "kind": info.get("kind"), "launcher_pid": info.get("launcher_pid"),
            "members": members}


def group_lines(name: str, group: dict) -> list[str]:
    """:func:`group_status` as text: the group's state, then a line per training with its
    state, last epoch, test Dice and failure (``autocnnp status`` and ``watch`` print it)."""
    lines = [f"{name}: {group['state']} ({group['kind']}: {len(group['members'])} trainings)"]
    for member in group["members"]:
        line = f"  {member['name']}: {member['state']}"
        if "last_epoch" in member:
            line += f"  last epoch {format_epoch(member['last_epoch'], member.get('end_epoch'))}"
        if isinstance(member.get("test_dice"), (int, float)):
            line += f"  test dice {member['test_dice']:.3f}"
        if member.get("failure"):
            line += f"  ({member['failure']})"
        lines.append(line)
    return lines


def status(run_dir: Path) -> dict:
    """The run's state, last epoch, and failure if any."""
    state = rundir.read_state(run_dir)
    state = get_backend(state.get("backend") or "local").status(run_dir, state)
    epochs = run_dir / rundir.EPOCHS_FILE
    if epochs.exists():
        lines = [l for l in epochs.read_text().splitlines() if l.strip()]
        try:
            if lines:
                state["last_epoch"] = json.loads(lines[-1])
                spec = rundir.read_json(run_dir / rundir.SPEC_FILE)
                state["end_epoch"] = (spec.get("hyperparameters") or {}).get("end_epoch")
        except (ValueError, AutocnnpError):
            state["last_epoch"] = f"unreadable last line of {epochs}"
    ckpts = sorted(p.name for p in (run_dir / rundir.CHECKPOINTS).glob("*") if not p.name.startswith("."))
    state["checkpoints"] = ckpts
    return state


def _member_logs(member: Path, rank: int | None) -> str:
    """One training of a group: its process's output (packed groups) and its ranks' logs."""
    parts = []
    member_out = member / rundir.MEMBER_LOG
    if member_out.exists():
        parts.append(f"==> {rundir.MEMBER_LOG} <==\n{member_out.read_text()}")
    if (member / rundir.STATE_FILE).exists():
        try:
            parts.append(logs(member, rank))
        except AutocnnpError as exc:  # e.g. no rank-K.log: it failed before its ranks started
            parts.append(str(exc))
    return "\n".join(parts)


def logs(run_dir: Path, rank: int | None = None) -> str:
    if is_group(run_dir):
        texts = [(member.name, _member_logs(member, rank)) for member in member_dirs(run_dir)]
        parts = [f"==> {name} <==\n{text}" for name, text in texts if text]
        return "\n".join(parts) or f"{run_dir.name}: no training of the group has started yet"
    state = rundir.read_state(run_dir)
    text = get_backend(state.get("backend") or "local").logs(run_dir, rank)
    if text:
        return text
    log_dir = run_dir / rundir.LOGS
    files = [log_dir / f"rank-{rank}.log"] if rank is not None else sorted(log_dir.glob("*.log"))
    missing = [f for f in files if not f.exists()]
    if missing:
        raise AutocnnpError(f"no log {missing[0]} (ranks write rank-K.log once they start)")
    return "\n".join(f"==> {f.name} <==\n{f.read_text()}" for f in files)


def stop_group(group: Path, grace_s: float = 60.0) -> str:
    """Stop a group: its launcher first (SIGTERM, as Ctrl-C: it stops the trainings it runs and
    starts no other), then any member still running without it (a launcher killed outright)."""
    from autocnnp.run_manage import ownership
    from autocnnp.run_manage.local import stop_process

    pid = rundir.read_json(group / rundir.GROUP_FILE).get("launcher_pid")
    lines = []
    # signalled only when it holds the group's owner lock: a stale pid is never signalled
    if pid and any(h.pid == pid and h.lock == ownership.OWNER_LOCK
                   for h in ownership.holders(group)) and pid != os.getpid():
        stop_process(int(pid), grace_s=grace_s)
        lines.append(f"stopped the group's launcher (pid {pid})")
    for member in member_dirs(group):  # left running without it: its backend stops it
        if (member / rundir.SPEC_FILE).exists() and status(member)["state"] in ACTIVE:
            lines.append(stop(member))
    if not lines:
        return f"{group.name} is not running (state: {group_status(group)['state']})"
    return "\n".join(lines + [f"stopped {group.name}; resume with: autocnnp run --resume {group}"])


def stop(run_dir: Path) -> str:
    if is_group(run_dir):
        return stop_group(run_dir)
    state = rundir.read_state(run_dir)
    return get_backend(state.get("backend") or "local").stop(run_dir, state)
