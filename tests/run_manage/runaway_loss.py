"""Loss file of the divergence test: sparse crossentropy times runaway_state.SCALE, which
runaway_plugin.py raises from epoch ``from_epoch`` on: the loss runs away while it stays finite
(Adam is scale-invariant, so the weights stay sane). Not a test module."""

import sys
from pathlib import Path

import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runaway_state import SCALE  # noqa: E402


def loss(y_true, y_pred):
    per_pixel = tf.keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
    return tf.reduce_mean(per_pixel, axis=[1, 2]) * SCALE
