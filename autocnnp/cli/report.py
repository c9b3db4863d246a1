"""Write the reproducibility report of a run (or of a group of repeated runs).

Checks the run's records against the recommendations of Renard et al. (2020) for describing
a segmentation experiment, prints the page and writes RUN/report.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from autocnnp.engine.rundir import atomic_write
from autocnnp.engine import rundir
from autocnnp.orchestrator.report import build_report
from autocnnp.run_manage.jobs import resolve_run

HELP = "reproducibility report of a run (Renard et al. checklist)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory, or a group of repeats (with repeats.json)")


def _optional(path: Path):
    return rundir.read_json(path) if path.exists() else None


def run(args: argparse.Namespace) -> int:
    group = Path(args.run)
    repeats = _optional(group / "repeats.json")
    run_dir = resolve_run(group / "repeat-1") if repeats else resolve_run(args.run)
    report = build_report(rundir.read_json(run_dir / rundir.SPEC_FILE),
                          rundir.read_json(run_dir / rundir.MANIFEST_FILE),
                          _optional(run_dir / rundir.TEST_METRICS),
                          _optional(run_dir / "metrics" / "train_summary.json"), repeats,
                          None if repeats else rundir.read_state(run_dir))
    target = (group if repeats else run_dir) / "report.md"
    text = report.markdown((group if repeats else run_dir).name)
    atomic_write(target, text.encode())
    print(text, end="")
    print(f"\nwritten to {target}")
    return 0
