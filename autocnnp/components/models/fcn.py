"""Dist-FCN: the fully convolutional network of Long et al. (FCN-8s) on a 16-layer VGG encoder.

The 16 weight layers are VGG-16's 13 convolutions, ``fc6`` and ``fc7`` as convolutions, and
the class scoring layer; the prediction is upsampled with the skips from ``pool4`` and
``pool3`` (FCN-8s) back to the input size.

Parameters (``<CNN_archi><name>fcn</name><param name="...">``):

``vgg16_weights`` (path, default none)
    A local Keras VGG-16 ImageNet weights file (``vgg16_weights_tf_dim_ordering_tf_kernels
    [_notop].h5`` as ``tf.keras.applications.VGG16`` stores it). Its 13 convolutions
    initialise the encoder (the first one summed over RGB and spread over the input
    channels); ``fc6``/``fc7`` start random. Nothing is ever downloaded. A relative path is
    resolved against the config file's folder.
``base_filters`` (int, default 0 = auto)
    Filters of the first VGG block, doubled per block up to 8x. Auto: 64 (VGG-16's, needed
    for its weights) when ``vgg16_weights`` is given, else 16 so that the model trains on a CPU.
``fc_filters`` (int, default 0 = auto)
    Filters of ``fc6`` and ``fc7``. Auto: 4096 (VGG-16's) with weights, else 16 x base_filters.
``dropout`` (float, default 0.5)
    Dropout after ``fc6`` and ``fc7``, as in FCN.

Image height and width must be divisible by 32 (five poolings).
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from autocnnp.components.models.contract import check_fcn_size

layers = tf.keras.layers

#: parameters that hold file paths (resolved against the config's folder by the registry)
PATH_PARAMS = ("vgg16_weights",)

#: VGG-16's convolutions per block, named as in tf.keras.applications.VGG16
VGG_BLOCKS = (2, 2, 3, 3, 3)


def _score(x: tf.Tensor, num_classes: int, name: str) -> tf.Tensor:
    return layers.Conv2D(num_classes, 1, kernel_initializer="zeros", name=name)(x)


def build_fcn(input_shape: tuple[int, int, int], num_classes: int, vgg16_weights: str = "",
              base_filters: int = 0, fc_filters: int = 0,
              dropout: float = 0.5) -> tf.keras.Model:
    """Build an FCN-8s for images of ``input_shape`` (H, W, C) and ``num_classes`` classes."""
    weights = Path(vgg16_weights) if vgg16_weights else None
    if weights is not None and not weights.is_file():
        raise ValueError(f"VGG-16 weights file {weights} does not exist (autocnnp never "
                         f"downloads weights: copy the Keras file "
                         f"vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 there, or drop "
                         f"the vgg16_weights parameter to start from random weights)")
    base = base_filters or (64 if weights else 16)
    if weights is not None and base != 64:
        raise ValueError(f"base_filters must be 64 to load VGG-16 weights, got {base}")
    fc = fc_filters or (4096 if weights else 16 * base)
    check_fcn_size(input_shape)

    inputs = tf.keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    pools = []
    for block, convs in enumerate(VGG_BLOCKS, start=1):
        filters = base * min(2 ** (block - 1), 8)
        for i in range(1, convs + 1):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu",
                              name=f"block{block}_conv{i}")(x)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
        pools.append(x)
    x = layers.Conv2D(fc, 7, padding="same", activation="relu", name="fc6")(x)
    x = layers.Dropout(dropout, name="fc6_dropout")(x)
    x = layers.Conv2D(fc, 1, activation="relu", name="fc7")(x)
    x = layers.Dropout(dropout, name="fc7_dropout")(x)
    x = _score(x, num_classes, "score_fr")
    # FCN-8s: fuse with pool4 (1/16) and pool3 (1/8) before the final x8 upsampling
    x = layers.Conv2DTranspose(num_classes, 4, strides=2, padding="same", name="up_pool4")(x)
    x = layers.Add(name="fuse_pool4")([x, _score(pools[3], num_classes, "score_pool4")])
    x = layers.Conv2DTranspose(num_classes, 4, strides=2, padding="same", name="up_pool3")(x)
    x = layers.Add(name="fuse_pool3")([x, _score(pools[2], num_classes, "score_pool3")])
    x = layers.Conv2DTranspose(num_classes, 16, strides=8, padding="same", name="up_final")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="classes")(x)
    model = tf.keras.Model(inputs, outputs, name=f"fcn8s_vgg16_f{base}")
    if weights is not None:
        load_vgg16_weights(model, weights, channels=int(input_shape[-1]))
    return model


def load_vgg16_weights(model: tf.keras.Model, path: Path, channels: int) -> int:
    """Copy VGG-16's 13 convolutions from a local Keras weights file into ``model``.

    Returns the number of layers loaded. The first convolution's RGB kernel is summed over
    colours and divided evenly over ``channels`` input channels, so that an image repeated on
    every channel gives the same response as the grey image in RGB.
    """
    vgg = tf.keras.applications.VGG16(weights=None, include_top=False,
                                      input_shape=(None, None, 3))
    try:
        vgg.load_weights(str(path), by_name=True)
    except Exception as exc:  # h5py/Keras raise several types for a bad file
        raise ValueError(f"cannot read VGG-16 weights from {path}: {exc}") from None
    loaded = 0
    for block, convs in enumerate(VGG_BLOCKS, start=1):
        for i in range(1, convs + 1):
            name = f"block{block}_conv{i}"
            kernel, bias = vgg.get_layer(name).get_weights()
            if name == "block1_conv1" and channels != 3:
                grey = kernel.sum(axis=2, keepdims=True) / channels
                kernel = grey.repeat(channels, axis=2)
            model.get_layer(name).set_weights([kernel, bias])
            loaded += 1
    return loaded
