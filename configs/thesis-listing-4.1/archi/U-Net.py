"""The thesis's <CNN_archi> file: a Keras U-Net, here the R2D2 Dist-U-Net at full thesis size.

An architecture file defines build_model(input_shape, num_classes, **params) returning a
tf.keras.Model whose output is (H, W, num_classes) softmax probabilities.
"""


def build_model(input_shape, num_classes, **params):
    from autocnnp.components.models.unet import build_unet

    params.setdefault("depth", 5)
    params.setdefault("base_filters", 64)
    return build_unet(input_shape, num_classes, **params)
