"""Show what a component does: its documentation, parameters, bindings and dependents.

NAME is an action type (dist_strategy), TYPE.IMPLEMENTATION (device_placement.cpu), a module
name (train_env_def) or `context`: what `ctx` offers a plugin and what each binding in
`ctx.values` carries. For an action it says what each binding it requires and provides holds;
for an extensible action it also lists the actions bound to it (what a port to another
parallelism approach must replace or check along with it) and what a plugin that replaces it
must store in `ctx.values`.
"""

from __future__ import annotations

import argparse
import inspect

from autocnnp.engine.schema import did_you_mean
from autocnnp.errors import AutocnnpError
from autocnnp.generator import registry
from autocnnp.generator.bindings import context_text, describe_binding

#: names that show the plugin contract instead of a component
CONTEXT_NAMES = ("context", "ctx")

HELP = "show a component's parameters and documentation"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="action type, TYPE.IMPLEMENTATION, module name, or "
                                     "'context' (what ctx and its bindings offer a plugin)")


def _default_generator():
    from pathlib import Path

    from autocnnp.engine.spec import ArchitectureSpec, DataSpec, TrainingSpec
    from autocnnp.generator.assembly import assemble
    spec = TrainingSpec(source=Path("default.xml"), task="imaging_segmentation",
                        parallelism_degree=1, architecture=ArchitectureSpec(),
                        data=DataSpec(train=Path(".")))
    return assemble(spec, load_plugins=False)


def describe_action(action_type: str, impl: str | None) -> str:
    module = registry.module_of(action_type)
    default = dict(registry.DEFAULT_TREE_BY_MODULE[module])[action_type]
    impls = registry.implementations(action_type)
    reg = impls.get(impl or default)
    if reg is None:
        raise AutocnnpError(f"{action_type} has no implementation {impl!r}"
                            f"{did_you_mean(impl or '', list(impls))} Known: {', '.join(impls)}")
    cls = reg.load()
    lines = [f"{action_type}.{reg.name}  ({'extensible' if cls.extensible else 'non_extensible'} "
             f"action of module {module}; {reg.origin}: {reg.target})", "",
             inspect.cleandoc(cls.__doc__ or "(no documentation)"), "",
             f"implementations: {', '.join(impls)} (default {default})",
             f"requires: {', '.join(cls.requires) or '-'}",
             f"provides: {', '.join(cls.provides) or '-'}"]
    if cls.requires or cls.provides:
        lines.append("bindings (in ctx.values):")
        engine = "torch" if reg.target.startswith("autocnnp.components.torch_actions") \
            else "horovod"
        lines += [f"  {describe_binding(name, engine)}"
                  for name in dict.fromkeys(cls.requires + cls.provides)]
    if cls.params:
        lines.append("parameters (<param name=...>):")
        for name, p in cls.params.items():
            lines.append(f"  {name} ({p.type.__name__}, default {p.default!r}): {p.doc}")
    else:
        lines.append("parameters: none")
    if action_type == "dist_strategy":
        from autocnnp.engine.default_tree import ENGINE_OF_STRATEGY

        lines.append("engines (this action's value chooses the engine every rank runs):")
        for strategy, engine in ENGINE_OF_STRATEGY.items():
            lines.append(f"  {strategy}: {registry.engine_summary(engine)}")
    if cls.extensible:
        from autocnnp.generator.assembly import dependents
        deps = dependents(_default_generator(), f"{module}.{action_type}")
        lines.append(f"bound to (check these when replacing it): {', '.join(deps)}")
        lines.append("plugins: subclass autocnnp.generator.ActionPlugin, set type = "
                     f"\"{action_type}\", implement run(self, ctx); see docs/plugins.md")
        lines.append(f"a plugin with mode=\"replace\" must store in ctx.values: "
                     f"{', '.join(cls.provides) or 'nothing'}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    name = args.name
    if name in CONTEXT_NAMES:
        print(context_text())
        return 0
    if name in registry.module_names() or name in registry.MODULE_ALIASES:
        module = registry.MODULE_ALIASES.get(name, name)
        print(f"{module} (module)")
        for action_type, default in registry.DEFAULT_TREE_BY_MODULE[module]:
            print(f"  {action_type}: default {default}")
        return 0
    action_type, _, impl = name.partition(".")
    action_type = registry.ACTION_ALIASES.get(action_type.lower(), action_type)
    if action_type not in registry.action_types():
        known = registry.action_types() + registry.module_names() + ["context"]
        raise AutocnnpError(f"unknown component {name!r}{did_you_mean(name, known)} "
                            f"Known: {', '.join(known)}")
    print(describe_action(action_type, impl or None))
    return 0
