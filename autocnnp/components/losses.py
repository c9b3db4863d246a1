"""Segmentation losses and the Dice metric for integer masks.

Models output class probabilities (softmax) of shape ``(batch, H, W, C)``; masks are integer
class maps of shape ``(batch, H, W)`` (or ``(batch, H, W, 1)``).

Every loss returns one value per image, so a batch's loss is the mean of per-image losses.
That makes the losses *decomposable*: the mean over a global batch of ``N * b`` images is the
mean of the ``N`` per-rank means over ``b`` images, so ring-allreduce averaging of gradients
over ``N`` ranks gives exactly the gradient one rank would compute on the global batch. A
Dice computed over the whole batch would not have this property.
"""

from __future__ import annotations

from typing import Any, Callable

import tensorflow as tf

from autocnnp.engine.vocabulary import LOSSES as LOSS_NAMES

#: probabilities are clipped to avoid log(0)
EPSILON = 1e-7
#: additive smoothing of the soft Dice, in pixels (keeps empty classes finite and near 1)
DICE_SMOOTH = 1.0



def _prepare(y_true: tf.Tensor, y_pred: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Integer masks as int32 ``(B, H, W)`` and probabilities as float32 ``(B, H, W, C)``."""
    y_pred = tf.cast(y_pred, tf.float32)
    y_true = tf.cast(y_true, tf.int32)
    if y_true.shape.rank == 4:
        y_true = tf.squeeze(y_true, axis=-1)
    return y_true, y_pred


def crossentropy(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Per-image mean pixel-wise categorical cross-entropy, shape ``(B,)``."""
    y_true, y_pred = _prepare(y_true, y_pred)
    probs = tf.clip_by_value(y_pred, EPSILON, 1.0 - EPSILON)
    ce = tf.keras.backend.sparse_categorical_crossentropy(y_true, probs)
    return tf.reduce_mean(ce, axis=[1, 2])


def dice(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Per-image soft Dice loss ``1 - mean_c soft_dice_c`` over all classes, shape ``(B,)``.

    ``soft_dice_c = (2 sum(p_c g_c) + s) / (sum(p_c) + sum(g_c) + s)`` with ``s`` =
    :data:`DICE_SMOOTH`; background is included so that an image without foreground still
    has a gradient.
    """
    y_true, y_pred = _prepare(y_true, y_pred)
    onehot = tf.one_hot(y_true, depth=tf.shape(y_pred)[-1], dtype=tf.float32)
    inter = tf.reduce_sum(onehot * y_pred, axis=[1, 2])
    denom = tf.reduce_sum(onehot, axis=[1, 2]) + tf.reduce_sum(y_pred, axis=[1, 2])
    per_class = (2.0 * inter + DICE_SMOOTH) / (denom + DICE_SMOOTH)
    return 1.0 - tf.reduce_mean(per_class, axis=-1)


def dice_crossentropy(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Per-image sum of :func:`dice` and :func:`crossentropy`, shape ``(B,)``."""
    return dice(y_true, y_pred) + crossentropy(y_true, y_pred)


def dice_metric(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Hard Dice of the argmax prediction, mean over the foreground classes (1..C-1), per image.

    Keras logs it as ``dice`` / ``val_dice``. A class absent from both the mask and the
    prediction of an image counts as 1 (nothing to find, nothing found). With one class only
    (C == 1) every class is used.
    """
    y_true, y_pred = _prepare(y_true, y_pred)
    n = tf.shape(y_pred)[-1]
    pred = tf.one_hot(tf.argmax(y_pred, axis=-1, output_type=tf.int32), depth=n)
    true = tf.one_hot(y_true, depth=n)
    inter = tf.reduce_sum(pred * true, axis=[1, 2])
    denom = tf.reduce_sum(pred, axis=[1, 2]) + tf.reduce_sum(true, axis=[1, 2])
    per_class = tf.where(denom > 0, 2.0 * inter / tf.maximum(denom, 1.0), 1.0)
    first = tf.minimum(1, n - 1)  # skip background unless it is the only class
    return tf.reduce_mean(per_class[:, first:], axis=-1)


dice_metric.__name__ = "dice"  # the name Keras logs

LOSSES: dict[str, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]] = {
    "dice": dice,
    "crossentropy": crossentropy,
    "dice_crossentropy": dice_crossentropy,
}


def weighted_loss(name: str, class_weights: tuple[float, ...] | list[float]) -> Callable[
        [tf.Tensor, tf.Tensor], tf.Tensor]:
    """The loss ``name`` with a weight per class (background first), for unbalanced labels.

    Cross-entropy: each pixel's term is multiplied by the weight of its true class, then
    averaged per image (the sum of weights of the image's pixels normalises it, so the scale
    stays that of the unweighted loss). Dice: the per-class soft Dice is averaged with the
    weights. Per image, as the built-ins: still decomposable across ranks.
    """
    weights = tf.constant([float(w) for w in class_weights], dtype=tf.float32)

    def weighted_crossentropy(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        y_true, y_pred = _prepare(y_true, y_pred)
        probs = tf.clip_by_value(y_pred, EPSILON, 1.0 - EPSILON)
        ce = tf.keras.backend.sparse_categorical_crossentropy(y_true, probs)
        pixel = tf.gather(weights, y_true)
        return tf.reduce_sum(ce * pixel, axis=[1, 2]) / tf.reduce_sum(pixel, axis=[1, 2])

    def weighted_dice(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        y_true, y_pred = _prepare(y_true, y_pred)
        onehot = tf.one_hot(y_true, depth=tf.shape(y_pred)[-1], dtype=tf.float32)
        inter = tf.reduce_sum(onehot * y_pred, axis=[1, 2])
        denom = tf.reduce_sum(onehot, axis=[1, 2]) + tf.reduce_sum(y_pred, axis=[1, 2])
        per_class = (2.0 * inter + DICE_SMOOTH) / (denom + DICE_SMOOTH)
        return 1.0 - tf.reduce_sum(per_class * weights, axis=-1) / tf.reduce_sum(weights)

    def weighted_dice_crossentropy(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        return weighted_dice(y_true, y_pred) + weighted_crossentropy(y_true, y_pred)

    table = {"dice": weighted_dice, "crossentropy": weighted_crossentropy,
             "dice_crossentropy": weighted_dice_crossentropy}
    if name.lower() not in table:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSS_NAMES)}")
    return table[name.lower()]


def get_loss(name: str) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """The loss function called ``name`` (one of :data:`LOSS_NAMES`)."""
    try:
        return LOSSES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSS_NAMES)}") from None


def custom_objects() -> dict[str, Any]:
    """Objects Keras needs to reload a model compiled with these losses and metrics
    (``<CNN_archi><init>`` loading a previous run's model)."""
    return {"dice": dice_metric, "crossentropy": crossentropy,
            "dice_crossentropy": dice_crossentropy}
