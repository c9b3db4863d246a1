"""`autocnnp tune` end to end: a real (tiny) GreScale guideline with real MPI ranks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.mpi]


def test_tune_runs_baseline_then_grescale_trials(small_config, cli_env):
    config = small_config(ranks=2, epochs=2)
    result = subprocess.run([sys.executable, "-m", "autocnnp", "tune", str(config), "--threshold", "2",
                             "--max-trials", "3"], capture_output=True, text=True, env=cli_env,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    out = result.stdout
    assert "Guideline trials" in out and "dice_fg" in out

    reports = sorted((config.parent / "runs").glob("tune-*.json"))
    assert len(reports) == 1
    report = json.loads(reports[0].read_text())
    history = report["history"]
    assert [h["name"] for h in history][:2] == ["baseline", "grescale"]
    assert len(history) == 3  # max_trials bounds every run, confirmation included
    assert history[-1]["name"] in ("confirm", "decrease-lr-1")
    assert report["tuning"] is True and report["workers"] == 2 and report["done"] is True
    assert isinstance(report["baseline_reached"], bool)
    assert report["best"]["name"] in {h["name"] for h in history[1:]}

    for i, h in enumerate(history):
        run_dir = Path(h["run_dir"])
        assert run_dir.is_dir() and (run_dir / "test_metrics.json").exists()
        spec = json.loads((run_dir / "spec.json").read_text())
        if i == 0:
            assert spec["parallelism_degree"] == 1 and spec["lr_policy"]["name"] == "constant"
        else:
            assert spec["parallelism_degree"] == 2 and spec["lr_policy"]["name"] == "grescale"
        assert h["means"]["mean_dice_foreground"] is not None
        assert h["run_dir"] in out
