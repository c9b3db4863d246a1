"""The streaming data path on real MPI ranks: what each rank reads, and a file that goes bad
in the middle of training."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mpi_runs import HERE, launch, mpirun_available, plugin, write_run

from autocnnp.components.demo_data import build_demo_dataset

pytestmark = [pytest.mark.slow, pytest.mark.mpi,
              pytest.mark.skipif(not mpirun_available(), reason="needs mpirun (openmpi-bin)")]

EPOCHS = 3


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stream") / "mni"
    build_demo_dataset(out, size=32, n_slices=40)  # 24 training slices
    return out


def recorded(run_dir: Path, rank: int) -> dict:
    return json.loads((run_dir / "samples" / f"rank-{rank}.json").read_text())


def epoch_names(record: dict, epoch: int) -> list[str]:
    return [name for batch in record["plan"][str(epoch)] for name in batch]


def test_every_sample_once_per_epoch_across_ranks_reshuffled_and_repeatable(
        demo: Path, tmp_path: Path) -> None:
    recorder = plugin("checkpoint", HERE / "record_samples.py", "RecordSamples")
    runs = {}
    for name, seed in (("a", 7), ("again", 7), ("other", 8)):
        run_dir = write_run(tmp_path / name, demo, lr=0.01, batch=5, epochs=EPOCHS,
                            plugins=(recorder,), cache="none", seed=seed, valid=True)
        proc = launch(run_dir, 2, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = [recorded(run_dir, r) for r in range(2)]
    ranks = runs["a"]
    everything = sorted(str(p) for p in (demo / "train" / "images").iterdir())
    assert len(everything) == 24
    orders = []
    for epoch in range(EPOCHS):
        names = [epoch_names(ranks[r], epoch) for r in range(2)]
        assert sorted(names[0] + names[1]) == everything  # each sample exactly once
        assert not set(names[0]) & set(names[1])  # disjoint shards
        assert [len(ranks[r]["plan"][str(epoch)]) for r in range(2)] == [3, 3]  # same steps
        orders.append(names[0] + names[1])
        for r in range(2):  # what was planned was read, batch by batch
            read = Counter(tuple(b) for b in ranks[r]["read"])
            assert all(read[tuple(b)] >= 1 for b in ranks[r]["plan"][str(epoch)])
    assert len({tuple(o) for o in orders}) == EPOCHS  # the order differs between epochs
    for r in range(2):  # the same seed repeats every epoch's order; another seed does not
        assert runs["again"][r]["plan"] == ranks[r]["plan"]
        assert runs["other"][r]["plan"] != ranks[r]["plan"]
    log = (tmp_path / "a" / "logs" / "rank-0.log").read_text()
    assert "data cache: none (<data cache=\"none\"> in the config;" in log
    assert "data: 24 training samples in all, 3 steps of up to 5 per epoch on every rank" in log


def test_memory_and_streaming_train_identically(demo: Path, tmp_path: Path) -> None:
    """The cache changes where the pixels come from, not the order: same weights."""
    saver = plugin("checkpoint", HERE / "save_rank_weights.py", "SaveRankWeights")
    ends = {}
    for cache in ("memory", "none"):
        run_dir = write_run(tmp_path / cache, demo, lr=0.05, batch=4, epochs=2,
                            plugins=(saver,), cache=cache)
        proc = launch(run_dir, 2, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        with np.load(run_dir / "weights" / "rank-0-end.npz") as data:
            ends[cache] = [data[k] for k in sorted(data.files)]
        log = (run_dir / "logs" / "rank-0.log").read_text()
        assert f"data cache: {cache} (<data cache=\"{cache}\"> in the config;" in log
    for a, b in zip(ends["memory"], ends["none"]):
        np.testing.assert_array_equal(a, b)


def test_a_file_corrupted_mid_training_fails_the_job_naming_it(demo: Path,
                                                               tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(demo, data)
    corrupter = plugin("checkpoint", HERE / "record_samples.py", "RecordSamples",
                       corrupt_epoch=0, corrupt_rank=1)
    run_dir = write_run(tmp_path / "run", data, lr=0.01, batch=1, epochs=3,
                        plugins=(corrupter,), cache="none", checkpoint_every=1)
    proc = launch(run_dir, 2, timeout=600)  # a hang would raise TimeoutExpired
    victim = (run_dir / "corrupted.txt").read_text()
    assert proc.returncode == 2, proc.stderr[-3000:]
    message = f"{victim}: cannot read image: "
    assert f"rank 1: error: {message}" in proc.stderr
    error = json.loads((run_dir / "errors" / "rank-1.json").read_text())
    assert error["type"] == "DataError" and error["message"].startswith(message)
    # epoch 1 finished and was checkpointed before the file was reached in epoch 2
    assert (run_dir / "checkpoints" / "epoch-00001" / "state.json").is_file()
    assert not (run_dir / "checkpoints" / "epoch-00002").exists()
