"""User architecture files (the thesis's ``<CNN_archi><path>archi/U-Net.py</path>``).

The file is ordinary Python that defines::

    def build_model(input_shape, num_classes, **params) -> tf.keras.Model:
        ...

``input_shape`` is ``(H, W, C)`` of the training images, ``num_classes`` the number of
classes in the config, ``params`` the ``<param>`` values of ``<CNN_archi>`` (converted to the
type of the function's default when it declares one). The model must output per-pixel class
probabilities of shape ``(H, W, num_classes)`` (end with a softmax). The file runs only when
a job runs, on every rank, never when a config is validated.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from autocnnp.components.models.contract import ArchitectureError, bind_params, check_output

ENTRY_POINT = "build_model"


def import_user_file(path: Path, kind: str, error: Callable[[str], Exception]) -> ModuleType:
    """Import the user file ``path`` (an architecture or loss file) as a module of its own;
    a failure raises ``error(message)`` with the line of the file where it happened."""
    digest = hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:10]
    module_name = f"autocnnp_user_{kind}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise error("not an importable Python file")
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        last = traceback.extract_tb(exc.__traceback__)[-1]
        raise error(f"importing it failed at line {last.lineno}: "
                    f"{type(exc).__name__}: {exc}") from exc
    return module


def load_architecture_file(path: Path) -> Callable[..., Any]:
    """Import ``path`` and return its ``build_model``, checking the interface.

    Raises :class:`ArchitectureError` naming the file when it is missing, fails to import,
    has no callable ``build_model`` or one that does not accept
    ``(input_shape, num_classes, **params)``.
    """
    path = Path(path)
    if not path.is_file():
        raise ArchitectureError(str(path), "file not found",
                                remedy="<CNN_archi><path> is relative to the config file")
    module = import_user_file(path, "architecture",
                              lambda message: ArchitectureError(str(path), message))
    module_name = module.__name__
    builder = getattr(module, ENTRY_POINT, None)
    if builder is None or not callable(builder):
        defined = sorted(n for n, v in vars(module).items()
                         if callable(v) and not n.startswith("_")
                         and getattr(v, "__module__", None) == module_name)
        raise ArchitectureError(
            str(path), f"defines no function {ENTRY_POINT}(input_shape, num_classes, **params)"
                       + (f"; it defines: {', '.join(defined)}" if defined else ""))
    try:
        inspect.signature(builder).bind((1, 1, 1), 2)
    except TypeError:
        raise ArchitectureError(
            str(path), f"{ENTRY_POINT}{inspect.signature(builder)} must accept "
                       f"(input_shape, num_classes, **params)") from None
    return builder


def build_user_model(path: Path, input_shape: tuple[int, int, int], num_classes: int,
                     params: dict[str, Any]) -> Any:
    """Build the model of a user architecture file and check its output shape."""
    builder = load_architecture_file(path)
    kwargs = bind_params(builder, params, str(path))
    try:
        model = builder(tuple(input_shape), num_classes, **kwargs)
    except Exception as exc:
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if Path(f.filename).resolve() == Path(path).resolve()]
        where = f" (line {frames[-1].lineno})" if frames else ""
        raise ArchitectureError(str(path), f"{ENTRY_POINT} failed{where}: "
                                           f"{type(exc).__name__}: {exc}") from exc
    check_output(model, input_shape, num_classes, str(path))
    return model
