"""The torch engine's model, TensorBoard files and BatchNorm statistics, on one real run:
2 MPI ranks (Gloo, DistributedDataParallel) train a BatchNorm U-Net for 2 epochs with a
validation split, TensorBoard on; then

- ``autocnnp predict`` rebuilds the model from ``model/`` and its masks equal what the
  saved state dict gives in this process;
- ``tensorboard/train`` and ``tensorboard/validation`` hold the scalars Keras's TensorBoard
  callback writes, one per epoch, equal to ``metrics/epochs.jsonl``;
- every rank ends with the mean of the ranks' own running statistics (the Horovod engine's
  rule, ``test_weight_guard.py``), not rank 0's, and the saved model holds them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mpi_runs import HERE, mpirun_available, plugin, torch_launch, write_run

from autocnnp.components.demo_data import build_demo_dataset
from autocnnp.engine.spec import ActionChoice

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.slow, pytest.mark.mpi,
              pytest.mark.skipif(not mpirun_available(), reason="needs mpirun (openmpi-bin)")]

TORCH_DDP = ActionChoice(type="dist_strategy", implementation="torch_ddp")
UNET = {"depth": 3, "base_filters": 4, "batchnorm": True}  # write_run's U-Net, with BatchNorm


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("torch-tools") / "mni"
    build_demo_dataset(out, size=32, n_slices=20)
    return out


@pytest.fixture(scope="module")
def trained(demo: Path) -> Path:
    """12 training slices, batch 3 per rank: 2 steps per epoch on each rank's own shard."""
    saver = plugin("checkpoint", HERE / "save_rank_weights_torch.py", "SaveRankWeightsTorch")
    run = write_run(demo.parent / "run", demo, lr=0.05, batch=3, epochs=2, ranks=2,
                    momentum=0.9, valid=True, plugins=(TORCH_DDP, saver), checkpoint_every=1,
                    arch_params={"batchnorm": True}, tensorboard=True)
    proc = torch_launch(run, 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def arrays(run: Path, rank: int, tag: str) -> list[np.ndarray]:
    with np.load(run / "weights" / f"rank-{rank}-{tag}.npz") as data:
        return [data[k] for k in sorted(data.files)]


def test_predict_rebuilds_the_torch_model(trained: Path, demo: Path, tmp_path: Path) -> None:
    from autocnnp.cli import main
    from autocnnp.components.datasets import normalize_unit, read_image_file
    from autocnnp.components.models.torch_models import build_unet

    out = tmp_path / "pred"
    assert main(["predict", str(trained), str(demo / "test"), str(out), "--no-progress"]) == 0
    files = sorted((demo / "test" / "images").glob("*.npy"))
    assert len(files) == 4
    model = build_unet((32, 32, 1), 3, **UNET)
    model.load_state_dict(torch.load(trained / "model" / "model.pt"))
    model.eval()
    images = np.stack([normalize_unit(read_image_file(f), f) for f in files]).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(images[:, None])).argmax(dim=1).numpy()
    assert len(np.unique(want)) > 1  # a trained model's masks, not one class everywhere
    for file, expected in zip(files, want):
        got = np.load(out / file.name)
        assert got.dtype == np.uint8 and got.shape == (32, 32)
        np.testing.assert_array_equal(got, expected)


def test_predict_ensembles_the_torch_models_of_a_group(trained: Path, demo: Path,
                                                      tmp_path: Path) -> None:
    """A group whose members are torch runs: the mean of their probabilities. Here the
    members are the same model, one of them nudged towards class 2 (its output bias), so
    that the ensemble's masks differ from the first member's."""
    import shutil

    from autocnnp.cli import main
    from autocnnp.components.datasets import normalize_unit, read_image_file
    from autocnnp.components.torch_training import load_model

    group = tmp_path / "group"
    for name in ("a", "b"):
        shutil.copytree(trained / "model", group / name / "model")
    state = torch.load(group / "b" / "model" / "model.pt")
    state["classes.bias"] += torch.tensor([0.0, 0.0, 2.0])  # the U-Net's last 1x1 convolution
    torch.save(state, group / "b" / "model" / "model.pt")
    (group / "group.json").write_text(json.dumps({"members": ["a", "b"]}))
    assert main(["predict", str(group), str(demo / "test"), str(tmp_path / "pred"),
                 "--no-progress"]) == 0
    files = sorted((demo / "test" / "images").glob("*.npy"))
    images = np.stack([normalize_unit(read_image_file(f), f) for f in files])
    members = [load_model(group / name / "model",
                          json.loads((group / name / "model" / "autocnnp.json").read_text()))
               for name in ("a", "b")]
    probs = [m.predict(images[..., None].astype(np.float32)) for m in members]
    want = ((probs[0] + probs[1]) / 2).argmax(axis=-1)
    assert not np.array_equal(want, probs[0].argmax(axis=-1))
    for k, file in enumerate(files):
        np.testing.assert_array_equal(np.load(tmp_path / "pred" / file.name), want[k])


