"""Run directory naming and layout (pure path arithmetic; run_manage writes the files)."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from autocnnp.engine.spec import TrainingSpec

SPEC_FILE = "spec.json"
PLAN_FILE = "plan.json"
CONFIG_COPY = "config.xml"
MANIFEST_FILE = "manifest.json"
STATE_FILE = "state.json"
TEST_METRICS = "test_metrics.json"
LOGS = "logs"
ERRORS = "errors"
CHECKPOINTS = "checkpoints"


def run_root(spec: TrainingSpec) -> Path:
    return spec.run_root or (Path.cwd() / "runs")


def new_run_dir(spec: TrainingSpec, now: _dt.datetime | None = None) -> Path:
    """A fresh run directory path: ``RUN_ROOT/<config stem>-<UTC timestamp>``."""
    stamp = (now or _dt.datetime.now(_dt.timezone.utc)).strftime("%Y%m%d-%H%M%S")
    return run_root(spec) / f"{spec.source.stem}-{stamp}"
