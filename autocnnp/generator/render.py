"""Human- and tool-readable views of an assembled generator."""

from __future__ import annotations

from typing import Any

from autocnnp.generator.components import ActionNode, Composite, Generator, Module


def _action_line(node: ActionNode) -> str:
    text = f"{node.type}: {node.implementation if node.cls is not None else '(replaced)'}"
    if node.extensible:
        text += "  [extensible]"
    if node.options:
        text += "  " + " ".join(f"{k}={v}" for k, v in node.options.items())
    for plugin in node.plugins:
        text += f"  + plugin {plugin.name} ({plugin.source}, {plugin.mode})"
        if plugin.mode == "replace":
            text += f" must provide: {', '.join(plugin.provides) or 'nothing'}"
    return text


def render_tree(generator: Generator) -> str:
    """The component tree as an indented text drawing."""
    lines: list[str] = [generator.root.name]

    def walk(component: Composite | Module, prefix: str) -> None:
        children: list[Any] = (component.children if isinstance(component, Composite)
                               else component.actions)
        for i, child in enumerate(children):
            last = i == len(children) - 1
            branch, extend = ("└── ", "    ") if last else ("├── ", "│   ")
            if isinstance(child, ActionNode):
                lines.append(prefix + branch + _action_line(child))
            else:
                kind = "composite" if isinstance(child, Composite) else "module"
                lines.append(f"{prefix}{branch}{child.name} ({kind})")
                walk(child, prefix + extend)

    walk(generator.root, "")
    return "\n".join(lines)


def render_order(generator: Generator) -> str:
    """Execution order with what each action receives through its bindings."""
    incoming: dict[str, list[str]] = {}
    for b in generator.bindings:
        incoming.setdefault(b.target, []).append(f"{b.value}<-{b.source.split('.')[-1]}")
    lines = []
    for i, name in enumerate(generator.order, 1):
        needs = ", ".join(incoming.get(name, [])) or "-"
        lines.append(f"{i:2d}. {name:38s} {needs}")
    trainer = ", ".join(incoming.get("trainer", []))
    lines.append(f"    then train and evaluate            {trainer}")
    return "\n".join(lines)


def generator_to_dict(generator: Generator) -> dict[str, Any]:
    def component(c: Composite | Module) -> dict[str, Any]:
        if isinstance(c, Composite):
            return {"composite": c.name, "children": [component(x) for x in c.children]}
        return {"module": c.name, "actions": [
            {"type": a.type, "implementation": a.implementation, "extensible": a.extensible,
             "origin": a.origin, "options": a.options, "requires": list(a.all_requires),
             "provides": list(a.all_provides),
             "plugins": [{"name": p.name, "source": p.source, "mode": p.mode} for p in a.plugins]}
            for a in c.actions]}

    return {"tree": component(generator.root),
            "bindings": [{"value": b.value, "source": b.source, "target": b.target}
                         for b in generator.bindings],
            "order": list(generator.order)}
