"""The MNI152 demo dataset: content, split, idempotence and atomic builds."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest

from autocnnp.components import demo_data
from autocnnp.components.datasets import load_split
from autocnnp.components.demo_data import build_demo_dataset, split_of
from autocnnp.errors import DataError


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo") / "mni"
    return out, build_demo_dataset(out, size=32, n_slices=20)


def test_default_build_is_quick_and_has_the_documented_split(tmp_path: Path) -> None:
    start = time.perf_counter()
    meta = build_demo_dataset(tmp_path / "mni")
    assert time.perf_counter() - start < 20
    assert meta["splits"] == {"train": 90, "valid": 30, "test": 30}
    assert meta["image_shape"] == [128, 128]
    image = np.load(tmp_path / "mni" / "train" / "images" / f"{meta['slices']['train'][0]:04d}.npy")
    assert image.shape == (128, 128) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0


def test_labels_are_background_grey_and_white_matter(small: tuple[Path, dict]) -> None:
    out, meta = small
    assert meta["labels"] == {"0": "background", "1": "grey matter", "2": "white matter"}
    mask = np.load(out / "test" / "masks" / f"{meta['slices']['test'][2]:04d}.npy")
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1, 2}
    split = load_split(out / "train", num_classes=3)
    fractions = np.bincount(split.masks.ravel(), minlength=3) / split.masks.size
    assert fractions[0] > 0.5 and fractions[1] > fractions[2] > 0.05


def test_every_fifth_slice_is_test_and_offset_two_is_valid(small: tuple[Path, dict]) -> None:
    _, meta = small
    zs = sorted(z for s in meta["slices"].values() for z in s)
    assert len(zs) == 20 and zs == list(range(zs[0], zs[0] + 20))
    assert meta["slices"]["test"] == zs[0::5]
    assert meta["slices"]["valid"] == zs[2::5]
    assert meta["splits"] == {"train": 12, "valid": 4, "test": 4}


def test_seed_selects_another_fold() -> None:
    fold0 = {i for i in range(50) if split_of(i, 0) == "test"}
    fold1 = {i for i in range(50) if split_of(i, 1) == "test"}
    assert fold0.isdisjoint(fold1) and len(fold1) == 10


def test_dataset_json_holds_every_file_with_its_sha256(small: tuple[Path, dict]) -> None:
    out, meta = small
    on_disk = json.loads((out / "dataset.json").read_text())
    assert on_disk["files"] == meta["files"]
    assert len(meta["files"]) == 40
    for rel, digest in meta["files"].items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == digest
    assert on_disk["source"]["volume_shape"] == [197, 233, 189]
    assert on_disk["parameters"] == {"size": 32, "n_slices": 20, "seed": 0, "format_version": 1}


def test_rebuilding_a_complete_dataset_does_nothing(small: tuple[Path, dict]) -> None:
    out, _ = small
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = build_demo_dataset(out, size=32, n_slices=20)
    assert again["created"] is False
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_other_parameters_into_an_existing_dataset_are_refused(small: tuple[Path, dict]) -> None:
    out, _ = small
    with pytest.raises(DataError) as err:
        build_demo_dataset(out, size=64, n_slices=20)
    assert err.value.message == (
        f"{out}: holds a demo dataset built with {{'size': 32, 'n_slices': 20, 'seed': 0, "
        f"'format_version': 1}}, not {{'size': 64, 'n_slices': 20, 'seed': 0, 'format_version': 1}}")


def test_unrelated_folder_is_not_written_into(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError) as err:
        build_demo_dataset(tmp_path, size=16, n_slices=5)
    assert err.value.message == (f"{tmp_path}: exists, is not empty and holds no dataset.json; "
                                 "refusing to write into it")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_damaged_dataset_is_reported(tmp_path: Path) -> None:
    out = tmp_path / "mni"
    meta = build_demo_dataset(out, size=16, n_slices=5)
    victim = out / next(iter(meta["files"]))
    victim.write_bytes(b"oops")
    with pytest.raises(DataError) as err:
        build_demo_dataset(out, size=16, n_slices=5)
    assert err.value.message == f"{victim}: changed since it was built; the demo dataset at {out} is damaged"


def test_interrupted_build_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = np.save
    calls = {"n": 0}

    def flaky_save(path, array):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        real_save(path, array)

    monkeypatch.setattr(demo_data.np, "save", flaky_save)
    with pytest.raises(KeyboardInterrupt):
        build_demo_dataset(tmp_path / "mni", size=16, n_slices=10)
    # only the (unlocked) lock file of concurrent builds stays
    assert [p.name for p in tmp_path.iterdir()] == [".mni.lock"]
    monkeypatch.setattr(demo_data.np, "save", real_save)
    assert build_demo_dataset(tmp_path / "mni", size=16, n_slices=10)["created"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == [".mni.lock", "mni"]


def test_too_many_slices_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"n_slices must be between 1 and 189, got 500"):
        build_demo_dataset(tmp_path / "x", size=16, n_slices=500)


def test_two_builds_racing_for_one_folder_share_the_result(tmp_path: Path) -> None:
    """Two runs that need the demo data start at once: one builds, the other waits and
    reuses it (before: `OSError: Directory not empty`, and a folder of mode 0700)."""
    import os
    import stat
    import subprocess
    import sys

    out = tmp_path / "mni"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    cmd = [sys.executable, "-m", "autocnnp", "demo-data", str(out), "--size", "16",
           "--slices", "20"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    firsts = sorted(stdout.splitlines()[0].split(":")[0] for stdout, _ in results)
    assert firsts == [f"built demo dataset in {out}",
                      f"demo dataset in {out} is already complete (train 12, valid 4, test 4 "
                      f"slices of 16x16); nothing to do"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == [".mni.lock", "mni"]
