"""The divergence stop beyond NaN (issue 14), with real ranks: a loss that runs away to 50x
its best while staying finite stops every rank at that epoch end with exit code 7, naming the
epoch, the best epoch and the last good checkpoint; off by default."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mpi_runs import HERE, mpirun_available

from autocnnp.components.divergence import DivergenceCheck, LOSS_DIVERGED_REMEDY

pytestmark = [pytest.mark.slow, pytest.mark.mpi,
              pytest.mark.skipif(not mpirun_available(), reason="needs mpirun (openmpi-bin)")]

CONFIG = """<system_config>
  <task name="imaging_segmentation">
    <parallelism-degree>2</parallelism-degree>
    <CNN_archi><name>unet</name><param name="depth">2</param><param name="base_filters">4</param></CNN_archi>
    <CNN-Parallelism-Generator>
      <module name="train_strategy_def">
        <action class="extensible" type="checkpoint">
          <value name="RunAway"><path>{plugin}</path></value>
        </action>
      </module>
    </CNN-Parallelism-Generator>
    <data format="pairs">
      <train><path>{data}/train</path></train>
      <valid><path>{data}/valid</path></valid>
      <classes>background grey_matter white_matter</classes>
    </data>
    <hyperparameters>
      <property name="lr">1e-3</property>
      <property name="optimizer">adam</property>
      <property name="loss">{loss}</property>
      <property name="minibatch_size">4</property>
      <property name="end_epoch">5</property>
    </hyperparameters>
    <deployment backend="local"><property name="threads_per_rank">1</property></deployment>
    <monitoring>{monitoring}
      <property name="tensorboard">false</property>
    </monitoring>
    <run_root>{runs}</run_root>
  </task>
</system_config>
"""


def write(tmp_path, small_dataset, monitoring: str):
    config = tmp_path / "runaway.xml"
    config.write_text(CONFIG.format(plugin=HERE / "runaway_plugin.py", loss=HERE / "runaway_loss.py",
                                    data=small_dataset, runs=tmp_path / "runs",
                                    monitoring=monitoring))
    return config


def test_a_runaway_loss_stops_every_rank_with_exit_code_7(small_dataset, cli_env, tmp_path):
    config = write(tmp_path, small_dataset, '\n      <property name="divergence_factor">3</property>')
    proc = subprocess.run([sys.executable, "-m", "autocnnp", "run", str(config)],
                          capture_output=True, text=True, env=cli_env, timeout=600)
    assert proc.returncode == 7, proc.stdout + proc.stderr
    run_dir = next((tmp_path / "runs").glob("runaway-*"))
    epochs = [json.loads(l) for l in (run_dir / "metrics" / "epochs.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2]  # the diverged epoch 3 is not logged
    best = min(epochs, key=lambda e: e["loss"])
    checkpoint = run_dir / "checkpoints" / "epoch-00002"
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("epoch-*")) == \
        ["epoch-00001", "epoch-00002"]
    for rank in (0, 1):
        record = json.loads((run_dir / "errors" / f"rank-{rank}.json").read_text())
        assert record["type"] == "LossDivergedError" and record["exit_code"] == 7
        assert record["remedy"] == LOSS_DIVERGED_REMEDY
        message = record["message"]
        prefix = "training diverged at the end of epoch 3: the loss "
        assert message.startswith(prefix), message
        loss = float(message[len(prefix):].split()[0])
        assert loss > 3 * best["loss"]
        assert message == (f"{prefix}{loss:.4g} is above 3 x its best ({best['loss']:.4g} at "
                           f"epoch {best['epoch']}); every rank (2, on the averaged metrics) "
                           f"stopped there. Last good checkpoint: {checkpoint} (epoch 2)")
    assert "autocnnp run: error: rank " in proc.stderr
    assert f"remedy: {LOSS_DIVERGED_REMEDY}" in proc.stderr
    state = json.loads((run_dir / "state.json").read_text())
    assert state["state"] == "failed" and state["exit_code"] == 7
    assert not (run_dir / "model").exists()


def test_the_same_runaway_trains_to_the_end_when_the_stop_is_off(small_dataset, cli_env, tmp_path):
    config = write(tmp_path, small_dataset, "")
    proc = subprocess.run([sys.executable, "-m", "autocnnp", "run", str(config)],
                          capture_output=True, text=True, env=cli_env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "epoch 5/5" in proc.stdout


def test_collapse_and_runaway_verdicts():
    check = DivergenceCheck(factor=2.0, fraction=0.5, monitor="val_dice")
    assert check.update(1, {"loss": 1.0, "val_dice": 0.2}) is None
    assert check.update(2, {"loss": 0.5, "val_dice": 0.8}) is None
    assert check.update(3, {"loss": 0.9, "val_dice": 0.5}) is None  # worse, within bounds
    assert check.update(4, {"loss": 0.6, "val_dice": 0.39}) == \
        "val_dice 0.39 fell below 0.5 x its best (0.8 at epoch 2)"
    assert check.update(5, {"loss": 1.2, "val_dice": 0.8}) == \
        "the loss 1.2 is above 2 x its best (0.5 at epoch 2)"
    assert DivergenceCheck(factor=2.0).update(1, {"loss": float("nan")}) is None  # NaN: exit 4's
