"""The streaming data path: each epoch's order, the shards, lazy reading, the cache choice."""

from __future__ import annotations

import resource
from pathlib import Path

import numpy as np
import pytest

from autocnnp.components.datasets import (AUTO_MEMORY_BYTES, InMemorySamples, check_splits,
                                          choose_cache, epoch_batches, list_split, load_split,
                                          steps_per_epoch)
from autocnnp.components.demo_data import build_demo_dataset
from autocnnp.engine.spec import DataSpec
from autocnnp.errors import DataError


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stream") / "mni"
    build_demo_dataset(out, size=32, n_slices=40)
    return out


@pytest.mark.parametrize("n,size,batch", [(90, 2, 8), (91, 2, 8), (13, 2, 6), (24, 3, 4),
                                          (7, 4, 2), (150, 4, 16), (10, 10, 3), (5, 2, 5)])
def test_every_sample_once_per_epoch_in_disjoint_shards_with_equal_steps(
        n: int, size: int, batch: int) -> None:
    steps = steps_per_epoch(n, size, batch)
    for epoch in range(3):
        plans = [epoch_batches(n, rank, size, batch, 11, epoch) for rank in range(size)]
        assert [len(p) for p in plans] == [steps] * size  # no rank waits at an allreduce
        assert all(1 <= len(b) <= batch for p in plans for b in p)
        seen = np.concatenate([b for p in plans for b in p])
        assert sorted(seen.tolist()) == list(range(n))  # each sample exactly once
        shards = [set(np.concatenate(p).tolist()) for p in plans]
        assert sum(len(s) for s in shards) == n  # disjoint


def test_order_differs_between_epochs_and_repeats_with_the_seed() -> None:
    def plan(seed: int, epoch: int) -> list[list[int]]:
        return [b.tolist() for b in epoch_batches(90, 1, 2, 8, seed, epoch)]

    assert plan(42, 0) != plan(42, 1) != plan(42, 2)
    assert plan(42, 1) == plan(42, 1)  # a resumed run computes the same epoch again
    assert plan(43, 1) != plan(42, 1)
    # a rank's shard changes too, not only its order
    assert {i for b in plan(42, 0) for i in b} != {i for b in plan(42, 1) for i in b}


def test_remainder_rule_for_batch_size_one() -> None:
    """Batch 1 and n not a multiple of the ranks: a rank cannot run one more step than the
    other, so the samples dealt last are left out of that epoch (other ones each epoch)."""
    assert steps_per_epoch(7, 2, 1) == 3
    left_out = []
    for epoch in range(4):
        seen = {int(i) for r in range(2) for b in epoch_batches(7, r, 2, 1, 0, epoch) for i in b}
        assert len(seen) == 6
        left_out.append(next(iter(set(range(7)) - seen)))
    assert len(set(left_out)) > 1
    assert steps_per_epoch(8, 2, 1) == 4  # no remainder: every sample once
    with pytest.raises(ValueError, match="3 samples for 4 ranks"):
        steps_per_epoch(3, 4, 2)


def test_listing_reads_no_pixels_and_samples_equal_load_split(demo: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    from autocnnp.components import datasets

    reads = []
    real = datasets.read_image_file
    monkeypatch.setattr(datasets, "read_image_file", lambda p: reads.append(p) or real(p))
    samples = list_split(demo / "train", num_classes=3, image_size=20)
    assert reads == [] and len(samples) == 24
    assert samples.sample_shape == (20, 20, 1) and len(reads) == 1  # one sample for the shape
    whole = load_split(demo / "train", num_classes=3, image_size=20)
    assert samples.names == whole.names
    x, y = samples.read_batch([5, 0, 23])
    np.testing.assert_array_equal(x, whole.images[[5, 0, 23]])
    np.testing.assert_array_equal(y, whole.masks[[5, 0, 23]])
    x2, y2 = InMemorySamples(whole).read_batch(np.array([5, 0, 23]))
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, y)


