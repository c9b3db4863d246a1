"""Class-weighted losses and the checks of loss files (real TensorFlow, no ranks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from autocnnp.components import losses
from autocnnp.components.keras_settings import LossFileError, load_loss_file


def batch():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, size=(2, 5, 5)).astype(np.int32)
    logits = rng.normal(size=(2, 5, 5, 3)).astype(np.float32)
    return tf.constant(y_true), tf.nn.softmax(tf.constant(logits))


@pytest.mark.parametrize("name", losses.LOSS_NAMES)
def test_unit_class_weights_give_the_unweighted_loss(name):
    y_true, y_pred = batch()
    np.testing.assert_allclose(losses.weighted_loss(name, (1, 1, 1))(y_true, y_pred),
                               losses.get_loss(name)(y_true, y_pred), rtol=1e-6)


def test_class_weights_weight_each_pixel_by_its_class():
    y_true, y_pred = batch()
    w = np.array([1.0, 3.0, 0.5])
    ce = -np.log(np.clip(np.take_along_axis(y_pred.numpy(), y_true.numpy()[..., None], -1)[..., 0],
                         1e-7, 1 - 1e-7))
    pixel = w[y_true.numpy()]
    expected = (ce * pixel).sum(axis=(1, 2)) / pixel.sum(axis=(1, 2))
    np.testing.assert_allclose(losses.weighted_loss("crossentropy", w)(y_true, y_pred), expected,
                               rtol=1e-5)


def test_a_loss_file_that_returns_one_value_per_pixel_is_refused(tmp_path: Path):
    path = tmp_path / "pixel.py"
    path.write_text("def loss(y_true, y_pred):\n    return y_pred[..., 0]\n")
    with pytest.raises(LossFileError) as info:
        load_loss_file(path)
    assert str(info.value) == (f"loss file {path}: loss returned shape (2, 4, 4) for a batch of "
                               f"2 images; expected one value per image, shape (2,)")
