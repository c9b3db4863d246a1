"""``autocnnp predict``: masks in the input's geometry for images and NIfTI volumes.

The "trained" model is a fixed 1x1 convolution (class 1 where the normalised intensity is
above 0.5), saved the way training saves models, so the expected masks are known exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
nib = pytest.importorskip("nibabel")

from autocnnp.cli import main  # noqa: E402
from autocnnp.components.training import MODEL_META  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    inputs = tf.keras.Input((16, 16, 1))
    conv = tf.keras.layers.Conv2D(2, 1, activation="softmax")
    model = tf.keras.Model(inputs, conv(inputs))
    conv.set_weights([np.array([[[[0.0, 40.0]]]], "float32"), np.array([0.0, -20.0], "float32")])
    model.save(str(run / "model"), save_format="tf")
    (run / "model" / MODEL_META).write_text(json.dumps(
        {"classes": ["background", "bright"], "num_classes": 2, "input_shape": [16, 16, 1]}))
    return run


def blocks(shape: tuple[int, ...]) -> np.ndarray:
    """Left half dark (class 0), right half bright (class 1), far from the threshold."""
    image = np.full(shape, 10.0, dtype="float32")
    image[:, shape[1] // 2:] = 200.0
    return image


def test_images_keep_their_size_and_format(run_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    src = tmp_path / "in" / "images"
    src.mkdir(parents=True)
    np.save(src / "a.npy", blocks((24, 32)))
    Image.fromarray(blocks((40, 48)).astype(np.uint8)).save(src / "b.png")
    out = tmp_path / "out"
    assert main(["predict", str(run_dir), str(tmp_path / "in"), str(out), "--no-progress"]) == 0
    a = np.load(out / "a.npy")
    b = np.asarray(Image.open(out / "b.png"))
    for mask, shape in ((a, (24, 32)), (b, (40, 48))):
        assert mask.shape == shape
        np.testing.assert_array_equal(mask, (blocks(shape) > 100).astype(mask.dtype))


def test_nifti_volume_keeps_shape_and_affine(run_dir: Path, tmp_path: Path) -> None:
    volume = np.stack([blocks((20, 24))] * 5, axis=-1).astype(np.int16)
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    affine[:3, 3] = [-12.0, 4.0, 30.0]
    source = tmp_path / "case_001.nii.gz"
    nib.save(nib.Nifti1Image(volume, affine), str(source))
    out = tmp_path / "pred"
    assert main(["predict", str(run_dir), str(source), str(out), "--no-progress"]) == 0
    result = nib.load(str(out / "case_001.nii.gz"))
    assert result.shape == (20, 24, 5)
    np.testing.assert_allclose(result.affine, affine)
    np.testing.assert_array_equal(np.asarray(result.dataobj), (volume > 100).astype(np.uint8))


def test_run_without_a_model_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image = tmp_path / "x.npy"
    np.save(image, blocks((16, 16)))
    assert main(["predict", str(tmp_path / "run"), str(image), str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"autocnnp predict: error: {tmp_path / 'run' / 'model'}: no trained "
                          f"model in this run directory")