def test_volume_slices_stream_like_the_whole_volume(tmp_path: Path) -> None:
    import nibabel as nib

    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for case in ("a", "b"):
        vol = (rng.random((16, 12, 5)) * 900 + 100).astype(np.float32)
        labels = (rng.random((16, 12, 5)) * 3).astype(np.uint8)
        nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "images" / f"{case}.nii.gz"))
        nib.save(nib.Nifti1Image(labels, np.eye(4)), str(tmp_path / "masks" / f"{case}.nii.gz"))
    samples = list_split(tmp_path, num_classes=3)
    whole = load_split(tmp_path, num_classes=3)
    assert len(samples) == 10 and samples.names[7] == f"{tmp_path / 'images' / 'b.nii.gz'}[z=2]"
    order = [7, 1, 9, 0, 4]  # across volumes, as a shuffled epoch reads them
    x, y = samples.read_batch(order)
    np.testing.assert_array_equal(x, whole.images[order])  # per-volume normalisation kept
    np.testing.assert_array_equal(y, whole.masks[order])


def test_a_file_corrupt_past_its_header_is_named_when_read(demo: Path, tmp_path: Path) -> None:
    import shutil

    data = tmp_path / "d"
    shutil.copytree(demo, data)
    victim = sorted((data / "train" / "images").iterdir())[9]
    good = victim.read_bytes()
    victim.write_bytes(good[:len(good) // 2])  # the .npy header survives, the pixels do not
    spec = DataSpec(train=data / "train", valid=data / "valid", test=data / "test",
                    classes=("bg", "gm", "wm"))
    check_splits(spec)  # the launcher's header check cannot see it ...
    samples = list_split(data / "train", num_classes=3)
    with pytest.raises(DataError) as err:  # ... the rank that reads it names it
        samples.read_batch([3, 9])
    assert str(err.value).startswith(f"{victim}: cannot read image: ")
    victim.write_bytes(b"not an npy file")  # a broken header fails before launch
    with pytest.raises(DataError) as err:
        check_splits(spec)
    assert str(err.value).startswith(f"{victim}: cannot read image: ")


def test_launcher_check_compares_headers(demo: Path, tmp_path: Path) -> None:
    import shutil

    data = tmp_path / "d"
    shutil.copytree(demo, data)
    mask = sorted((data / "valid" / "masks").iterdir())[2]
    np.save(mask, np.zeros((16, 16), np.uint8))
    image = data / "valid" / "images" / mask.name
    with pytest.raises(DataError) as err:
        check_splits(DataSpec(train=data / "train", valid=data / "valid",
                              classes=("bg", "gm", "wm")))
    assert err.value.message == (f"{image} and {mask}: image shape (32, 32) does not match "
                                 "mask shape (16, 16)")


def test_launcher_check_memory_does_not_follow_the_data(tmp_path: Path) -> None:
    """3,000 slices of 128x128 (400 MiB as arrays): the check's peak RSS grows by far less."""
    rng = np.random.default_rng(1)
    root = tmp_path / "big"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    image = rng.random((128, 128)).astype(np.float32)
    mask = (rng.random((128, 128)) * 3).astype(np.uint8)
    for i in range(3000):
        np.save(root / "images" / f"{i:05d}.npy", image)
        np.save(root / "masks" / f"{i:05d}.npy", mask)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    check_splits(DataSpec(train=root, classes=("a", "b", "c")))
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 40, f"the header check grew the peak RSS by {grown_mib:.0f} MiB"


def test_cache_choice_by_size_and_by_config() -> None:
    small = choose_cache("auto", 120, (128, 128, 1))
    assert small == ("memory", "auto: the arrays take 15.0 MiB for 120 samples of (128, 128, 1), "
                               "within 256 MiB per rank")
    big = choose_cache("auto", 15000, (128, 128, 1))
    assert big == ("none", "auto: the arrays would take 1875.0 MiB for 15000 samples of "
                           "(128, 128, 1), more than 256 MiB per rank: each rank streams its "
                           "shard")
    assert choose_cache("memory", 15000, (128, 128, 1))[0] == "memory"
    assert choose_cache("none", 2, (8, 8, 1)) == (
        "none", '<data cache="none"> in the config; the arrays would take 0.0 MiB for 2 '
                "samples of (8, 8, 1)")
    assert AUTO_MEMORY_BYTES == 256 * 2**20
