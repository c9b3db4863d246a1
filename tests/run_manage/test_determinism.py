"""The determinism switch: the same config on the CPU repeats bit for bit across runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.mpi]


def run(config: Path, env: dict) -> Path:
    result = subprocess.run([sys.executable, "-m", "autocnnp", "run", str(config)], capture_output=True,
                            text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return Path(result.stdout.strip().splitlines()[-1].removeprefix("run directory: "))


def losses(run_dir: Path) -> list[tuple[float, float]]:
    rows = [json.loads(l) for l in (run_dir / "metrics" / "epochs.jsonl").read_text().splitlines() if l.strip()]
    return [(r["loss"], r["val_loss"]) for r in rows]


def test_deterministic_runs_repeat_bit_for_bit(small_config, cli_env):
    config = small_config(ranks=2, epochs=2)
    config.write_text(config.read_text().replace(
        "<run_root>", "<reproducibility><property name=\"deterministic\">true</property></reproducibility>\n    <run_root>"))
    first, second = run(config, cli_env), run(config, cli_env)
    assert losses(first) == losses(second)
    a = json.loads((first / "test_metrics.json").read_text())
    b = json.loads((second / "test_metrics.json").read_text())
    assert a["confusion_matrix"] == b["confusion_matrix"]
    assert a["means"] == b["means"]
