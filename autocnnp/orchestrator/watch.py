"""``autocnnp watch RUN``: a live view of a running job, from its run directory alone.

:func:`snapshot` gathers what the ranks and the launcher keep current (``state.json`` through
the backend's ``status``, ``progress/rank-K.json``, ``metrics/system.jsonl``,
``metrics/epochs.jsonl``) into a :class:`WatchSnapshot`; :func:`render` turns it into a rich
renderable: per rank its phase, node, epoch and step progress, step time, CPU, memory and
GPU; the loss and validation Dice as small charts; the ETA. :func:`summary` is what stays on
the terminal once the job has ended. Any backend works whose ranks see the run directory
(local, hosts, swarm with bind mounts or a shared volume, Slurm).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autocnnp.engine import rundir
from autocnnp.run_manage.exposition import SystemMetricsTail
from autocnnp.run_manage.watchdog import read_progress

#: states in which the job is over
ENDED = ("finished", "failed", "stopped", "dead")
SPARKS = "▁▂▃▄▅▆▇█"


@dataclass
class WatchSnapshot:
    """Everything one frame of the view shows."""

    run: str
    state: dict[str, Any]
    progress: dict[int, dict[str, Any]]
    samples: dict[int, dict[str, Any]]
    epochs: list[dict[str, Any]]
    end_epoch: int
    ranks: int
    now: float = field(default_factory=time.time)

    @property
    def ended(self) -> bool:
        # "dead (launcher and ranks gone ...)": the first word is the state
        return str(self.state.get("state")).split(" ")[0] in ENDED


def read_epochs(run_dir: Path) -> list[dict[str, Any]]:
    """The epoch records of ``metrics/epochs.jsonl`` (a line being written is skipped)."""
    try:
        text = (Path(run_dir) / rundir.EPOCHS_FILE).read_text()
    except OSError:
        return []
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


class Watcher:
    """Reads a run directory again at every :meth:`snapshot` (the system log incrementally)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.tail = SystemMetricsTail(run_dir)
        spec = rundir.read_json(self.run_dir / rundir.SPEC_FILE)
        self.end_epoch = int((spec.get("hyperparameters") or {}).get("end_epoch") or 0)
        self.ranks = int(spec.get("parallelism_degree") or 1)

    def snapshot(self) -> WatchSnapshot:
        from autocnnp.run_manage.jobs import status

        return WatchSnapshot(run=self.run_dir.name, state=status(self.run_dir),
                             progress=read_progress(self.run_dir),
                             samples=dict(self.tail.update()), epochs=read_epochs(self.run_dir),
                             end_epoch=self.end_epoch, ranks=self.ranks)


def sparkline(values: list[float], width: int = 40) -> str:
    """``values`` (the last ``width``) as one line of block characters, low to high."""
    values = [v for v in values if isinstance(v, (int, float))][-width:]
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(SPARKS[min(len(SPARKS) - 1, int((v - low) / span * len(SPARKS)))]
                   for v in values)


def eta_seconds(snap: WatchSnapshot) -> float | None:
    """Seconds left: the mean epoch time so far times the epochs left, less the share of
    the current epoch that rank 0 has done."""
    times = [e["time_s"] for e in snap.epochs if isinstance(e.get("time_s"), (int, float))]
    lead = snap.progress.get(0) or next(iter(snap.progress.values()), None)
    if not times or lead is None or not snap.end_epoch:
        return None
    mean = sum(times) / len(times)
    epoch, step, steps = lead.get("epoch", 0), lead.get("step", 0), lead.get("steps_per_epoch", 0)
    done_in_epoch = step / steps if steps else 0.0
    return max(0.0, (snap.end_epoch - epoch + 1 - done_in_epoch) * mean)


