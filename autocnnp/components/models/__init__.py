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
from typing import TYPE_CHECKING, Any, Callable

from autocnnp.errors import AutocnnpError

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

    from autocnnp.engine.spec import ArchitectureSpec

#: built-in architecture name -> "module:function"
BUILTINS: dict[str, str] = {
    "unet": "autocnnp.components.models.unet:build_unet",
    "fcn": "autocnnp.components.models.fcn:build_fcn",
}


class ArchitectureError(AutocnnpError):
    """An architecture (built-in or user file) cannot be built as configured."""

    exit_code = 2

    def __init__(self, source: str, message: str, *, remedy: str | None = None) -> None:
        self.source = source
        super().__init__(f"architecture {source}: {message}", remedy=remedy)


def builtin_builder(name: str) -> Callable[..., "tf.keras.Model"]:
    """The build function of the built-in architecture ``name``."""
    key = name.lower()
    if key not in BUILTINS:
        raise ArchitectureError(name, f"unknown built-in architecture; known: "
                                      f"{', '.join(sorted(BUILTINS))}")
    module, func = BUILTINS[key].split(":")
    return getattr(importlib.import_module(module), func)


def _coerce(value: Any, default: Any) -> Any:
    """Config parameters arrive as text; convert to the type of the builder's default."""
    if not isinstance(value, str) or default is None or isinstance(default, str):
        return value
    if isinstance(default, bool):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"expected true or false, got {value!r}")
    if isinstance(default, (int, float)):
        return type(default)(float(value) if isinstance(default, float) else int(value))
    return value


def bind_params(builder: Callable[..., Any], params: dict[str, Any], source: str) -> dict[str, Any]:
    """Check ``params`` against the builder's signature and convert text values.

    Raises :class:`ArchitectureError` naming an unknown parameter (unless the builder takes
    ``**params``) or a value of the wrong type.
    """
    sig = inspect.signature(builder)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    named = {k: p for k, p in sig.parameters.items()
             if k not in ("input_shape", "num_classes")
             and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key not in named:
            if accepts_any:
                out[key] = value
                continue
            known = ", ".join(named) or "none"
            raise ArchitectureError(source, f"unknown parameter {key!r}; known: {known}")
        default = named[key].default
        try:
            out[key] = _coerce(value, None if default is inspect.Parameter.empty else default)
        except ValueError as exc:
            raise ArchitectureError(source, f"parameter {key!r}: {exc}") from None
    return out


def check_output(model: Any, input_shape: tuple[int, ...], num_classes: int, source: str) -> None:
    """Check that ``model`` is a Keras model whose output is ``(H, W, num_classes)``."""
    import tensorflow as tf

    if not isinstance(model, tf.keras.Model):
        raise ArchitectureError(source, f"build_model returned {type(model).__name__}, "
                                        "expected a tf.keras.Model")
    out = model.output_shape
    if isinstance(out, list):
        raise ArchitectureError(source, f"the model has {len(out)} outputs; expected one "
                                        f"output of shape (H, W, {num_classes})")
    expected = (input_shape[0], input_shape[1], num_classes)
    got = tuple(out[1:])
    ok = len(got) == 3 and all(g is None or e is None or g == e for g, e in zip(got, expected))
    if not ok:
        raise ArchitectureError(
            source, f"the model's output has shape {got}; expected {expected} "
                    f"(one probability per class for every input pixel)",
            remedy="end the model with a 1x1 Conv2D of num_classes filters and a softmax, "
                   "upsampled to the input size")


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
