"""Model registry: the built-in Dist-U-Net and Dist-FCN, and user architecture files.

A config names a built-in (``<CNN_archi><name>unet</name>``) or a Python file
(``<CNN_archi><path>archi/U-Net.py</path>``, as in the thesis) that defines
``build_model(input_shape, num_classes, **params) -> tf.keras.Model``. Every model takes
images ``(H, W, C)`` and outputs per-pixel class probabilities ``(H, W, num_classes)``.

Built-ins are a name -> ``module:function`` map imported lazily, so listing them never
imports TensorFlow.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from autocnnp.components.models.contract import ArchitectureError, bind_params, check_output

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

    from autocnnp.engine.spec import ArchitectureSpec

#: built-in architecture name -> "module:function"
BUILTINS: dict[str, str] = {
    "unet": "autocnnp.components.models.unet:build_unet",
    "fcn": "autocnnp.components.models.fcn:build_fcn",
}


def builtin_builder(name: str) -> Callable[..., "tf.keras.Model"]:
    """The build function of the built-in architecture ``name``."""
    key = name.lower()
    if key not in BUILTINS:
        raise ArchitectureError(name, f"unknown built-in architecture; known: "
                                      f"{', '.join(sorted(BUILTINS))}")
    module, func = BUILTINS[key].split(":")
    return getattr(importlib.import_module(module), func)


def build_model(arch: "ArchitectureSpec", input_shape: tuple[int, int, int],
                num_classes: int, base_dir: Path | None = None) -> "tf.keras.Model":
    """Build the configured architecture for images of ``input_shape`` (H, W, C).

    ``base_dir`` (the config file's folder) resolves relative file parameters of built-ins
    (those a builder module lists in ``PATH_PARAMS``, such as FCN's ``vgg16_weights``).
    """
    if arch.path is not None:
        from autocnnp.components.models.user import build_user_model
        return build_user_model(Path(arch.path), input_shape, num_classes, dict(arch.params))
    name = arch.name or "unet"
    builder = builtin_builder(name)
    params = bind_params(builder, dict(arch.params), f"builtin:{name}")
    path_params = getattr(inspect.getmodule(builder), "PATH_PARAMS", ())
    for key in path_params:
        value = params.get(key)
        if value and base_dir is not None and not Path(value).is_absolute():
            params[key] = str(Path(base_dir) / value)
    try:
        model = builder(tuple(input_shape), num_classes, **params)
    except ValueError as exc:
        raise ArchitectureError(f"builtin:{name}", str(exc)) from None
    check_output(model, input_shape, num_classes, f"builtin:{name}")
    return model


__all__ = ["ArchitectureError", "BUILTINS", "bind_params", "build_model", "builtin_builder",
           "check_output"]
