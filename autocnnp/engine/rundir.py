"""Run directory naming and layout (pure path arithmetic; run_manage writes the files)."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from autocnnp.engine.spec import TrainingSpec
from autocnnp.errors import AutocnnpError

SPEC_FILE = "spec.json"
PLAN_FILE = "plan.json"
CONFIG_COPY = "config.xml"
MANIFEST_FILE = "manifest.json"
STATE_FILE = "state.json"
TEST_METRICS = "test_metrics.json"
LOGS = "logs"
ERRORS = "errors"
CHECKPOINTS = "checkpoints"


def read_run_json(path: Path) -> Any:
    """A JSON file of a run directory; AutocnnpError naming the file when it is damaged."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise AutocnnpError(f"{path}: missing; is {path.parent} a run directory?") from None
    except (OSError, ValueError) as exc:
        raise AutocnnpError(f"{path}: unreadable or not valid JSON ({exc}); the run directory "
                            f"is damaged") from None


def run_root(spec: TrainingSpec) -> Path:
    return spec.run_root or (Path.cwd() / "runs")


def new_run_dir(spec: TrainingSpec, now: _dt.datetime | None = None) -> Path:
    """A fresh run directory path: ``RUN_ROOT/<config stem>-<UTC timestamp>``."""
    stamp = (now or _dt.datetime.now(_dt.timezone.utc)).strftime("%Y%m%d-%H%M%S")
    return run_root(spec) / f"{spec.source.stem}-{stamp}"


def create_run_dir(spec: TrainingSpec) -> Path:
    """Create and return a new, empty run directory (``.1``, ``.2``... on a name clash).

    ``mkdir`` is the only check, so two runs started in the same second never share one.
    """
    base = new_run_dir(spec)
    for n in range(1000):
        candidate = base if n == 0 else base.with_name(f"{base.name}.{n}")
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            continue
    raise AutocnnpError(f"cannot create a run directory next to {base}: 1000 names taken")