def _bytes(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit in ("B", "KB") else f"{value:.1f} {unit}"
        value /= 1024
    return "-"


def rank_rows(snap: WatchSnapshot) -> list[dict[str, str]]:
    """One row of plain strings per rank (what the table shows)."""
    from autocnnp.components.training import format_duration

    tasks = {}
    swarm = snap.state.get("swarm")
    if isinstance(swarm, dict):
        tasks = {t.get("rank"): t for t in swarm.get("tasks", [])}
    rows = []
    for rank in range(snap.ranks):
        prog, sample, task = snap.progress.get(rank, {}), snap.samples.get(rank, {}), tasks.get(rank, {})
        phase = prog.get("phase") or task.get("state") or "waiting"
        if snap.ended and phase not in ("done", "failed"):
            phase = str(snap.state.get("state"))
        epoch, end = prog.get("epoch", 0), prog.get("end_epoch") or snap.end_epoch
        step, steps = prog.get("step", 0), prog.get("steps_per_epoch", 0)
        idle = snap.now - prog["progress_at"] if "progress_at" in prog else None
        gpu = [f"{sample[k]:.0f}%" for k in sorted(sample) if k.endswith("_util_percent")]
        rows.append({
            "rank": str(rank), "state": phase,
            "node": str(prog.get("host") or sample.get("host") or task.get("node") or "-"),
            "epoch": f"{epoch}/{end}" if epoch else "-",
            "step": f"{step}/{steps}" if steps else "-",
            "fraction": f"{(step / steps) if steps else 0.0:.4f}",
            "step_time": f"{prog['step_time_s'] * 1000:.0f} ms" if prog.get("step_time_s") else "-",
            "cpu": f"{sample['cpu_percent']:.0f}%" if "cpu_percent" in sample else "-",
            "memory": _bytes(sample.get("rss_bytes")),
            "gpu": " ".join(gpu) or "-",
            "idle": format_duration(idle) if idle is not None and phase == "training" else "",
        })
    return rows


def render(snap: WatchSnapshot) -> Any:
    """The frame: a header line, the ranks' table, the charts."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    from autocnnp.components.training import format_duration

    state = str(snap.state.get("state"))
    eta = eta_seconds(snap)
    done = len(snap.epochs)
    header = Text.assemble((f"{snap.run}", "bold"), f"  {state}",
                           f"  epochs done {done}/{snap.end_epoch}",
                           f"  eta {format_duration(eta)}" if eta is not None and not snap.ended else "")
    rows = rank_rows(snap)
    columns = [("rank", "rank"), ("state", "state"), ("node", "node"), ("epoch", "epoch"),
               ("progress", None), ("step", "step"), ("step time", "step_time"), ("CPU", "cpu"),
               ("memory", "memory"), ("GPU", "gpu"), ("idle", "idle")]
    # columns no rank has a value for (no GPU, nobody idle) are left out
    columns = [(title, key) for title, key in columns
               if key is None or any(row[key] not in ("", "-") for row in rows)
               or key not in ("gpu", "idle")]
    table = Table(show_edge=False, pad_edge=False, box=None)
    for title, _ in columns:
        table.add_column(title, no_wrap=True, min_width=len(title))
    for row in rows:
        cells = [ProgressBar(total=1.0, completed=float(row["fraction"]), width=10)
                 if key is None else row[key] for _, key in columns]
        table.add_row(*cells)
    parts: list[Any] = [header, table]
    for key in ("loss", "val_loss", "val_dice", "dice"):
        values = [e.get(key) for e in snap.epochs]
        values = [v for v in values if isinstance(v, (int, float))]
        if values and (key != "dice" or not any("val_dice" in e for e in snap.epochs)):
            parts.append(Text(f"{key:<9}{sparkline(values)}  {values[-1]:.3g}"))
    if snap.state.get("failure"):
        parts.append(Text(f"failure: {snap.state['failure']}", style="red"))
    return Group(*parts)


def summary(snap: WatchSnapshot, run_dir: Path) -> str:
    """The lines left on the terminal after the job ended."""
    from autocnnp.run_manage.jobs import format_epoch

    lines = [f"{snap.run}: {snap.state.get('state')}"
             + (f" after {snap.state['seconds']} s" if snap.state.get("seconds") else "")]
    if snap.epochs:
        lines.append(f"  last epoch: {format_epoch(snap.epochs[-1], snap.end_epoch)}")
    if snap.state.get("failure"):
        lines.append(f"  failure: {snap.state['failure']}")
    metrics = Path(run_dir) / rundir.TEST_METRICS
    if metrics.exists():
        try:
            means = json.loads(metrics.read_text()).get("means", {})
            shown = [k for k in ("mean_dice", "mean_dice_foreground", "mean_iou") if k in means]
            lines.append("  test: " + "  ".join(f"{k} {means[k]:.3f}" for k in shown
                                                if isinstance(means[k], (int, float))))
        except ValueError:
            pass
    lines.append(f"  run directory: {run_dir}")
    return "\n".join(lines)
