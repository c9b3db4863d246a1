"""k-fold cross-validation on a folder of MSD cases: real trainings (2 MPI ranks each), one per
fold, a split with no case in two folds, per-case metrics, mean and sd over the folds, resume
fold by fold, and the ensemble of the fold models predicting imagesTs."""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

CV_CONFIG = """<system_config>
  <task name="imaging_segmentation">
    <parallelism-degree>2</parallelism-degree>
    <CNN_archi><name>unet</name><param name="depth">2</param><param name="base_filters">4</param></CNN_archi>
    <data format="msd">
      <cases><path>{cases}</path></cases>
      <split folds="3" seed="1" stratify="site"/>
      <classes>background grey_matter white_matter</classes>
    </data>
    <hyperparameters>
      <property name="lr">1e-3</property>
      <property name="optimizer">adam</property>
      <property name="loss">dice_crossentropy</property>
      <property name="minibatch_size">4</property>
      <property name="end_epoch">2</property>
    </hyperparameters>
    <deployment backend="local"><property name="threads_per_rank">1</property></deployment>
    <run_root>{runs}</run_root>
  </task>
</system_config>
"""


def _autocnnp(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autocnnp", *args], capture_output=True,
                          text=True, env=env, timeout=900)


def _group(stdout: str) -> Path:
    return Path(stdout.strip().splitlines()[-1].removeprefix("run directory: ").split(" (")[0])


@pytest.mark.slow
@pytest.mark.mpi
def test_three_fold_cross_validation(tmp_path, msd_cases, cli_env):
    config = tmp_path / "cv.xml"
    config.write_text(CV_CONFIG.format(cases=msd_cases, runs=tmp_path / "runs"))
    done = _autocnnp(["run", str(config)], cli_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "group mode: data_parallel: one training at a time, 2 rank(s) each" in done.stdout
    assert "== fold 1/3" in done.stdout and "== fold 3/3" in done.stdout
    assert "Test metrics over 3 folds (mean, std, 95% confidence interval)" in done.stdout
    group = _group(done.stdout)
    assert done.stdout.strip().endswith(f"({'fold-1 ... fold-3'}, folds.json)")

    # the split: every case in exactly one fold, each fold's test split its held-out fold
    record = json.loads((group / "splits.json").read_text())
    folds = record["folds"]
    everything = [case for fold in folds for case in fold]
    assert sorted(everything) == [f"brain_{k:03d}" for k in range(9)]
    assert len(set(everything)) == len(everything) == 9
    for k, fold in enumerate(folds, start=1):
        own = json.loads((group / f"fold-{k}" / "splits.json").read_text())["splits"]
        assert own["test"] == fold
        assert not set(own["train"]) & set(own["test"])
        assert sorted(own["train"] + own["test"]) == sorted(everything)
        sites = {record["strata"][c] for c in fold}
        assert sites == {"A", "B"}  # stratified: both sites in every fold

    # per fold and over the folds
    summary = json.loads((group / "folds.json").read_text())
    values = []
    for k, fold in enumerate(folds, start=1):
        metrics = json.loads((group / f"fold-{k}" / "test_metrics.json").read_text())
        assert metrics["cases"] == len(fold) and metrics["samples"] == 8 * len(fold)
        rows = list(csv.DictReader(open(group / f"fold-{k}" / "per_case.csv")))
        assert sorted(r["case"] for r in rows) == fold
        # cases are equal-sized, so the mean of their pixel accuracies is the fold's
        assert statistics.mean(float(r["pixel_accuracy"]) for r in rows) == pytest.approx(
            metrics["means"]["pixel_accuracy"])
        values.append(metrics["means"]["mean_dice_foreground"])
    dice = summary["summary"]["mean_dice_foreground"]
    assert dice["mean"] == pytest.approx(statistics.mean(values))
    assert dice["std"] == pytest.approx(statistics.stdev(values))
    assert dice["ci_low"] < dice["mean"] < dice["ci_high"] and dice["runs"] == 3
    pooled = list(csv.DictReader(open(group / "per_case.csv")))
    assert sorted(r["case"] for r in pooled) == sorted(everything)
    assert summary["per_case_summary"]["rows"] == 9

    # the ensemble of the three fold models predicts the unlabelled imagesTs
    out = tmp_path / "preds"
    predicted = _autocnnp(["predict", str(group), str(msd_cases / "imagesTs"), str(out),
                           "--no-progress"], cli_env)
    assert predicted.returncode == 0, predicted.stderr
    assert predicted.stdout.splitlines()[0] == ("ensemble of 3 models (fold-1, fold-2, fold-3): "
                                                "the mean of their softmax outputs")
    import nibabel as nib
    import tensorflow as tf

    from autocnnp.components.datasets import load_volume, normalize_unit

    source = msd_cases / "imagesTs" / "brain_009.nii.gz"
    labels = np.asarray(nib.load(str(out / "brain_009.nii.gz")).dataobj)
    volume = normalize_unit(load_volume(source)[0], source)
    slices = np.moveaxis(volume, 2, 0)[..., None].astype(np.float32)
    models = [tf.keras.models.load_model(str(group / f"fold-{k}" / "model"), compile=False)
              for k in (1, 2, 3)]
    mean = sum(np.asarray(m.predict(slices, verbose=0)) for m in models) / 3
    np.testing.assert_array_equal(labels, np.moveaxis(np.argmax(mean, axis=-1), 0, 2))
    single = np.argmax(np.asarray(models[0].predict(slices, verbose=0)), axis=-1)
    assert labels.shape == volume.shape and set(np.unique(labels)) <= {0, 1, 2}
    assert single.shape == mean.shape[:3]

    # folds resume one by one: a lost fold runs again, finished ones are kept
    import shutil

    kept = (group / "fold-1" / "test_metrics.json").read_bytes()
    shutil.rmtree(group / "fold-2")
    (group / "folds.json").unlink()
    resumed = _autocnnp(["run", "--resume", str(group)], cli_env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "== fold 1/3: finished before; kept" in resumed.stdout
    assert "== fold 3/3: finished before; kept" in resumed.stdout
    assert "== fold 2/3\n" in resumed.stdout
    assert (group / "fold-1" / "test_metrics.json").read_bytes() == kept
    assert json.loads((group / "fold-2" / "splits.json").read_text())["splits"]["test"] == folds[1]
    assert json.loads((group / "folds.json").read_text())["summary"]["mean_dice_foreground"]["runs"] == 3
