"""Status, logs and stop for runs of any backend, read from the run directory."""

from __future__ import annotations

import json
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


def logs(run_dir: Path, rank: int | None = None) -> str:
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


def stop(run_dir: Path) -> str:
    state = rundir.read_state(run_dir)
    return get_backend(state.get("backend") or "local").stop(run_dir, state)
