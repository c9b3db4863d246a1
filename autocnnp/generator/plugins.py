"""User plugins of extensible actions: checked statically at validate time, loaded at run time.

``check_plugin_file`` reads a plugin with :mod:`ast` only: validating a config never executes
its plugins, yet finds syntax errors, a missing class, a wrong base class, a missing or
mis-declared ``run(self, ctx)`` and imports of packages that are not installed.
``load_plugin_file`` imports the file for real (when a job starts) and checks the same
interface on the live class with :func:`check_plugin_class`, the check that installed
implementations (entry points, :mod:`autocnnp.generator.registry`) pass too.
"""

from __future__ import annotations

import sys
from pathlib import Path

from autocnnp.engine.default_tree import action_types, is_extensible
from autocnnp.engine.values import did_you_mean
from autocnnp.errors import PluginError
from autocnnp.generator.components import ActionPlugin

BASE_NAMES = ("ActionPlugin",)
RUN_SIGNATURE = ("self", "ctx")


def _base_name(node) -> str:
    return getattr(node, "id", None) or getattr(node, "attr", None) or ""


def check_plugin_file(path: Path, class_name: str, action_type: str) -> list[str]:
    """Problems with the plugin ``class_name`` in ``path``, found without running it."""
    import ast
    import importlib.util

    if not path.is_file():
        return [f"plugin file {path} not found"]
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [f"plugin file {path} cannot be read: {exc}"]
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        return [f"plugin {path}:{exc.lineno}: syntax error: {exc.msg}"]

    problems = []
    for node in tree.body:
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if top not in sys.modules and importlib.util.find_spec(top) is None:
                problems.append(f"plugin {path}:{node.lineno}: imports {name!r}, which is not "
                                f"installed (pip install it, or remove the import)")

    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    cls = classes.get(class_name)
    if cls is None:
        known = ", ".join(sorted(classes)) or "none"
        return problems + [f"plugin {path}: no class {class_name!r}"
                           f"{did_you_mean(class_name, list(classes), '')} (classes defined: {known})"]
    if not any(_base_name(b) in BASE_NAMES for b in cls.bases):
        problems.append(f"plugin {path}:{cls.lineno}: class {class_name} must subclass "
                        f"autocnnp.generator.ActionPlugin")
    run = next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "run"), None)
    if run is None:
        problems.append(f"plugin {path}:{cls.lineno}: class {class_name} has no method "
                        f"run(self, ctx)")
    else:
        args = tuple(a.arg for a in run.args.posonlyargs + run.args.args)
        if args != RUN_SIGNATURE or run.args.vararg or run.args.kwonlyargs:
            problems.append(f"plugin {path}:{run.lineno}: {class_name}.run must be declared "
                            f"run(self, ctx), found run({', '.join(args)})")
    for stmt in cls.body:
        if (isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "type"
                                                  for t in stmt.targets)
                and isinstance(stmt.value, ast.Constant) and stmt.value.value != action_type):
            problems.append(f"plugin {path}:{stmt.lineno}: {class_name}.type is "
                            f"{stmt.value.value!r} but the config plugs it into {action_type!r}")
    return problems


def check_plugin_class(cls: object, plugin: str, action_type: str, *,
                       installed: bool = False) -> type:
    """The one live check of user code (a plugin file's class, or an installed package's
    implementation registered for ``action_type``): return the class, or raise PluginError.

    It must subclass :class:`ActionPlugin`, plug into a known extensible action type, declare
    that type (or none, for a file plugin) and implement ``run(self, ctx)``; an installed
    implementation also declares ``requires`` and ``provides`` (a file plugin inherits the
    built-in action's)."""
    import inspect

    if not (inspect.isclass(cls) and issubclass(cls, ActionPlugin)):
        raise PluginError(plugin, "must be a class that subclasses autocnnp.generator.ActionPlugin")
    if action_type not in action_types():
        raise PluginError(plugin, f"names unknown action type {action_type!r}; known: "
                                  f"{', '.join(action_types())}")
    if not is_extensible(action_type):
        raise PluginError(plugin, f"{action_type} is not extensible: only extensible actions "
                                  f"(dist_strategy, checkpoint) take plugins")
    declared = getattr(cls, "type", "")
    if (declared or installed) and declared != action_type:
        raise PluginError(plugin, f"declares type {declared!r} but is plugged into {action_type!r}")
    run = getattr(cls, "run", None)
    if run is None or run is ActionPlugin.run:
        raise PluginError(plugin, "does not implement run(self, ctx)")
    params = [p.name for p in inspect.signature(run).parameters.values()]
    if tuple(params) != RUN_SIGNATURE:
        raise PluginError(plugin, f"run must be declared run(self, ctx), found run({', '.join(params)})")
    if installed and (cls.requires is None or cls.provides is None):
        raise PluginError(plugin, "must declare requires and provides (the binding names it "
                                  "reads and stores)")
    return cls


def load_plugin_file(path: Path, class_name: str, action_type: str) -> type:
    """Import ``path`` and return its validated plugin class ``class_name``."""
    import importlib.util

    plugin = f"{path}:{class_name}"
    module_name = f"autocnnp_plugin_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(plugin, "cannot be imported (is it a .py file?)")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise PluginError(plugin, f"syntax error at line {exc.lineno}: {exc.msg}") from exc
    except Exception as exc:  # the user's code: report it, do not crash the launcher
        raise PluginError(plugin, f"failed while importing: {type(exc).__name__}: {exc}") from exc
    if not hasattr(module, class_name):
        import inspect
        names = [n for n, v in vars(module).items() if inspect.isclass(v)]
        raise PluginError(plugin, f"no class {class_name!r}{did_you_mean(class_name, names, '')}")
    return check_plugin_class(getattr(module, class_name), plugin, action_type)
