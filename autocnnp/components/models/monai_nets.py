"""MONAI's networks on the torch engine, by name: ``<CNN_archi><name>monai.UNet</name>``.

Any class of ``monai.networks.nets`` that segments 2-D images can be named; it is built with
``spatial_dims=2``, ``in_channels`` from the images and ``out_channels`` = the number of classes,
plus the ``<param>`` values of ``<CNN_archi>`` (a list such as ``channels`` or ``strides`` is
written ``16 32 64`` or ``16,32,64``). MONAI's networks return logits; the model autocnnp trains
ends with a softmax over the classes, as every architecture must (``contract``). MONAI is the
optional extra ``monai`` (``pip install -c constraints.txt -e '.[monai]'``).
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from autocnnp.components.models.contract import ArchitectureError
from autocnnp.engine.vocabulary import MONAI_PREFIX

#: what a network needs that MONAI gives no default for, filled in unless the config sets it
REQUIRED_DEFAULTS: dict[str, dict[str, Any]] = {
    "UNet": {"channels": (16, 32, 64, 128), "strides": (2, 2, 2), "num_res_units": 2},
    "AttentionUnet": {"channels": (16, 32, 64, 128), "strides": (2, 2, 2)},
}
#: given by autocnnp, from the data, never by the config
FIXED = ("spatial_dims", "in_channels", "out_channels")


def _number(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def _value(value: Any, annotation: Any) -> Any:
    """A ``<param>`` value for a parameter of this annotation: ``"16 32 64"`` or ``"16,32,64"``
    is a tuple of numbers, and so is one number given where only a sequence is accepted."""
    if isinstance(value, str):
        parts = [p for p in re.split(r"[\s,]+", value.strip()) if p]
        try:
            numbers = tuple(_number(p) for p in parts)
        except ValueError:
            return value
        value = numbers if len(numbers) != 1 else numbers[0]
    only_sequence = str(annotation).startswith("Sequence") and "|" not in str(annotation)
    return (value,) if only_sequence and isinstance(value, (int, float)) else value


def build_monai_model(name: str, input_shape: tuple[int, int, int], num_classes: int,
                      params: dict[str, Any]) -> Any:
    """``monai.<Class>`` for images of ``input_shape`` (H, W, C), ending with a softmax."""
    import torch
    from torch import nn

    class_name = name[len(MONAI_PREFIX):]
    try:
        from monai.networks import nets
    except ImportError:
        raise ArchitectureError(name, "MONAI is not installed on this rank",
                                remedy="pip install -c constraints.txt -e '.[monai]'") from None
    network = getattr(nets, class_name, None)
    if not (inspect.isclass(network) and issubclass(network, torch.nn.Module)):
        raise ArchitectureError(name, f"monai.networks.nets has no network {class_name}")
    fixed = [key for key in FIXED if key in params]
    if fixed:
        raise ArchitectureError(name, f"{', '.join(fixed)} come from the data and the classes; "
                                      f"drop the <param> of that name")
    signature = inspect.signature(network).parameters
    kwargs = {**REQUIRED_DEFAULTS.get(class_name, {}),
              **{key: _value(value, signature[key].annotation if key in signature else "")
                 for key, value in params.items()}}
    try:
        net = network(spatial_dims=2, in_channels=int(input_shape[-1]),
                      out_channels=num_classes, **kwargs)
    except (TypeError, ValueError, AssertionError) as exc:
        accepted = [p for p in signature if p not in ("self", *FIXED)]
        raise ArchitectureError(name, f"{type(exc).__name__}: {exc}",
                                remedy=f"its parameters: {', '.join(accepted)}") from None
    return nn.Sequential(net, nn.Softmax(dim=1))
