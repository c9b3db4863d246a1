"""Test architecture: a small conv net whose output is NaN on one rank (a fault injected on
that rank only, as bad data or a broken GPU would cause). Not a test module."""

import os


def build_model(input_shape, num_classes, nan_rank=1):
    import tensorflow as tf

    x = tf.keras.Input(shape=input_shape)
    y = tf.keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    y = tf.keras.layers.Conv2D(num_classes, 1)(y)
    if os.environ.get("OMPI_COMM_WORLD_RANK") == str(nan_rank):
        y = tf.keras.layers.Lambda(lambda t: t + float("nan"))(y)
    y = tf.keras.layers.Softmax()(y)
    return tf.keras.Model(x, y)
