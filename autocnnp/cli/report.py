"""Write the reproducibility report of a run (or of a group of repeated runs).

Checks the run's records against the recommendations of Renard et al. (2020) for describing
a segmentation experiment, prints the page and writes RUN/report.md; draws the curves (loss,
validation Dice, learning rate, throughput per epoch, CPU and memory per rank; for a group of
repeats or folds, every member with their mean) as PNG files in RUN/report/, and writes
RUN/report.html, one self-contained page with the curves, the metrics and the checklist.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from autocnnp.engine.rundir import atomic_write
from autocnnp.engine import rundir
from autocnnp.orchestrator.report import build_report
from autocnnp.orchestrator.report_page import plot_curves, read_curves, render_html
from autocnnp.run_manage.jobs import resolve_run

HELP = "reproducibility report of a run (Renard et al. checklist)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory, or a group of repeats (repeats.json) or of "
                                    "folds (folds.json)")


def _optional(path: Path):
    return rundir.read_json(path) if path.exists() else None


def run(args: argparse.Namespace) -> int:
    from autocnnp.run_manage.jobs import is_group

    group = Path(args.run)
    summary = None
    if is_group(group):
        info = rundir.read_json(group / rundir.GROUP_FILE)
        summary = _optional(group / (rundir.FOLDS_FILE if info.get("kind") == "folds"
                                     else rundir.REPEATS_FILE))
        run_dir = resolve_run(group / info["members"][0])
    else:
        summary = _optional(group / rundir.REPEATS_FILE)
        run_dir = resolve_run(group / "repeat-1") if summary else resolve_run(args.run)
    home = group if summary else run_dir
    per_case = (summary or {}).get("per_case_summary")
    if per_case is None and (run_dir / rundir.PER_CASE_FILE).exists():
        from autocnnp.orchestrator.experiment import per_case_spread, read_per_case

        per_case = per_case_spread(read_per_case(run_dir / rundir.PER_CASE_FILE)) or None
    comparisons = [rundir.read_json(p) for p in sorted(home.glob("compare-vs-*/compare.json"))]
    report = build_report(rundir.read_json(run_dir / rundir.SPEC_FILE),
                          rundir.read_json(run_dir / rundir.MANIFEST_FILE),
                          _optional(run_dir / rundir.TEST_METRICS),
                          _optional(run_dir / "metrics" / "train_summary.json"), summary,
                          None if summary else rundir.read_state(run_dir),
                          splits=_optional(home / rundir.SPLITS_FILE), per_case=per_case,
                          comparisons=comparisons)
    target = home / "report.md"
    text = report.markdown(home.name)
    atomic_write(target, text.encode())
    print(text, end="")
    print(f"\nwritten to {target}")
    if is_group(group):
        members = [resolve_run(group / m) for m in info["members"]]
    elif summary:
        members = [resolve_run(group / f"repeat-{k}")
                   for k in range(1, len(summary.get("runs") or []) + 1)]
    else:
        members = [run_dir]
    figures = plot_curves([read_curves(m) for m in members], home / "report")
    page = home / "report.html"
    atomic_write(page, render_html(home.name, report, figures).encode())
    print(f"curves: {', '.join(str(p) for p in figures.values()) or 'none (no epoch was logged)'}")
    print(f"page: {page}")
    return 0
