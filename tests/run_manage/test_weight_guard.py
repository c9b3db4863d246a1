"""The weight-consistency guard (DESIGN.md section 9) on real MPI ranks.

A dist_strategy plugin that uses a plain optimizer (no gradient averaging) must be stopped
after the first checked steps, on every rank, with the error that explains the usual causes;
the same job with the built-in ring_allreduce passes the guard (see test_data_parallel.py for
that side, where the guard is active and the ranks end bit-identical).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mpi_runs import HERE, launch, mpirun_available, plugin, write_run

from autocnnp.components.demo_data import build_demo_dataset
from autocnnp.components.rank_runtime import divergence_message

pytestmark = [pytest.mark.slow, pytest.mark.mpi,
              pytest.mark.skipif(not mpirun_available(), reason="needs mpirun (openmpi-bin)")]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("guard") / "mni"
    build_demo_dataset(out, size=32, n_slices=20)
    return out


@pytest.mark.parametrize("batchnorm", [False, True], ids=["plain", "batchnorm"])
def test_guard_stops_ranks_that_do_not_average(demo: Path, tmp_path: Path,
                                               batchnorm: bool) -> None:
    wrong = plugin("dist_strategy", HERE / "plain_optimizer.py", "PlainOptimizer",
                   mode="replace", implementation="ring_allreduce")
    # 12 slices, batch 3 per rank: 2 steps per epoch, 3 epochs (the guard checks at step 2)
    run_dir = write_run(tmp_path / "run", demo, lr=0.05, batch=3, epochs=3, ranks=2,
                        plugins=(wrong,), checkpoint_every=1,
                        arch_params={"batchnorm": batchnorm})
    proc = launch(run_dir, 2)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "gradients are not being averaged across ranks" in proc.stderr
    assert "Traceback" not in proc.stderr  # a user-facing error: one line per rank
    for rank in (0, 1):
        record = json.loads((run_dir / "errors" / f"rank-{rank}.json").read_text())
        assert record["type"] == "WeightDivergenceError"
        assert record["rank"] == rank
        spread = float(record["message"].split("by a relative ")[1].split(")")[0])
        assert record["message"] == divergence_message("training step 2", 2, spread)
        assert spread > 1e-7  # far above the guard's tolerance (GUARD_RTOL = 1e-9)
    # stopped inside epoch 1: no epoch finished, no checkpoint, no final model
    assert not (run_dir / "checkpoints").exists()
    assert not (run_dir / "model").exists()


def test_user_errors_stop_every_rank_with_one_line_and_a_record(demo: Path,
                                                                 tmp_path: Path) -> None:
    """Failures go through the same path as the guard's: a user error (here a data folder
    that does not exist) exits 2 with one line per rank and an errors/rank-K.json record."""
    run_dir = write_run(tmp_path / "run", demo / "nowhere", lr=0.05, batch=3, ranks=2)
    proc = launch(run_dir, 2)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    missing = demo / "nowhere" / "train"
    for rank in (0, 1):
        assert f"rank {rank}: error: {missing}: no such data folder" in proc.stderr
        record = json.loads((run_dir / "errors" / f"rank-{rank}.json").read_text())
        assert set(record) == {"rank", "host", "hostname", "pid", "type", "message", "remedy",
                               "user_error", "exit_code", "traceback", "time"}
        assert record["type"] == "DataError" and record["user_error"] is True
        assert "Traceback" in record["traceback"]
    assert proc.stdout == ""


def test_batchnorm_unet_trains_on_three_ranks_with_one_set_of_statistics(
        demo: Path, tmp_path: Path) -> None:
    """BatchNorm's moving mean and variance follow each rank's batches (they differ after a
    step), yet the guard (which compares trainable weights) lets the job train, and the
    statistics are averaged at epoch ends: after training every rank holds bit-identical
    variables, statistics included, and the saved model is the same whichever rank saved it."""
    saver = plugin("checkpoint", HERE / "save_rank_weights.py", "SaveRankWeights")
    # 12 slices, batch 2 per rank on 3 ranks: 2 steps per epoch, 2 epochs, guard on
    run_dir = write_run(tmp_path / "run", demo, lr=0.05, batch=2, epochs=2, ranks=3,
                        plugins=(saver,), checkpoint_every=1, arch_params={"batchnorm": True})
    proc = launch(run_dir, 3)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run_dir / "model").is_dir()

    def arrays(rank: int, tag: str) -> list[np.ndarray]:
        with np.load(run_dir / "weights" / f"rank-{rank}-{tag}.npz") as data:
            return [data[k] for k in sorted(data.files)]

    # the U-Net with batchnorm: 10 BatchNormalization layers, moving mean and variance each
    begin, mid, end = arrays(0, "begin"), arrays(0, "step2"), arrays(0, "end")
    assert len(end) == len(arrays(0, "begin"))
    moved = [i for i in range(len(end)) if not np.array_equal(begin[i], end[i])]
    assert len(moved) == len(end)  # every variable trained, statistics included
    # control: mid-epoch, the statistics of the ranks differ (each saw its own batches)
    differing = [i for i in range(len(mid)) if not np.array_equal(mid[i], arrays(1, "step2")[i])]
    assert len(differing) == 2 * 10, differing
    # after training: every variable of every rank is bit-identical
    for rank in (1, 2):
        other = arrays(rank, "end")
        for i, (a, b) in enumerate(zip(end, other)):
            np.testing.assert_array_equal(a, b, err_msg=f"variable {i} of rank {rank}")
