"""What every architecture, built-in or user file, must satisfy: its parameters bind to the
builder's signature, and its output is one probability per class for every input pixel."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from autocnnp.engine.values import parse_bool
from autocnnp.errors import AutocnnpError


class ArchitectureError(AutocnnpError):
    """An architecture (built-in or user file) cannot be built as configured."""

    exit_code = 2

    def __init__(self, source: str, message: str, *, remedy: str | None = None) -> None:
        self.source = source
        super().__init__(f"architecture {source}: {message}", remedy=remedy)


def _coerce(value: Any, default: Any) -> Any:
    """Config parameters arrive as text; convert to the type of the builder's default."""
    if not isinstance(value, str) or default is None or isinstance(default, str):
        return value
    if isinstance(default, bool):
        return parse_bool(value)
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
        hint = (" (a torch.nn.Module: this file is for dist_strategy torch_ddp)"
                if type(model).__module__.startswith("torch") else "")
        raise ArchitectureError(source, f"build_model returned {type(model).__name__}, "
                                        f"expected a tf.keras.Model{hint}")
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


def check_unet_settings(input_shape: tuple[int, ...], depth: int, base_filters: int,
                        dropout: float) -> None:
    """Raise ValueError for U-Net settings no engine can build (shared by the Keras and the
    PyTorch builder, so both say the same)."""
    if depth < 2:
        raise ValueError(f"depth must be at least 2, got {depth}")
    if base_filters < 1:
        raise ValueError(f"base_filters must be positive, got {base_filters}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    factor = 2 ** (depth - 1)
    height, width = input_shape[0], input_shape[1]
    for size in (height, width):
        if size is not None and size % factor:
            raise ValueError(f"image size {height}x{width} is not divisible by {factor} "
                             f"(2 ** (depth - 1) for depth {depth}); resize the images or "
                             f"lower depth")


def check_fcn_size(input_shape: tuple[int, ...]) -> None:
    """Raise ValueError when FCN's five poolings do not divide the image size."""
    height, width = input_shape[0], input_shape[1]
    for size in (height, width):
        if size is not None and size % 32:
            raise ValueError(f"image size {height}x{width} is not divisible by 32 "
                             f"(FCN pools five times); resize the images")
