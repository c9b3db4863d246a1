"""The torch engine's models and losses against the Horovod engine's Keras ones: the same
parameter counts, the same output contract, the same loss and metric values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from autocnnp.components.models import fcn, unet  # noqa: E402
from autocnnp.components.models import torch_models as tm  # noqa: E402
from autocnnp.components.models.contract import ArchitectureError  # noqa: E402
from autocnnp.components.models.torch_user import build_torch_model  # noqa: E402
from autocnnp.engine.spec import ArchitectureSpec  # noqa: E402


@pytest.mark.parametrize("params", [{}, {"depth": 4, "base_filters": 8, "batchnorm": True,
                                         "dropout": 0.5}, {"depth": 5, "base_filters": 64}])
def test_unet_has_the_keras_parameter_count(params: dict) -> None:
    keras_model = unet.build_unet((64, 64, 1), 3, **params)
    torch_model = tm.build_unet((64, 64, 1), 3, **params)
    assert tm.count_params(torch_model) == keras_model.count_params()
    out = torch_model(torch.rand(2, 1, 64, 64))
    assert tuple(out.shape) == (2, 3, 64, 64)
    assert torch.allclose(out.sum(dim=1), torch.ones(2, 64, 64), atol=1e-5)  # softmax


@pytest.mark.parametrize("params", [{}, {"base_filters": 8, "fc_filters": 32}])
def test_fcn_has_the_keras_parameter_count(params: dict) -> None:
    keras_model = fcn.build_fcn((64, 64, 2), 4, **params)
    torch_model = tm.build_fcn((64, 64, 2), 4, **params)
    assert tm.count_params(torch_model) == keras_model.count_params()
    assert tuple(torch_model(torch.rand(1, 2, 64, 64)).shape) == (1, 4, 64, 64)


def test_builtin_errors_are_the_keras_ones() -> None:
    with pytest.raises(ArchitectureError, match="image size 62x62 is not divisible by 4"):
        build_torch_model(ArchitectureSpec(name="unet"), (62, 62, 1), 3)
    with pytest.raises(ArchitectureError, match="unknown parameter 'width'"):
        build_torch_model(ArchitectureSpec(name="unet", params={"width": 3}), (64, 64, 1), 3)


def test_a_user_file_must_return_the_right_module(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.py"
    wrong.write_text("from torch import nn\n\ndef build_model(input_shape, num_classes):\n"
                     "    return nn.Conv2d(input_shape[-1], num_classes + 1, 1)\n")
    with pytest.raises(ArchitectureError) as info:
        build_torch_model(ArchitectureSpec(name=None, path=wrong), (16, 16, 1), 3)
    assert info.value.message == (
        f"architecture {wrong}: the model's output has shape (1, 4, 16, 16) for a (1, 1, 16, 16) "
        f"image; expected (1, 3, 16, 16) (one probability per class for every input pixel, "
        f"channels first)")
    assert info.value.remedy == ("end the model with a 1x1 Conv2d of num_classes channels and "
                                 "a softmax over dimension 1, upsampled to the input size")
    keras_file = tmp_path / "keras_one.py"
    keras_file.write_text("def build_model(input_shape, num_classes):\n"
                          "    from autocnnp.components.models.unet import build_unet\n"
                          "    return build_unet(input_shape, num_classes)\n")
    with pytest.raises(ArchitectureError) as info:
        build_torch_model(ArchitectureSpec(name=None, path=keras_file), (16, 16, 1), 3)
    assert info.value.message == (f"architecture {keras_file}: build_model returned Functional, "
                               f"expected a torch.nn.Module (a Keras model: this file is for "
                               f"dist_strategy ring_allreduce)")


@pytest.mark.parametrize("name", ["dice", "crossentropy", "dice_crossentropy"])
@pytest.mark.parametrize("weights", [(), (0.2, 1.0, 2.0)])
def test_losses_and_dice_metric_equal_the_keras_ones(name: str, weights: tuple) -> None:
    import tensorflow as tf

    from autocnnp.components import losses as keras_losses
    from autocnnp.components.torch_runtime import dice_metric, make_loss

    rng = np.random.default_rng(3)
    logits = rng.normal(size=(4, 8, 8, 3)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    masks = rng.integers(0, 3, size=(4, 8, 8)).astype(np.int32)
    keras_fn = (keras_losses.weighted_loss(name, weights) if weights
                else keras_losses.get_loss(name))
    want = keras_fn(tf.constant(masks), tf.constant(probs)).numpy()
    got = make_loss(name, weights)(torch.from_numpy(masks).long(),
                                   torch.from_numpy(probs).permute(0, 3, 1, 2)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    want_dice = keras_losses.dice_metric(tf.constant(masks), tf.constant(probs)).numpy()
    got_dice = dice_metric(torch.from_numpy(masks).long(),
                           torch.from_numpy(probs).permute(0, 3, 1, 2)).numpy()
    np.testing.assert_allclose(got_dice, want_dice, rtol=1e-6)
