"""Dist-U-Net: the U-Net of Ronneberger et al. as used by R2D2 (thesis 3.3.2).

Parameters (``<CNN_archi><name>unet</name><param name="...">``):

``depth`` (int, default 3)
    Number of resolution levels, the bottleneck included: ``depth - 1`` max-poolings. The
    original U-Net and the thesis's full-size model have 5. Image height and width must be
    divisible by ``2 ** (depth - 1)``.
``base_filters`` (int, default 16)
    Filters of the two 3x3 convolutions of the first level; doubled at every level down
    (the thesis's full size: 64).
``dropout`` (float, default 0.0)
    Dropout rate after the bottleneck convolutions (the original U-Net used 0.5 there).
``batchnorm`` (bool, default False)
    Batch normalisation after every convolution. Off by default: per-rank batch statistics
    make a run on N ranks with batch b differ from one rank with batch N*b, and the thesis's
    U-Net has none. When on, each rank normalises with its own batch during a step, and the
    moving mean and variance are averaged across ranks before validation, at every epoch end
    and before the model is saved, so every rank holds the same statistics.

The defaults (depth 3, 16 filters, about 0.12 M parameters) train the 128x128 quickstart on
two CPU cores in about a minute and a half; ``depth=5 base_filters=64 dropout=0.5`` is the
31 M-parameter thesis model.
"""

from __future__ import annotations

import tensorflow as tf

from autocnnp.components.models.contract import check_unet_settings

layers = tf.keras.layers


def _conv_block(x: tf.Tensor, filters: int, batchnorm: bool, name: str) -> tf.Tensor:
    for i in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=not batchnorm,
                          kernel_initializer="he_normal", name=f"{name}_conv{i}")(x)
        if batchnorm:
            x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


def build_unet(input_shape: tuple[int, int, int], num_classes: int, depth: int = 3,
               base_filters: int = 16, dropout: float = 0.0,
               batchnorm: bool = False) -> tf.keras.Model:
    """Build a U-Net for images of ``input_shape`` (H, W, C) and ``num_classes`` classes."""
    check_unet_settings(input_shape, depth, base_filters, dropout)

    inputs = tf.keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    skips = []
    for level in range(depth - 1):
        x = _conv_block(x, base_filters * 2 ** level, batchnorm, f"down{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"down{level}_pool")(x)
    x = _conv_block(x, base_filters * 2 ** (depth - 1), batchnorm, "bottleneck")
    if dropout > 0:
        x = layers.Dropout(dropout, name="bottleneck_dropout")(x)
    for level in reversed(range(depth - 1)):
        filters = base_filters * 2 ** level
        x = layers.Conv2DTranspose(filters, 2, strides=2, padding="same",
                                   name=f"up{level}_upconv")(x)
        x = layers.Concatenate(name=f"up{level}_concat")([skips[level], x])
        x = _conv_block(x, filters, batchnorm, f"up{level}")
    # softmax in float32 even under mixed precision, for a stable loss
    outputs = layers.Conv2D(num_classes, 1, activation="softmax", dtype="float32",
                            name="classes")(x)
    return tf.keras.Model(inputs, outputs, name=f"unet_d{depth}_f{base_filters}")
