"""``predict`` and ``evaluate`` read the Medical Segmentation Decathlon layout directly:
imagesTs (or a run's split of imagesTr) to predict, labelsTr to score.

The model is a fixed 1x1 convolution (class 1 where the first input channel, normalised, is
above 0.5) saved as training saves models, so every expected mask is known exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
nib = pytest.importorskip("nibabel")

from autocnnp.cli import main  # noqa: E402
from autocnnp.components.datasets import load_channels  # noqa: E402
from autocnnp.components.segeval import SegEvaluator  # noqa: E402
from autocnnp.components.training import MODEL_META  # noqa: E402


def _fixed_model(run: Path, channels: int, trained_on: list[int] | None) -> Path:
    inputs = tf.keras.Input((32, 32, channels))
    conv = tf.keras.layers.Conv2D(2, 1, activation="softmax")
    model = tf.keras.Model(inputs, conv(inputs))
    kernel = np.zeros((1, 1, channels, 2), "float32")
    kernel[0, 0, 0, 1] = 40.0  # only the first input channel counts
    conv.set_weights([kernel, np.array([0.0, -20.0], "float32")])
    model.save(str(run / "model"), save_format="tf")
    (run / "model" / MODEL_META).write_text(json.dumps(
        {"classes": ["background", "bright"], "num_classes": 2,
         "input_shape": [32, 32, channels], "channels": trained_on}))
    return run


def _expected(volume_file: Path, channel: int) -> np.ndarray:
    return (load_channels(volume_file, (channel,))[..., 0] > 0.5).astype(np.uint8)


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    from autocnnp.components.demo_data import build_msd_demo

    out = tmp_path_factory.mktemp("msd") / "Task92_Brats4"
    build_msd_demo(out, cases=5, test_cases=2, size=32, depth=8, modalities=4)
    return out


def test_predict_an_msd_task_folder_predicts_its_imagests(tmp_path, task) -> None:
    run = _fixed_model(tmp_path / "run", 2, [3, 0])  # trained on T2w and FLAIR
    out = tmp_path / "preds"
    assert main(["predict", str(run), str(task), str(out), "--no-progress"]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["brain_005.nii.gz", "brain_006.nii.gz"]  # dataset.json's "test"
    for name in written:
        source = task / "imagesTs" / name
        pred = nib.load(str(out / name))
        assert pred.shape == (32, 32, 8)
        np.testing.assert_array_equal(pred.affine, nib.load(str(source)).affine)
        np.testing.assert_array_equal(np.asanyarray(pred.dataobj), _expected(source, 3))
    # --channels overrides what the model was trained on
    other = tmp_path / "flair"
    assert main(["predict", str(run), str(task), str(other), "--channels", "flair,t1w",
                 "--no-progress"]) == 0
    np.testing.assert_array_equal(np.asanyarray(nib.load(str(other / written[0])).dataobj),
                                  _expected(task / "imagesTs" / written[0], 0))


def test_predict_and_evaluate_a_split_of_imagestr(tmp_path, task, capsys) -> None:
    run = _fixed_model(tmp_path / "run", 4, None)
    (run / "splits.json").write_text(json.dumps(
        {"splits": {"train": ["brain_000", "brain_002", "brain_003"], "valid": [],
                    "test": ["brain_004", "brain_001"]}}))
    out = tmp_path / "preds"
    assert main(["predict", str(run), str(task), str(out), "--split", "test",
                 "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["brain_001.nii.gz", "brain_004.nii.gz"]
    capsys.readouterr()
    metrics = tmp_path / "m.json"
    assert main(["evaluate", str(out), str(task), "--splits", str(run), "--split", "test",
                 "--classes", "3", "--no-hd95", "--json", str(metrics)]) == 0
    expected = SegEvaluator(3, hd95=False)
    for case in ("brain_004", "brain_001"):
        truth = np.asanyarray(nib.load(str(task / "labelsTr" / f"{case}.nii.gz")).dataobj)
        expected.add(truth.astype(np.int32),
                     _expected(task / "imagesTr" / f"{case}.nii.gz", 0).astype(np.int32))
    result = json.loads(metrics.read_text())
    assert result["confusion_matrix"] == expected.result().confusion.tolist()
    assert result["items"] == 2
    # without the split, every labelled case needs a prediction
    assert main(["evaluate", str(out), str(task), "--classes", "3", "--no-hd95"]) == 2
    assert capsys.readouterr().err.startswith(
        f"autocnnp evaluate: error: {task / 'labelsTr' / 'brain_000.nii.gz'}: no prediction "
        f"named brain_000.* in {out}")


def test_predict_split_needs_a_case_level_run(tmp_path, task, capsys) -> None:
    run = _fixed_model(tmp_path / "run", 4, None)
    assert main(["predict", str(run), str(task), str(tmp_path / "o"), "--split", "test",
                 "--no-progress"]) == 1
    assert capsys.readouterr().err == (
        f"autocnnp predict: error: {run / 'splits.json'}: no such file: the run has no "
        f"case-level split\n  remedy: --split needs a run trained with <cases> and <split>\n")
