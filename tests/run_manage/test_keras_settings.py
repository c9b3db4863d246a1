"""Keras users' settings in the config, on real MPI ranks: AdamW with betas and weight decay,
class weights, early stopping, reduce on plateau, a loss file and initial weights from a
previous run (transfer learning)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """<system_config>
  <task name="imaging_segmentation">
    <parallelism-degree>2</parallelism-degree>
    <CNN_archi><name>unet</name><param name="depth">2</param><param name="base_filters">4</param>{init}</CNN_archi>
    <data format="pairs">
      <train><path>{data}/train</path></train>
      <valid><path>{data}/valid</path></valid>
      <classes>background grey_matter white_matter</classes>
    </data>
    <hyperparameters>
      {hyper}
      <property name="minibatch_size">4</property>
      <property name="end_epoch">{epochs}</property>
    </hyperparameters>
    <lr_policy name="linear_scaling">{policy}</lr_policy>
    <deployment backend="local"><property name="threads_per_rank">1</property></deployment>
    <monitoring><property name="tensorboard">false</property>{monitoring}</monitoring>
    <run_root>{runs}</run_root>
  </task>
</system_config>
"""

pytestmark = [pytest.mark.slow, pytest.mark.mpi,
              pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs mpirun")]


def run(config: Path) -> tuple[subprocess.CompletedProcess, Path]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "autocnnp", "run", str(config)], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result, Path(result.stdout.strip().splitlines()[-1].removeprefix("run directory: "))


def epochs_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in
            (run_dir / "metrics" / "epochs.jsonl").read_text().splitlines()]


def weights_of(run_dir: Path) -> list[np.ndarray]:
    import tensorflow as tf
    return tf.keras.models.load_model(str(run_dir / "model"), compile=False).get_weights()


def test_keras_settings_then_transfer_learning(tmp_path: Path, small_dataset: Path) -> None:
    first = tmp_path / "adamw.xml"
    first.write_text(CONFIG.format(
        init="", data=small_dataset, runs=tmp_path / "runs", epochs=5,
        hyper='<property name="lr">1e-3</property><property name="optimizer">adamw</property>'
              '<property name="beta_1">0.8</property><property name="beta_2">0.99</property>'
              '<property name="weight_decay">0.01</property>'
              '<property name="class_weights">1 2 2</property>'
              '<property name="loss">dice_crossentropy</property>',
        policy='<property name="plateau_patience">1</property>'
               '<property name="plateau_monitor">val_dice</property>',
        monitoring='<property name="early_stopping_patience">2</property>'
                   '<property name="early_stopping_min_delta">10</property>'))
    result, run_a = run(first)
    epochs = epochs_of(run_a)
    # early stopping: epoch 1 sets the best; no later epoch improves val_loss by 10
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    best = epochs[0]["val_loss"]
    assert (f"early stopping after epoch 3: val_loss did not improve by more than 10 for 2 "
            f"epoch(s) (best {best:.4g} at epoch 1)") in result.stdout
    # reduce on plateau (patience 1): the lr halves after each epoch whose val_dice is no
    # better than the best so far, through the policy's scale (linear scaling: 1e-3 x 2)
    best_dice, scale = -1.0, 1.0
    for record in epochs:
        assert record["lr"] == pytest.approx(2e-3 * scale), epochs
        if record["val_dice"] > best_dice:
            best_dice = record["val_dice"]
        else:
            scale *= 0.5
    log = (run_a / "logs" / "rank-0.log").read_text()
    assert "'name': 'AdamW'" in log and "'weight_decay': 0.01" in log
    assert "'beta_1': 0.8" in log and "'beta_2': 0.99" in log
    assert "class_weights=(1.0, 2.0, 2.0)" in log
    assert (run_a / "model" / "saved_model.pb").is_file()  # the weight guard let it through

    # transfer learning: start from run A's model; a loss file; a learning rate so small
    # that the weights stay those of run A
    (tmp_path / "constant_loss.py").write_text(
        "import tensorflow as tf\n\n\ndef loss(y_true, y_pred):\n"
        "    return 7.0 + 0.0 * tf.reduce_mean(y_pred, axis=[1, 2, 3])\n")
    second = tmp_path / "init.xml"
    second.write_text(CONFIG.format(
        init=f"<init>{run_a}</init>", data=small_dataset, runs=tmp_path / "runs", epochs=1,
        hyper='<property name="lr">1e-12</property><property name="optimizer">sgd</property>'
              '<property name="loss">constant_loss.py</property>', policy="", monitoring=""))
    _, run_b = run(second)
    assert epochs_of(run_b)[0]["loss"] == pytest.approx(7.0)  # the file's loss was trained
    log = (run_b / "logs" / "rank-0.log").read_text()
    saved = weights_of(run_a)
    assert f"initialised {len(saved)} weight arrays from {run_a / 'model'}" in log
    for ours, theirs in zip(weights_of(run_b), saved, strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-6)
