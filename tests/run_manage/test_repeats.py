"""Repeated runs: K real runs with consecutive seeds, summarised with a confidence interval."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from autocnnp.orchestrator.experiment import summarize_repeats


def test_summary_statistics_are_exact():
    summary = summarize_repeats({"mean_dice": [0.80, 0.84, 0.88], "empty": []})
    s = summary["mean_dice"]
    assert s["mean"] == pytest.approx(0.84)
    assert s["std"] == pytest.approx(0.04)
    half = 4.302652729749464 * 0.04 / 3 ** 0.5  # t(0.975, df=2)
    assert (s["ci_low"], s["ci_high"]) == (pytest.approx(0.84 - half), pytest.approx(0.84 + half))
    assert s["runs"] == 3 and "empty" not in summary


@pytest.mark.slow
@pytest.mark.mpi
def test_repeats_run_k_times_with_consecutive_seeds(small_config, cli_env):
    config = small_config(ranks=2, epochs=1)
    config.write_text(config.read_text().replace(
        "<run_root>", "<reproducibility><property name=\"repeats\">2</property>"
                      "<property name=\"seed\">7</property></reproducibility>\n    <run_root>"))
    result = subprocess.run([sys.executable, "-m", "autocnnp", "run", str(config)], capture_output=True,
                            text=True, env=cli_env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "== repeat 1/2 (seed 7)" in result.stdout and "== repeat 2/2 (seed 8)" in result.stdout
    assert "Test metrics over 2 runs (mean, std, 95% confidence interval)" in result.stdout
    group = Path(result.stdout.strip().splitlines()[-1].removeprefix("run directory: ").split(" (")[0])
    summary = json.loads((group / "repeats.json").read_text())
    assert summary["seeds"] == [7, 8]
    for k, seed in ((1, 7), (2, 8)):
        spec = json.loads((group / f"repeat-{k}" / "spec.json").read_text())
        assert spec["reproducibility"]["seed"] == seed
        assert (group / f"repeat-{k}" / "test_metrics.json").is_file()
    dice = [json.loads((group / f"repeat-{k}" / "test_metrics.json").read_text())["means"]["mean_dice"]
            for k in (1, 2)]
    assert summary["summary"]["mean_dice"]["mean"] == pytest.approx(sum(dice) / 2)
    assert summary["summary"]["mean_dice"]["runs"] == 2
    report = subprocess.run([sys.executable, "-m", "autocnnp", "report", str(group)], capture_output=True,
                            text=True, env=cli_env, timeout=60)
    assert report.returncode == 0, report.stderr
    assert "| number of runs given; variance reported | **no** | 2 run(s) with seeds 7, 8" in report.stdout
    assert "## Test metrics over 2 runs" in report.stdout and (group / "report.md").is_file()
