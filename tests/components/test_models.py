"""Models: built-in U-Net and FCN, VGG-16 weight loading, user architecture files, losses."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from autocnnp.components import losses  # noqa: E402
from autocnnp.components.models import ArchitectureError, build_model  # noqa: E402
from autocnnp.components.models.fcn import build_fcn  # noqa: E402
from autocnnp.components.models.unet import build_unet  # noqa: E402
from autocnnp.engine.spec import ArchitectureSpec  # noqa: E402
from autocnnp.engine.vocabulary import LOSSES  # noqa: E402


# --- built-ins -------------------------------------------------------------------------------

def test_unet_outputs_class_probabilities_per_pixel() -> None:
    model = build_unet((32, 48, 1), 3, depth=3, base_filters=4)
    assert model.output_shape == (None, 32, 48, 3)
    out = model(np.random.rand(2, 32, 48, 1).astype("float32")).numpy()
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, rtol=1e-5)


def test_unet_depth_is_the_number_of_levels() -> None:
    model = build_unet((32, 32, 1), 2, depth=4, base_filters=4)
    pools = [layer for layer in model.layers if isinstance(layer, tf.keras.layers.MaxPooling2D)]
    assert len(pools) == 3
    assert model.get_layer("bottleneck_conv1").filters == 4 * 2 ** 3


def test_unet_quickstart_size() -> None:
    assert build_unet((128, 128, 1), 3).count_params() == 116787


def test_unet_rejects_sizes_it_cannot_pool() -> None:
    with pytest.raises(ValueError, match=r"image size 100x100 is not divisible by 8 "
                                         r"\(2 \*\* \(depth - 1\) for depth 4\)"):
        build_unet((100, 100, 1), 2, depth=4)


def test_registry_builds_builtins_with_text_params() -> None:
    arch = ArchitectureSpec(name="unet", params={"depth": "2", "base_filters": "4",
                                                 "dropout": "0.25"})
    model = build_model(arch, (16, 16, 2), 4)
    assert model.output_shape == (None, 16, 16, 4)
    assert model.get_layer("bottleneck_dropout").rate == 0.25


def test_registry_names_unknown_parameters_and_architectures() -> None:
    with pytest.raises(ArchitectureError) as err:
        build_model(ArchitectureSpec(name="unet", params={"dept": "3"}), (16, 16, 1), 2)
    assert str(err.value) == ("architecture builtin:unet: unknown parameter 'dept'; known: "
                              "depth, base_filters, dropout, batchnorm")
    with pytest.raises(ArchitectureError, match="unknown built-in architecture; known: fcn, unet"):
        build_model(ArchitectureSpec(name="resnet"), (16, 16, 1), 2)


def test_fcn_has_vgg16s_13_convolutions_and_16_weight_layers() -> None:
    model = build_fcn((64, 64, 1), 3)
    assert model.output_shape == (None, 64, 64, 3)
    vgg = [layer.name for layer in model.layers if layer.name.startswith("block")
           and "conv" in layer.name]
    assert len(vgg) == 13
    assert {"fc6", "fc7", "score_fr"} <= {layer.name for layer in model.layers}


def test_fcn_missing_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "vgg16.h5"
    with pytest.raises(ArchitectureError) as err:
        build_model(ArchitectureSpec(name="fcn", params={"vgg16_weights": str(missing)}),
                    (64, 64, 1), 2)
    assert str(err.value).startswith(f"architecture builtin:fcn: VGG-16 weights file {missing} "
                                     f"does not exist (autocnnp never downloads weights")


@pytest.mark.slow
def test_fcn_loads_vgg16_weights_from_a_local_file(tmp_path: Path) -> None:
    vgg = tf.keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    weights = tmp_path / "weights" / "vgg16_notop.h5"
    weights.parent.mkdir()
    vgg.save_weights(str(weights))
    # relative to the config folder, as a config would write it
    arch = ArchitectureSpec(name="fcn", params={"vgg16_weights": "weights/vgg16_notop.h5",
                                                "fc_filters": "8"})
    model = build_model(arch, (32, 32, 1), 2, base_dir=tmp_path)
    for name in ("block2_conv1", "block5_conv3"):
        for got, want in zip(model.get_layer(name).get_weights(), vgg.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, want)
    kernel = model.get_layer("block1_conv1").get_weights()[0]
    np.testing.assert_allclose(kernel[:, :, 0, :],
                               vgg.get_layer("block1_conv1").get_weights()[0].sum(axis=2),
                               rtol=1e-6)


# --- user architecture files -----------------------------------------------------------------

def write(tmp_path: Path, text: str, name: str = "archi.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


GOOD = """
import tensorflow as tf

