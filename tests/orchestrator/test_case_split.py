"""A case-level split by fractions, for real: one training reads only its cases, evaluates
only the test cases (per_case.csv), writes splits.json, and a later run reuses the file."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = """<system_config>
  <task name="imaging_segmentation">
    <parallelism-degree>1</parallelism-degree>
    <CNN_archi><name>unet</name><param name="depth">2</param><param name="base_filters">4</param></CNN_archi>
    <data format="msd">
      <cases><path>{cases}</path></cases>
      {split}
      <classes>background grey_matter white_matter</classes>
    </data>
    <hyperparameters>
      <property name="lr">1e-3</property>
      <property name="optimizer">adam</property>
      <property name="minibatch_size">4</property>
      <property name="end_epoch">1</property>
    </hyperparameters>
    <deployment backend="local"><property name="threads_per_rank">1</property></deployment>
    <run_root>{runs}</run_root>
  </task>
</system_config>
"""


def _run(tmp_path: Path, name: str, split: str, cases: Path, env: dict) -> Path:
    config = tmp_path / name
    config.write_text(CONFIG.format(cases=cases, split=split, runs=tmp_path / "runs"))
    done = subprocess.run([sys.executable, "-m", "autocnnp", "run", str(config)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return Path(done.stdout.strip().splitlines()[-1].removeprefix("run directory: "))


@pytest.mark.slow
@pytest.mark.mpi
def test_fraction_split_reads_only_its_cases(tmp_path, msd_cases, cli_env):
    run = _run(tmp_path, "a.xml", '<split test="0.34" valid="0.2" seed="3"/>', msd_cases, cli_env)
    record = json.loads((run / "splits.json").read_text())
    split = record["splits"]
    assert [len(split[k]) for k in ("train", "valid", "test")] == [4, 2, 3]
    assert sorted(split["train"] + split["valid"] + split["test"]) == record["cases"]
    spec = json.loads((run / "spec.json").read_text())
    assert spec["data"]["cases"] == split  # what --resume reads
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert (metrics["cases"], metrics["samples"]) == (3, 24)
    rows = list(csv.DictReader(open(run / "per_case.csv")))
    assert sorted(r["case"] for r in rows) == split["test"]
    assert all(r["slices"] == "8" for r in rows)
    manifest = json.loads((run / "manifest.json").read_text())["data"]
    assert (manifest["train"]["samples"], manifest["valid"]["samples"], manifest["test"]["cases"]) == (32, 16, 3)
    report = subprocess.run([sys.executable, "-m", "autocnnp", "report", str(run)],
                            capture_output=True, text=True, env=cli_env, timeout=120)
    assert (f"| train/validation/test allocation stated | yes | case-level split of 9 cases of "
            f"{msd_cases} (seed 3): train 4, valid 2, test 3 cases; the slices of a case never "
            f"cross a split |") in report.stdout

    again = _run(tmp_path, "b.xml", f'<split seed="9" file="{run / "splits.json"}"/>',
                 msd_cases, cli_env)
    reused = json.loads((again / "splits.json").read_text())
    assert reused["splits"] == split
    assert (reused["seed"], reused["file"]) == (3, str(run / "splits.json"))
