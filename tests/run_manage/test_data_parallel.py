"""Correctness of data parallelism, with the real worker on real MPI ranks.

Synchronous data parallelism with averaged gradients and the linear scaling rule must be the
same computation as one worker on the global batch: with plain SGD (no momentum), the same
seed and the same data, 2 ranks with per-rank batch b and lr scaled x2 give, after one step,
the weights one rank gets with batch 2b and the same lr. Every rank saves its weights through
a checkpoint plugin (``save_rank_weights.py``), which also proves that plugin callbacks in
``ctx.values["callbacks"]`` reach ``fit``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mpi_runs import HERE, launch, mpirun_available, plugin, write_run

from autocnnp.components.demo_data import build_demo_dataset

pytestmark = [pytest.mark.slow, pytest.mark.mpi,
              pytest.mark.skipif(not mpirun_available(), reason="needs mpirun (openmpi-bin)")]

BATCH = 6  # the 32x32 demo split below has 12 training slices: 2 ranks x 6 = 1 rank x 12
LR_2 = 0.05  # single-worker lr of the 2-rank run: scaled to 0.1
LR_1 = 0.1  # the 1-rank run uses the scaled lr directly


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dp") / "mni"
    meta = build_demo_dataset(out, size=32, n_slices=20)
    assert meta["splits"]["train"] == 2 * BATCH
    return out


def weights(run_dir: Path, rank: int, tag: str) -> list[np.ndarray]:
    with np.load(run_dir / "weights" / f"rank-{rank}-{tag}.npz") as data:
        return [data[k] for k in sorted(data.files)]


def flat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([a.ravel().astype(np.float64) for a in arrays])


def test_two_ranks_equal_one_rank_with_the_global_batch(demo: Path, tmp_path: Path) -> None:
    saver = plugin("checkpoint", HERE / "save_rank_weights.py", "SaveRankWeights")
    two = write_run(tmp_path / "two", demo, lr=LR_2, batch=BATCH, ranks=2, plugins=(saver,))
    one = write_run(tmp_path / "one", demo, lr=LR_1, batch=2 * BATCH, ranks=1,
                    plugins=(saver,))
    for run_dir, ranks in ((two, 2), (one, 1)):
        proc = launch(run_dir, ranks)
        assert proc.returncode == 0, proc.stderr[-3000:]

    # one step each: the training data is exactly one global batch
    summary = json.loads((two / "metrics" / "train_summary.json").read_text())
    assert summary["ranks"] == 2
    assert (two / "metrics" / "epochs.jsonl").read_text().count("\n") == 1
    lr_logged = json.loads((two / "metrics" / "epochs.jsonl").read_text())["lr"]
    assert lr_logged == pytest.approx(2 * LR_2)

    start_two, start_one = flat(weights(two, 0, "begin")), flat(weights(one, 0, "begin"))
    np.testing.assert_array_equal(start_two, start_one)  # same seed: same initial weights
    np.testing.assert_array_equal(flat(weights(two, 1, "begin")), start_two)

    end_two, end_one = flat(weights(two, 0, "end")), flat(weights(one, 0, "end"))
    step_two, step_one = end_two - start_two, end_one - start_one
    assert np.linalg.norm(step_one) > 1e-3  # the step is real, not a no-op
    rel = np.linalg.norm(step_two - step_one) / np.linalg.norm(step_one)
    assert rel < 1e-4, f"2-rank step differs from the 1-rank global-batch step by {rel:.2e}"

    # all ranks hold identical weights at the end (bitwise: the allreduce result is shared)
    np.testing.assert_array_equal(flat(weights(two, 1, "end")), end_two)


def test_unscaled_lr_is_not_equivalent(demo: Path, tmp_path: Path) -> None:
    """Control: the comparison above can fail. Without the linear scaling rule (constant
    policy) 2 ranks take a step half as long as one rank on the global batch."""
    saver = plugin("checkpoint", HERE / "save_rank_weights.py", "SaveRankWeights")
    two = write_run(tmp_path / "two", demo, lr=LR_1 / 2, batch=BATCH, ranks=2,
                    policy="constant", plugins=(saver,))
    proc = launch(two, 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    step_two = flat(weights(two, 0, "end")) - flat(weights(two, 0, "begin"))
    # Compare with the scaled run's step, which equals the 1-rank step (test above): half.
    scaled = write_run(tmp_path / "scaled", demo, lr=LR_1 / 2, batch=BATCH, ranks=2,
                       plugins=(saver,))
    proc = launch(scaled, 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    step_scaled = flat(weights(scaled, 0, "end")) - flat(weights(scaled, 0, "begin"))
    # (norms, not element-wise: a float32 weight minus its old value keeps only ~7 digits)
    half = step_scaled / 2
    assert np.linalg.norm(step_two - half) / np.linalg.norm(half) < 1e-3
    assert np.linalg.norm(step_scaled - step_two) > 0.4 * np.linalg.norm(step_scaled)


def test_resume_continues_the_same_training(demo: Path, tmp_path: Path) -> None:
    """1 epoch + resume for 1 more == 2 uninterrupted epochs, on 2 ranks, with SGD momentum:
    rank 0 restores model *and* optimizer slots from the checkpoint and every rank takes
    them (without the momentum slots the second step would differ by 0.9 x the first)."""
    saver = plugin("checkpoint", HERE / "save_rank_weights.py", "SaveRankWeights")
    common = dict(lr=LR_2, batch=BATCH, ranks=2, momentum=0.9, plugins=(saver,),
                  checkpoint_every=1)
    straight = write_run(tmp_path / "straight", demo, epochs=2, **common)
    assert launch(straight, 2).returncode == 0
    resumed = write_run(tmp_path / "resumed", demo, epochs=1, **common)
    assert launch(resumed, 2).returncode == 0
    assert (resumed / "checkpoints" / "epoch-00001" / "state.json").is_file()
    # a crash after epochs past the last checkpoint were logged (epoch 3 on a later config,
    # epoch 2 here, and a line cut short): they run again and must not be listed twice
    epochs_log = resumed / "metrics" / "epochs.jsonl"
    first = epochs_log.read_text()
    assert [json.loads(line)["epoch"] for line in first.splitlines()] == [1]
    epochs_log.write_text(first + json.dumps({"epoch": 2, "loss": 9.0}) + "\n"
                          + json.dumps({"epoch": 3, "loss": 9.0}) + "\n" + '{"epoch": 4, "lo')
    write_run(resumed, demo, epochs=2, **common)  # the user extends end_epoch, then resumes
    proc = launch(resumed, 2, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[0] == "resuming from checkpoint epoch-00001 (epoch 1)"
    assert proc.stdout.splitlines()[1].startswith("epoch 2/2  loss ")
    log = (resumed / "logs" / "rank-0.log").read_text()
    assert f"resuming from {resumed / 'checkpoints' / 'epoch-00001'} (epoch 1)" in log
    records = [json.loads(line) for line in epochs_log.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]  # each epoch once, 1..end
    assert records[0] == json.loads(first)  # the epoch before the checkpoint is kept as is
    assert records[1]["loss"] != 9.0  # epoch 2 is the resumed run's, not the stale line

    begin = flat(weights(straight, 0, "begin"))
    want = flat(weights(straight, 0, "end")) - begin
    for rank in (0, 1):
        got = flat(weights(resumed, rank, "end")) - begin
        rel = np.linalg.norm(got - want) / np.linalg.norm(want)
        assert rel < 1e-4, f"rank {rank}: resumed weights differ by {rel:.2e}"
