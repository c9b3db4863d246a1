"""The curves and the HTML page of ``autocnnp report``.

:func:`read_curves` reads what a run directory records per epoch (``metrics/epochs.jsonl``)
and per rank over time (``metrics/system.jsonl``); :func:`plot_curves` draws PNG figures
(matplotlib, Agg backend, imported only here): loss, validation metrics, learning rate,
throughput per epoch, and CPU and memory per rank. For repeated runs every repeat is drawn
thin and their mean thick. :func:`render_html` makes one self-contained page (the figures
embedded as data URIs: it can be mailed or opened from anywhere) with the curves, the metrics
table and the reproducibility checklist of :class:`~autocnnp.orchestrator.report.Report`.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autocnnp.orchestrator.report import Report

#: figure file name -> (title, [(epoch-record key, label)])
EPOCH_FIGURES: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "loss.png": ("Loss per epoch", [("loss", "training loss"), ("val_loss", "validation loss")]),
    "validation.png": ("Dice per epoch", [("dice", "training Dice"),
                                          ("val_dice", "validation Dice")]),
    "lr.png": ("Learning rate per epoch", [("lr", "learning rate")]),
    "throughput.png": ("Training throughput per epoch", [("images_per_s", "images/s (all ranks)")]),
}
SYSTEM_FIGURE = "system.png"


@dataclass
class RunCurves:
    """One run's per-epoch records and per-rank system samples."""

    name: str
    epochs: list[dict[str, Any]] = field(default_factory=list)
    system: dict[int, list[dict[str, Any]]] = field(default_factory=dict)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except OSError:
        return []
    records = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            records.append(value)
    return records


def read_curves(run_dir: Path) -> RunCurves:
    run_dir = Path(run_dir)
    system: dict[int, list[dict[str, Any]]] = {}
    for sample in _jsonl(run_dir / "metrics" / "system.jsonl"):
        if isinstance(sample.get("rank"), int):
            system.setdefault(sample["rank"], []).append(sample)
    return RunCurves(run_dir.name, _jsonl(run_dir / "metrics" / "epochs.jsonl"), system)


def _series(curves: RunCurves, key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for record in curves.epochs:
        value = record.get(key)
        if isinstance(value, (int, float)) and isinstance(record.get("epoch"), int):
            xs.append(record["epoch"])
            ys.append(float(value))
    return xs, ys


def _mean_series(runs: list[RunCurves], key: str) -> tuple[list[int], list[float]]:
    by_epoch: dict[int, list[float]] = {}
    for run in runs:
        for x, y in zip(*_series(run, key)):
            by_epoch.setdefault(x, []).append(y)
    xs = sorted(e for e, values in by_epoch.items() if len(values) == len(runs))
    return xs, [sum(by_epoch[e]) / len(by_epoch[e]) for e in xs]


def plot_curves(runs: list[RunCurves], out_dir: Path) -> dict[str, Path]:
    """Write the figures that have data to ``out_dir``; returns file name -> path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    repeated = len(runs) > 1
    for name, (title, keys) in EPOCH_FIGURES.items():
        if not any(_series(run, key)[0] for run in runs for key, _ in keys):
            continue
        fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
        for i, (key, label) in enumerate(keys):
            color = colors[i % len(colors)]
            for run in runs:
                xs, ys = _series(run, key)
                if xs:
                    ax.plot(xs, ys, color=color, linewidth=1.0 if repeated else 2.0,
                            alpha=0.35 if repeated else 1.0, marker=None if repeated else "o",
                            markersize=3, label=None if repeated else label)
            if repeated:
                xs, ys = _mean_series(runs, key)
                if xs:
                    ax.plot(xs, ys, color=color, linewidth=2.5,
                            label=f"{label}: mean of {len(runs)} runs")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if name == "lr.png":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / name)
        plt.close(fig)
        written[name] = out_dir / name
    system = runs[0].system if runs else {}
    if system:
        fig, (cpu, mem) = plt.subplots(1, 2, figsize=(9.6, 3.4), dpi=100)
        for rank, samples in sorted(system.items()):
            t0 = samples[0]["time"]
            ts = [s["time"] - t0 for s in samples]
            cpu.plot(ts, [s.get("cpu_percent", 0) for s in samples], label=f"rank {rank}")
            mem.plot(ts, [s.get("rss_bytes", 0) / 2**20 for s in samples], label=f"rank {rank}")
        cpu.set_title("CPU per rank (%, 100 = one core)")
        mem.set_title("Resident memory per rank (MiB)")
        for ax in (cpu, mem):
            ax.set_xlabel("seconds since the rank started")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"System metrics ({runs[0].name})" if repeated else "System metrics")
        fig.tight_layout()
        fig.savefig(out_dir / SYSTEM_FIGURE)
        plt.close(fig)
        written[SYSTEM_FIGURE] = out_dir / SYSTEM_FIGURE
    return written


def _markdown_block(lines: list[str]) -> str:
    """The report's section bodies (Markdown tables and lists) as HTML."""
    out: list[str] = []
    rows = [l for l in lines if l.startswith("|")]
    if rows:
        cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows
                 if not set(r.replace("|", "").strip()) <= {"-"}]
        out.append("<table><thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cells[0])
                   + "</tr></thead><tbody>")
        out += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in cells[1:]]
        out.append("</tbody></table>")
    items = [l[2:] for l in lines if l.startswith("- ")]
    if items:
        out.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>")
    return "\n".join(out)


def render_html(title: str, report: Report, figures: dict[str, Path]) -> str:
    """One self-contained page: curves, metrics, checklist."""
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>autocnnp report: {html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:1em auto;color:#222}"
        ".curves{display:flex;flex-wrap:wrap;gap:8px}.curves img{width:49%;border:1px solid #ddd}"
        ".curves img.wide{width:100%}"
        "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;"
        "padding:3px 8px;text-align:left;font-size:14px}.no{color:#b00;font-weight:bold}"
        ".outcome{color:#b00;font-weight:bold}</style></head><body>",
        f"<h1>Report: {html.escape(title)}</h1>"]
    if report.outcome:
        parts.append(f'<p class="outcome">{html.escape(report.outcome)}</p>')
    if figures:
        parts.append('<h2>Curves</h2><div class="curves">')
        for name, path in figures.items():
            data = base64.b64encode(Path(path).read_bytes()).decode()
            wide = ' class="wide"' if name == SYSTEM_FIGURE else ""
            parts.append(f'<img{wide} alt="{html.escape(name)}" '
                         f'src="data:image/png;base64,{data}">')
        parts.append("</div>")
    for heading, body in report.sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(_markdown_block(body))
    parts.append(f"<h2>Reproducibility checklist (Renard et al. 2020): "
                 f"{report.passed}/{len(report.checks)} satisfied</h2>")
    parts.append("<table><thead><tr><th>recommendation</th><th></th><th>what the run records"
                 "</th></tr></thead><tbody>")
    for check in report.checks:
        mark = "yes" if check.ok else '<span class="no">no</span>'
        parts.append(f"<tr><td>{html.escape(check.item)}</td><td>{mark}</td>"
                     f"<td>{html.escape(check.detail)}</td></tr>")
    parts.append("</tbody></table></body></html>")
    return "\n".join(parts) + "\n"