def test_tensorboard_holds_the_keras_callbacks_scalars(trained: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    records = [json.loads(line) for line in
               (trained / "metrics" / "epochs.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    expected = {"train": {"epoch_loss": "loss", "epoch_dice": "dice", "epoch_lr": "lr"},
                "validation": {"epoch_loss": "val_loss", "epoch_dice": "val_dice"}}
    assert {p.name for p in (trained / "tensorboard").iterdir()} <= {"train", "validation",
                                                                     "system"}
    for folder, tags in expected.items():
        # rank 0 alone writes them: one file per folder
        assert len(list((trained / "tensorboard" / folder).glob("events.out.tfevents.*"))) == 1
        events = EventAccumulator(str(trained / "tensorboard" / folder))
        events.Reload()
        assert sorted(events.Tags()["tensors"]) == sorted(tags)
        for tag, key in tags.items():
            scalars = events.Tensors(tag)
            assert [s.step for s in scalars] == [0, 1]  # Keras's epoch numbers
            values = [float(tensor_util.make_ndarray(s.tensor_proto)) for s in scalars]
            assert values == pytest.approx([r[key] for r in records], rel=1e-6)


def test_batchnorm_statistics_are_the_mean_of_the_ranks(trained: Path) -> None:
    saved = torch.load(trained / "model" / "model.pt")
    checkpoint = torch.load(trained / "checkpoints" / "epoch-00002" / "state.pt",
                            weights_only=False)["model"]
    names = sorted(k for k in saved if not k.endswith("num_batches_tracked"))
    stats = [i for i, name in enumerate(names) if name.endswith(("running_mean", "running_var"))]
    assert len(stats) == 2 * 10  # 10 BatchNorm layers, mean and variance each
    # "last": each rank's buffers after its last training step, before the epoch-end average
    own = [arrays(trained, rank, "last") for rank in (0, 1)]
    end = [arrays(trained, rank, "end") for rank in (0, 1)]
    for i in stats:
        assert not np.array_equal(own[0][i], own[1][i]), names[i]  # each rank its own shard
        np.testing.assert_array_equal(end[1][i], end[0][i], err_msg=names[i])
        np.testing.assert_allclose(end[0][i], (own[0][i] + own[1][i]) / 2, rtol=1e-6,
                                   err_msg=names[i])
        assert not np.allclose(end[0][i], own[0][i], rtol=1e-6), names[i]  # not rank 0's
        np.testing.assert_array_equal(saved[names[i]].numpy(), end[0][i], err_msg=names[i])
        np.testing.assert_array_equal(checkpoint[names[i]].numpy(), end[0][i], err_msg=names[i])
    # every other variable is identical on both ranks too, and every rank counted 4 batches
    for i, (a, b) in enumerate(zip(*end)):
        np.testing.assert_array_equal(a, b, err_msg=names[i])
    counts = {int(v) for k, v in saved.items() if k.endswith("num_batches_tracked")}
    assert counts == {4}


def test_a_torch_model_without_its_architecture_file_says_how_to_add_it(tmp_path: Path) -> None:
    from autocnnp.cli.predict import load_run_model
    from autocnnp.errors import AutocnnpError

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "autocnnp.json").write_text(json.dumps(
        {"engine": "torch", "architecture": "/data/archi/U-Net.py", "params": {},
         "input_shape": [32, 32, 1], "num_classes": 3}))
    with pytest.raises(AutocnnpError) as info:
        load_run_model(tmp_path)
    assert info.value.message == (
        f"{tmp_path / 'model'}: the model's architecture file /data/archi/U-Net.py was not "
        f"saved with it (a run of an earlier version)")
    assert info.value.remedy == (
        f'copy U-Net.py into {tmp_path / "model"} as architecture.py and add '
        f'"architecture_file": "architecture.py" to autocnnp.json')
