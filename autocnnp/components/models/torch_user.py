"""Architectures on the torch engine: the PyTorch built-ins and user ``torch.nn.Module`` files.

A user architecture file for ``dist_strategy`` ``torch_ddp`` defines the same entry point as
for the Horovod engine, returning a ``torch.nn.Module`` instead of a Keras model::

    import torch
    from torch import nn

    def build_model(input_shape, num_classes, **params) -> nn.Module:
        ...

``input_shape`` is ``(H, W, C)`` of the training images (as on the Horovod engine); the module
takes ``(N, C, H, W)`` float32 images and returns per-pixel class probabilities
``(N, num_classes, H, W)`` (end with a softmax over dimension 1). ``params`` are the
``<param>`` values of ``<CNN_archi>``, converted to the types of the function's defaults.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

from autocnnp.components.models.contract import ArchitectureError, bind_params
from autocnnp.engine.vocabulary import MONAI_PREFIX


def check_torch_output(model: Any, input_shape: tuple[int, int, int], num_classes: int,
                       source: str) -> None:
    """Check that ``model`` is a ``torch.nn.Module`` mapping one ``(1, C, H, W)`` image to
    ``(1, num_classes, H, W)``."""
    import torch

    if not isinstance(model, torch.nn.Module):
        hint = (" (a Keras model: this file is for dist_strategy ring_allreduce)"
                if type(model).__module__.startswith(("keras", "tensorflow")) else "")
        raise ArchitectureError(source, f"build_model returned {type(model).__name__}, expected "
                                        f"a torch.nn.Module{hint}")
    height, width, channels = (int(v) for v in input_shape)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, channels, height, width))
    except Exception as exc:
        raise ArchitectureError(source, f"the model fails on a (1, {channels}, {height}, "
                                        f"{width}) image: {type(exc).__name__}: {exc}") from exc
    finally:
        model.train(was_training)
    got = tuple(getattr(out, "shape", ()))
    expected = (1, num_classes, height, width)
    if got != expected:
        raise ArchitectureError(
            source, f"the model's output has shape {got} for a (1, {channels}, {height}, "
                    f"{width}) image; expected {expected} (one probability per class for "
                    f"every input pixel, channels first)",
            remedy="end the model with a 1x1 Conv2d of num_classes channels and a softmax "
                   "over dimension 1, upsampled to the input size")


def build_torch_model(arch: Any, input_shape: tuple[int, int, int], num_classes: int,
                      base_dir: Path | None = None) -> Any:
    """The configured architecture as a ``torch.nn.Module``, checked."""
    from autocnnp.components.models.torch_models import BUILTINS

    if arch.path is not None:
        from autocnnp.components.models.user import ENTRY_POINT, load_architecture_file

        path = Path(arch.path)
        builder = load_architecture_file(path)
        kwargs = bind_params(builder, dict(arch.params), str(path))
        try:
            model = builder(tuple(input_shape), num_classes, **kwargs)
        except Exception as exc:
            frames = [f for f in traceback.extract_tb(exc.__traceback__)
                      if Path(f.filename).resolve() == path.resolve()]
            where = f" (line {frames[-1].lineno})" if frames else ""
            raise ArchitectureError(str(path), f"{ENTRY_POINT} failed{where}: "
                                               f"{type(exc).__name__}: {exc}") from exc
        check_torch_output(model, input_shape, num_classes, str(path))
        return model
    if (arch.name or "").startswith(MONAI_PREFIX):
        from autocnnp.components.models.monai_nets import build_monai_model

        model = build_monai_model(arch.name, input_shape, num_classes, dict(arch.params))
        check_torch_output(model, input_shape, num_classes, arch.name)
        return model
    name = (arch.name or "unet").lower()
    if name not in BUILTINS:
        raise ArchitectureError(name, f"unknown built-in architecture; known: "
                                      f"{', '.join(sorted(BUILTINS))}")
    builder = BUILTINS[name]
    params = bind_params(builder, dict(arch.params), f"builtin:{name}")
    try:
        model = builder(tuple(input_shape), num_classes, **params)
    except ValueError as exc:
        raise ArchitectureError(f"builtin:{name}", str(exc)) from None
    check_torch_output(model, input_shape, num_classes, f"builtin:{name}")
    return model
