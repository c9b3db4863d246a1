"""The run directory: its layout, and the one door through which its files are read and written.

Every file of a run directory goes through here: JSON read (a damaged file is an error naming
it, never a traceback), state merge, atomic file write (a crash leaves the old file or the new
one, never half of either) and atomic directory swap (checkpoints, the final model). The
recorded state of a run is a :class:`RunState`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from enum import Enum
from pathlib import Path
from typing import Any

from autocnnp.engine import splits as S
from autocnnp.engine.spec import TrainingSpec, spec_to_dict
from autocnnp.errors import AutocnnpError

SPEC_FILE = "spec.json"
PLAN_FILE = "plan.json"
CONFIG_COPY = "config.xml"
MANIFEST_FILE = "manifest.json"
STATE_FILE = "state.json"
TEST_METRICS = "test_metrics.json"
REPEATS_FILE = "repeats.json"
PER_CASE_FILE = "per_case.csv"
SPLITS_FILE = "splits.json"
FOLDS_FILE = "folds.json"
GROUP_FILE = "group.json"
TRAIN_SUMMARY = "metrics/train_summary.json"
EPOCHS_FILE = "metrics/epochs.jsonl"
MODEL = "model"
LOGS = "logs"
ERRORS = "errors"
CHECKPOINTS = "checkpoints"
#: the output of one training of a packed group, run as its own process
MEMBER_LOG = "logs/member.out"


class RunState(str, Enum):
    """What ``state.json`` records about a run."""

    PREPARED = "prepared"
    PENDING = "pending"     # queued by a batch system, not started yet
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    STOPPED = "stopped"


# ---------------------------------------------------------------------- files
def atomic_write(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename
    (``sync=False``: without fsync, for files rewritten every second such as progress)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    """:func:`atomic_write` of ``data`` as indented JSON."""
    atomic_write(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def read_json(path: Path) -> dict:
    """A JSON object of a run directory; a missing or damaged one is an AutocnnpError naming
    the file, not a JSONDecodeError traceback."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise AutocnnpError(f"{path}: no such file; is {path.parent} a run directory?") from None
    except OSError as exc:
        raise AutocnnpError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        where = (f" at line {exc.lineno} column {exc.colno}"
                 if isinstance(exc, json.JSONDecodeError) else "")
        raise AutocnnpError(f"{path}: not valid JSON{where}; the run directory is damaged "
                            f"(repair or delete {path.name})") from None
    if not isinstance(data, dict):
        raise AutocnnpError(f"{path}: not a JSON object; the run directory is damaged "
                            f"(repair or delete {path.name})")
    return data


def update_json(path: Path, **fields: Any) -> dict:
    """Merge ``fields`` into the JSON object at ``path`` (created when absent); returns it."""
    current = read_json(path) if Path(path).exists() else {}
    current.update(fields)
    write_json(path, current)
    return current


def read_split_cases(run_dir: Path, split: str) -> list[str]:
    """The case ids of ``split`` in ``run_dir``'s ``splits.json`` (a run with a case-level
    split); AutocnnpError when there is none."""
    record = run_dir / SPLITS_FILE if run_dir.is_dir() else run_dir
    if not record.is_file():
        raise AutocnnpError(f"{record}: no such file: the run has no case-level split",
                            remedy="--split needs a run trained with <cases> and <split>")
    try:
        splits = json.loads(record.read_text())["splits"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AutocnnpError(f"{record}: no case-level split to read ({exc})",
                            remedy="--split needs a run trained with <cases> and <split>") from exc
    if split not in splits:
        raise AutocnnpError(f"{record}: no split {split!r}; it has {', '.join(sorted(splits))}")
    return list(splits[split])


def read_test_metrics(run_dir: Path) -> dict | None:
    """``test_metrics.json`` of ``run_dir``; None for a run that has not evaluated (yet)."""
    path = Path(run_dir) / TEST_METRICS
    return read_json(path) if path.exists() else None


def split_record(spec: TrainingSpec) -> dict[str, Any] | None:
    """What ``RUN_DIR/splits.json`` holds for one training of a drawn split (None without)."""
    if spec.data.cases is None or spec.data.split is None:
        return None
    split = spec.data.split
    return {"version": S.SPLITS_VERSION, "cases_folder": str(spec.data.train),
            "format": spec.data.format, "seed": split.seed, "stratify": split.stratify,
            "case_id": split.case_id, "fold": spec.data.fold,
            "file": str(split.file) if split.file else None,
            "cases": sorted(c for members in spec.data.cases.values() for c in members),
            "splits": {name: list(spec.data.cases.get(name, ())) for name in S.SPLIT_NAMES}}


def populate_run_dir(spec: TrainingSpec, run_dir: Path) -> None:
    """Fill a new, empty run directory: its folders, the config copy, the ``spec.json`` every
    rank reads and, for a drawn split, ``splits.json``."""
    for sub in (LOGS, ERRORS, CHECKPOINTS):
        (run_dir / sub).mkdir()
    shutil.copy2(spec.source, run_dir / CONFIG_COPY)
    write_json(run_dir / SPEC_FILE, spec_to_dict(spec))
    record = split_record(spec)
    if record is not None:
        write_json(run_dir / SPLITS_FILE, record)


def timestamp() -> str:
    """Now, as the run files record it (UTC, ISO 8601, seconds)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def read_state(run_dir: Path) -> dict:
    """``state.json`` of ``run_dir``; a run that never launched is ``prepared``."""
    path = run_dir / STATE_FILE
    return read_json(path) if path.exists() else {"state": RunState.PREPARED.value}


def record_state(run_dir: Path, **fields: Any) -> dict:
    """Merge ``fields`` into ``state.json`` of ``run_dir``; returns the new state."""
    return update_json(run_dir / STATE_FILE, **fields)


def replace_dir(tmp: Path, final: Path) -> Path:
    """Move the complete folder ``tmp`` to ``final`` in one rename, replacing what was there.

    A crash leaves the old folder or the new one (or both, the old under a hidden name), never
    a half-written ``final``.
    """
    if final.exists():
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    return final


# ---------------------------------------------------------------------- naming
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
