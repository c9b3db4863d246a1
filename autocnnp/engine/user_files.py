"""Static checks of user files a config names (a loss file), with :mod:`ast` only: validating
a config never runs user code. Plugin classes are checked by :mod:`autocnnp.generator.plugins`."""

from __future__ import annotations

from pathlib import Path

from autocnnp.engine.values import did_you_mean


def check_function_file(path: Path, function: str, args: tuple[str, ...], what: str) -> list[str]:
    """Problems with a user file that must define ``function(*args)`` (a loss file), found
    with :mod:`ast` only: validating never runs user code."""
    import ast

    if not path.is_file():
        return [f"{what} {path} not found"]
    if path.suffix != ".py":
        return [f"{what} {path} must be a Python file (.py)"]
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, UnicodeDecodeError) as exc:
        return [f"{what} {path} cannot be read: {exc}"]
    except SyntaxError as exc:
        return [f"{what} {path}:{exc.lineno}: syntax error: {exc.msg}"]
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    node = functions.get(function)
    signature = f"{function}({', '.join(args)})"
    if node is None:
        defined = ", ".join(sorted(functions)) or "none"
        return [f"{what} {path} defines no function {signature}"
                f"{did_you_mean(function, list(functions), otherwise='')} (functions defined: {defined})"]
    given = [a.arg for a in node.args.posonlyargs + node.args.args]
    required = len(given) - len(node.args.defaults)
    if len(given) < len(args) or required > len(args):
        return [f"{what} {path}:{node.lineno}: {function} must accept {signature}, found "
                f"{function}({', '.join(given)})"]
    return []
