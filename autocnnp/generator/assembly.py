"""Assemble the CNN-Parallelism-Generator from the default tree and a config's choices.

:func:`assemble` builds the tree (composites, modules, actions, plugins), checks every binding
(each value an action requires is provided by exactly one action, with no cycles, and the
training loop gets what it needs), and fixes the execution order: a topological order of the
bindings that keeps the tree's order where the bindings leave a choice.
:func:`run_actions` executes that order on one rank.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autocnnp.engine.spec import ActionChoice, TrainingSpec
from autocnnp.engine.validate import load_spec
from autocnnp.engine.values import unknown
from autocnnp.errors import BindingError, ConfigError, ConfigProblem, PluginError
from autocnnp.generator import registry
from autocnnp.generator.components import (TRAINER_REQUIRES, ActionNode, Binding, Composite,
                                           Generator, Module, PluginNode)
from autocnnp.generator.context import RankContext
from autocnnp.generator.plugins import check_plugin_file, load_plugin_file

TRAINER = "trainer"


def _build_action(module: str, choice: ActionChoice | None, action_type: str,
                  spec: TrainingSpec, load_plugins: bool,
                  problems: list[ConfigProblem]) -> ActionNode:
    where = spec.source
    line = choice.line if choice else None
    engine = spec.engine
    default = registry.default_implementation(action_type, engine)
    impl = (choice.implementation if choice and choice.implementation else default)
    reg = registry.lookup(action_type, impl, engine)
    if reg is None:
        known = sorted(registry.implementations(action_type, engine))
        other = registry.other_engine_of(action_type, impl, engine)
        message = (f"{action_type} implementation {impl!r} belongs to the {other} engine, but "
                   f"dist_strategy {spec.strategy_choice.implementation if spec.strategy_choice else 'ring_allreduce'} "
                   f"runs the {engine} engine; on it {action_type} takes: {', '.join(known)}"
                   if other else unknown(f"{action_type} implementation", impl, known))
        problems.append(ConfigProblem(where, line, f'action type="{action_type}"', message))
        return ActionNode(action_type, impl, None)
    try:
        cls = reg.load()
    except PluginError as exc:
        problems.append(ConfigProblem(where, line, f'action type="{action_type}"', str(exc)))
        return ActionNode(action_type, impl, None)
    options: dict[str, Any] = {}
    has_plugin = bool(choice and choice.plugin_path)
    for key, text in (choice.params.items() if choice else ()):
        param = cls.params.get(key)
        if param is None and has_plugin:
            continue  # a parameter of the plugin: it reads its own options
        if param is None:
            known = ", ".join(sorted(cls.params)) or "none"
            problems.append(ConfigProblem(where, line, f'action type="{action_type}"',
                                          f"unknown parameter {key!r} for {impl} (parameters: {known})"))
            continue
        try:
            options[key] = param.parse(text)
        except ValueError as exc:
            problems.append(ConfigProblem(where, line, f'param name="{key}"', str(exc)))
    node = ActionNode(type=action_type, implementation=impl, cls=cls, options=options,
                      extensible=cls.extensible, origin=reg.origin,
                      requires=tuple(cls.requires), provides=tuple(cls.provides))
    if choice and choice.plugin_path:
        if not cls.extensible:
            problems.append(ConfigProblem(where, line, f'action type="{action_type}"',
                                          f"{action_type} is not extensible: it cannot take a plugin "
                                          f"(extensible actions: {', '.join(_extensible_types())})"))
            return node
        node.plugins.append(_build_plugin(choice, node, where, load_plugins, problems))
        if choice.mode == "replace":
            node.cls = None
            node.requires, node.provides = (), ()
    return node


def _extensible_types() -> list[str]:
    return sorted({r.type for r in registry.registrations() if r.load().extensible})


def _build_plugin(choice: ActionChoice, node: ActionNode, where: Path, load_plugins: bool,
                  problems: list[ConfigProblem]) -> PluginNode:
    path = choice.plugin_path
    assert path is not None
    class_name = choice.plugin_class or path.stem
    plugin = PluginNode(name=class_name, source=str(path), mode=choice.mode,
                        requires=node.requires, provides=node.provides if choice.mode == "replace" else (),
                        options=dict(choice.params))
    for message in check_plugin_file(path, class_name, node.type):
        problems.append(ConfigProblem(where, choice.line, f'action type="{node.type}"', message))
    if load_plugins and not problems:
        cls = load_plugin_file(path, class_name, node.type)
        plugin.cls = cls
        if cls.requires is not None:
            plugin.requires = tuple(cls.requires)
        if cls.provides is not None:
            plugin.provides = tuple(cls.provides)
    return plugin


def assemble(spec: TrainingSpec, *, load_plugins: bool = True) -> Generator:
    """The generator tree for ``spec``, with every binding checked.

    With ``load_plugins=False`` plugin files are checked statically and not imported (what
    ``validate`` and ``plan`` do); the worker assembles with ``load_plugins=True``.
    Raises ConfigError for wrong choices (located at their config line) and BindingError for a
    tree whose bindings do not connect.
    """
    problems: list[ConfigProblem] = []
    chosen = {(m.name, a.type): a for m in spec.generator for a in m.actions}
    composites = []
    for composite_name, modules in registry.DEFAULT_TREE.items():
        children = []
        for module_name, actions in modules.items():
            nodes = [_build_action(module_name, chosen.get((module_name, t)), t, spec,
                                   load_plugins, problems) for t, _ in actions]
            children.append(Module(module_name, nodes))
        composites.append(Composite(composite_name, children))
    if problems:
        raise ConfigError(problems)
    root = Composite(registry.ROOT_NAME, composites)
    bindings, order = resolve_bindings(root)
    return Generator(root=root, bindings=bindings, order=order)


def generator_problems(spec: TrainingSpec, source: Path, spec_ok: bool) -> list[ConfigProblem]:
    """What assembling the generator of ``spec`` finds (implementations, parameters, plugins,
    bindings). With ``spec_ok`` False the spec holds placeholders where the config was wrong,
    so only the located problems count: a binding error or a failure could follow from them."""
    try:
        assemble(spec, load_plugins=False)
    except ConfigError as exc:
        return list(exc.problems)
    except BindingError as exc:
        return [ConfigProblem(source, None, "CNN-Parallelism-Generator", str(exc))] if spec_ok else []
    except Exception:
        if spec_ok:
            raise
    return []


def load_checked_spec(path: Path | str, warnings: list[ConfigProblem] | None = None) -> TrainingSpec:
    """The config at ``path`` validated whole: :func:`~autocnnp.engine.validate.load_spec` and
    the tree its choices make, checked statically (plugin files are read, not imported), every
    problem of both reported at once.

    What ``validate``, ``plan`` and ``run`` call. Raises ConfigError with every problem found.
    """
    return load_spec(path, warnings, more_checks=generator_problems)


def resolve_bindings(root: Composite) -> tuple[list[Binding], list[str]]:
    """Bindings between the actions of ``root`` and their execution order."""
    nodes = {f"{m.name}.{a.type}": a for _, m in root.walk() if isinstance(m, Module)
             for a in m.actions}
    providers: dict[str, str] = {}
    errors = []
    for name, node in nodes.items():
        for value in node.all_provides:
            if value in providers:
                errors.append(f"{value!r} is provided by both {providers[value]} and {name}")
            providers[value] = name
    bindings = []
    consumers = list(nodes.items()) + [(TRAINER, None)]
    for name, node in consumers:
        needs = TRAINER_REQUIRES if node is None else node.all_requires
        for value in needs:
            if value not in providers:
                errors.append(f"{name} requires {value!r}, which no action provides "
                              f"(provided: {', '.join(sorted(providers)) or 'nothing'})")
            else:
                bindings.append(Binding(value, providers[value], name))
    if errors:
        raise BindingError("the component tree does not connect:\n  " + "\n  ".join(errors))

    order: list[str] = []
    done: set[str] = set()
    pending = list(nodes)
    while pending:
        ready = next((n for n in pending
                      if all(providers[v] in done or providers[v] == n
                             for v in nodes[n].all_requires)), None)
        if ready is None:
            raise BindingError("the component tree has a binding cycle between: " + ", ".join(pending))
        order.append(ready)
        done.add(ready)
        pending.remove(ready)
    return bindings, order


def dependents(generator: Generator, action: str) -> list[str]:
    """Actions bound to ``action`` (``module.type``) in either direction: what a port that
    replaces it must also look at (thesis 4.4.1.5)."""
    linked = {b.source for b in generator.bindings if b.target == action}
    linked |= {b.target for b in generator.bindings if b.source == action}
    linked.discard(action)
    return sorted(linked)


def run_actions(generator: Generator, ctx: RankContext) -> None:
    """Execute every action (and its plugins) on this rank, in binding order."""
    for name, node in generator.ordered_actions():
        ctx.log.info("action %s (%s)", name, node.implementation)
        if node.cls is not None:
            node.cls(**node.options).run(ctx)
        for plugin in node.plugins:
            if plugin.cls is None:
                raise BindingError(f"plugin {plugin.source}:{plugin.name} was not loaded; "
                                   f"assemble with load_plugins=True before running")
            ctx.log.info("plugin %s:%s (%s %s)", plugin.source, plugin.name, plugin.mode, name)
            plugin.cls(**plugin.options).run(ctx)
            if plugin.mode == "replace":
                check_replacement(plugin, name, node, ctx.values)


def replacement_duty(plugin: PluginNode, action: str) -> str:
    """What a replacing plugin must do, as validate and plan say it."""
    return (f"plugin {plugin.name} ({plugin.source}) replaces {action}: its run(self, ctx) must "
            f"store {', '.join(plugin.provides) or 'nothing'} in ctx.values")


def replacement_duties(generator: Generator) -> list[str]:
    """:func:`replacement_duty` of every replacing plugin of ``generator``, in tree order."""
    return [replacement_duty(plugin, name) for name, node in generator.actions().items()
            for plugin in node.plugins if plugin.mode == "replace"]


def check_replacement(plugin: PluginNode, action: str, node: ActionNode,
                      values: dict[str, Any]) -> None:
    """Raise PluginError when a replacing plugin left a value it must provide unset: the
    action that needs it would otherwise fail later with an error that names neither."""
    missing = [value for value in plugin.provides if value not in values]
    if missing:
        raise PluginError(
            f"{plugin.source}:{plugin.name}",
            f"replaces {action} (mode=\"replace\") but did not store "
            f"{', '.join(repr(m) for m in missing)} in ctx.values; a replacing plugin must "
            f"provide what {node.implementation} provides: {', '.join(plugin.provides)}",
            remedy=f"set ctx.values[...] for each of them in {plugin.name}.run (autocnnp "
                   f"describe {node.type} says what each carries), or drop mode=\"replace\" "
                   f"to keep the built-in {node.implementation}")
