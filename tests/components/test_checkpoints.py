"""CheckpointManager against real damage (issue 10): truncated data, flipped bytes, a garbage
state file, a missing index, a folder left by a killed writer, and a full filesystem (a
2 MB tmpfs). Real TensorFlow checkpoints, no MPI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from autocnnp.components.rank_runtime import CheckpointManager
from autocnnp.diskspace import DiskFullError, disk_full_message

DATA = "ckpt.data-00000-of-00001"


def _model(units: int = 8):
    import tensorflow as tf

    tf.random.set_seed(3)
    model = tf.keras.Sequential([tf.keras.Input((units,)), tf.keras.layers.Dense(units)])
    optimizer = tf.keras.optimizers.legacy.SGD(0.1, momentum=0.9)
    optimizer._create_all_weights(model.trainable_variables)
    return model, optimizer


@pytest.fixture
def saved(tmp_path: Path):
    """Checkpoints of epochs 1 and 2 (different weights) and a model to restore into."""
    model, optimizer = _model()
    manager = CheckpointManager(tmp_path / "checkpoints", keep=3)
    manager.save(model, optimizer, 1, {"logs": {"loss": 1.0}})
    first = [w.copy() for w in model.get_weights()]
    model.set_weights([w + 1.0 for w in first])
    manager.save(model, optimizer, 2, {"logs": {"loss": 0.5}})
    model.set_weights([w * 0 for w in first])
    return manager, model, optimizer, first


def _flip(path: Path, offset: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_checkpoint_carries_a_manifest_that_verifies(saved) -> None:
    manager, *_ = saved
    folder = manager.directory / "epoch-00002"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert sorted(manifest["files"]) == [DATA, "ckpt.index", "state.json"]
    assert manifest["files"]["ckpt.index"]["bytes"] == (folder / "ckpt.index").stat().st_size
    assert CheckpointManager.verify(folder) is None


@pytest.mark.parametrize("damage, reason", [
    ("truncate", "{data} has {n} bytes, the manifest says {size} (truncated or overwritten)"),
    ("flip", "{data} does not match its sha256 in manifest.json (corrupted bytes)"),
    ("garbage_state", "state.json does not match its sha256 in manifest.json (corrupted bytes)"),
    ("missing_index", "ckpt.index is missing"),
    ("garbage_manifest", "manifest.json is unreadable (JSONDecodeError: Expecting value: line 1 "
                         "column 1 (char 0))"),
])
def test_resume_skips_a_damaged_newest_checkpoint_and_says_why(saved, damage: str,
                                                                reason: str) -> None:
    manager, model, optimizer, first = saved
    newest = manager.directory / "epoch-00002"
    size = (newest / DATA).stat().st_size
    if damage == "truncate":
        with open(newest / DATA, "r+b") as handle:
            handle.truncate(size // 2)
    elif damage == "flip":
        _flip(newest / DATA, size // 3)
    elif damage == "garbage_state":
        state = newest / "state.json"  # garbage of the same size: only the checksum tells
        state.write_text("{" + "x" * (state.stat().st_size - 1))
    elif damage == "missing_index":
        (newest / "ckpt.index").unlink()
    else:
        (newest / "manifest.json").write_text("")
    said: list[str] = []
    state, folder = manager.restore_latest(model, optimizer, said.append)
    expected = reason.format(data=DATA, n=size // 2, size=size)
    assert said == [f"checkpoint epoch-00002 skipped: {expected}; kept as epoch-00002.corrupt"]
    assert folder.name == "epoch-00001" and state["epoch"] == 1
    for restored, original in zip(model.get_weights(), first):
        np.testing.assert_array_equal(restored, original)
    assert sorted(p.name for p in manager.directory.iterdir()) == ["epoch-00001",
                                                                   "epoch-00002.corrupt"]
    assert [e for e, _ in manager.list()] == [1]  # the next save of epoch 2 starts afresh


def test_a_checkpoint_tensorflow_cannot_read_is_skipped_too(saved) -> None:
    """Written before checksums existed (no manifest) and then damaged: TensorFlow's own read
    is the last check."""
    manager, model, optimizer, _ = saved
    newest = manager.directory / "epoch-00002"
    (newest / "manifest.json").unlink()
    (newest / "ckpt.index").write_bytes(b"not a checkpoint index")
    said: list[str] = []
    _, folder = manager.restore_latest(model, optimizer, said.append)
    assert folder.name == "epoch-00001"
    assert len(said) == 1 and said[0].startswith(
        "checkpoint epoch-00002 skipped: TensorFlow cannot read it (")
    assert said[0].endswith("; kept as epoch-00002.corrupt")


def test_no_usable_checkpoint_at_all(saved) -> None:
    manager, model, optimizer, _ = saved
    for _, folder in manager.list():
        (folder / "ckpt.index").unlink()
    said: list[str] = []
    assert manager.restore_latest(model, optimizer, said.append) is None
    assert said == [f"checkpoint epoch-0000{e} skipped: ckpt.index is missing; kept as "
                    f"epoch-0000{e}.corrupt" for e in (2, 1)]


def test_stale_folders_of_a_killed_writer_are_removed(saved) -> None:
    manager, *_ = saved
    (manager.directory / ".tmp-epoch-00003-4242").mkdir()
    (manager.directory / ".tmp-epoch-00003-4242" / "ckpt.index").write_bytes(b"half")
    (manager.directory / ".old-epoch-00001-4242").mkdir()
    assert manager.remove_stale() == [".tmp-epoch-00003-4242", ".old-epoch-00001-4242"]
    assert sorted(p.name for p in manager.directory.iterdir()) == ["epoch-00001",
                                                                   "epoch-00002"]


def test_full_disk_names_the_place_and_the_size_and_keeps_earlier_checkpoints(
        small_disk) -> None:
    disk = small_disk("2m")
    model, optimizer = _model(units=400)  # 160k weights + momentum: about 1.3 MB a checkpoint
    manager = CheckpointManager(disk / "run" / "checkpoints", keep=3)
    manager.save(model, optimizer, 1, {"logs": {}})
    need = sum(p.stat().st_size for p in (manager.directory / "epoch-00001").iterdir())
    with pytest.raises(DiskFullError) as caught:
        manager.save(model, optimizer, 2, {"logs": {}})
    error = caught.value
    assert error.message == disk_full_message(manager.directory, need)
    assert error.message.startswith(f"no space left on {manager.directory} (")
    assert error.message.endswith(" MB free), need about 2 MB")
    assert error.remedy == ("free space there (earlier checkpoints are intact: epoch-00001), "
                            f"then continue with: autocnnp run --resume {disk / 'run'}")
    assert error.exit_code == 5
    # the earlier checkpoint is intact and nothing half-written is left
    assert sorted(p.name for p in manager.directory.iterdir()) == ["epoch-00001"]
    assert CheckpointManager.verify(manager.directory / "epoch-00001") is None