def build_model(input_shape, num_classes, width=4):
    inputs = tf.keras.Input(input_shape)
    x = tf.keras.layers.Conv2D(width, 3, padding="same", activation="relu")(inputs)
    return tf.keras.Model(inputs, tf.keras.layers.Conv2D(num_classes, 1, activation="softmax")(x))
"""


def test_user_file_builds_with_params(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    model = build_model(ArchitectureSpec(name=None, path=path, params={"width": "6"}),
                        (16, 16, 1), 3)
    assert model.output_shape == (None, 16, 16, 3)
    assert model.layers[1].filters == 6


def test_user_file_without_build_model_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "def make_unet(shape):\n    return None\n")
    with pytest.raises(ArchitectureError) as err:
        build_model(ArchitectureSpec(name=None, path=path), (16, 16, 1), 2)
    assert str(err.value) == (f"architecture {path}: defines no function build_model("
                              f"input_shape, num_classes, **params); it defines: make_unet")


def test_user_file_with_wrong_signature(tmp_path: Path) -> None:
    path = write(tmp_path, "def build_model(input_shape):\n    return None\n")
    with pytest.raises(ArchitectureError) as err:
        build_model(ArchitectureSpec(name=None, path=path), (16, 16, 1), 2)
    assert str(err.value) == (f"architecture {path}: build_model(input_shape) must accept "
                              f"(input_shape, num_classes, **params)")


def test_user_file_with_wrong_output_shape(tmp_path: Path) -> None:
    path = write(tmp_path, """
        import tensorflow as tf
        def build_model(input_shape, num_classes, **params):
            inputs = tf.keras.Input(input_shape)
            x = tf.keras.layers.MaxPooling2D(2)(inputs)
            return tf.keras.Model(inputs, tf.keras.layers.Conv2D(num_classes, 1)(x))
        """)
    with pytest.raises(ArchitectureError) as err:
        build_model(ArchitectureSpec(name=None, path=path), (16, 16, 1), 2)
    assert str(err.value).startswith(
        f"architecture {path}: the model's output has shape (8, 8, 2); expected (16, 16, 2) "
        f"(one probability per class for every input pixel)")


def test_user_file_that_fails_to_import_says_where(tmp_path: Path) -> None:
    path = write(tmp_path, "import tensorflow as tf\n\nraise RuntimeError('no GPU here')\n")
    with pytest.raises(ArchitectureError) as err:
        build_model(ArchitectureSpec(name=None, path=path), (16, 16, 1), 2)
    assert str(err.value) == (f"architecture {path}: importing it failed at line 3: "
                              f"RuntimeError: no GPU here")


def test_missing_user_file(tmp_path: Path) -> None:
    with pytest.raises(ArchitectureError, match="file not found"):
        build_model(ArchitectureSpec(name=None, path=tmp_path / "nope.py"), (16, 16, 1), 2)


# --- losses ----------------------------------------------------------------------------------

def _batch(n: int = 4, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = rng.integers(0, classes, size=(n, 8, 8)).astype("int32")
    logits = rng.normal(size=(n, 8, 8, classes))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return masks, probs.astype("float32")


def test_perfect_prediction_has_low_loss_and_dice_one() -> None:
    masks, _ = _batch()
    perfect = np.eye(3, dtype="float32")[masks]
    assert float(tf.reduce_max(losses.dice(masks, perfect))) < 1e-6
    assert float(tf.reduce_max(losses.crossentropy(masks, perfect))) < 1e-5
    np.testing.assert_allclose(losses.dice_metric(masks, perfect).numpy(), 1.0)


@pytest.mark.parametrize("name", LOSSES)
def test_losses_are_per_image_so_batches_decompose(name: str) -> None:
    # the property data parallelism relies on: mean over 2b == mean of the two b-means
    masks, probs = _batch(n=6)
    fn = losses.get_loss(name)
    whole = float(tf.reduce_mean(fn(masks, probs)))
    halves = (float(tf.reduce_mean(fn(masks[:3], probs[:3])))
              + float(tf.reduce_mean(fn(masks[3:], probs[3:])))) / 2
    assert whole == pytest.approx(halves, rel=1e-6)


def test_dice_metric_ignores_background_and_counts_absent_classes_as_one() -> None:
    mask = np.zeros((1, 4, 4), "int32")
    mask[0, :2] = 1
    pred = np.eye(3, dtype="float32")[np.zeros((1, 4, 4), "int32")]  # all background
    # class 1: missed (0), class 2: absent in both (1) -> mean 0.5
    assert float(losses.dice_metric(mask, pred)[0]) == pytest.approx(0.5)
