"""List every registered action implementation, where it comes from, and the default tree.

Built-ins come from autocnnp itself; installed packages add implementations through the
entry-point group `autocnnp.actions` (name TYPE.IMPLEMENTATION). Plugin files named in a
config are shown by `autocnnp plan CONFIG`.
"""

from __future__ import annotations

import argparse
import json

from autocnnp.generator import registry

HELP = "list registered components and their origin"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("text", "json"), default="text")


def run(args: argparse.Namespace) -> int:
    # both engines: the Horovod engine's, then what the torch engine (torch_ddp) runs instead
    horovod = registry.registrations(registry.HOROVOD_ENGINE)
    torch = [r for r in registry.registrations(registry.TORCH_ENGINE) if r not in horovod]
    regs = sorted(horovod + torch, key=lambda r: (registry.action_types().index(r.type)
                                                  if r.type in registry.action_types() else 99,
                                                  r.target.startswith("autocnnp.components.torch"),
                                                  r.name))
    if args.format == "json":
        print(json.dumps([{"type": r.type, "implementation": r.name, "target": r.target,
                           "origin": r.origin, "module": registry.module_of(r.type),
                           "extensible": r.load().extensible} for r in regs], indent=2))
        return 0
    print(f"{registry.ROOT_NAME} (default tree)")
    for composite, modules in registry.DEFAULT_TREE.items():
        print(f"  {composite} (composite)")
        for module, actions in modules.items():
            print(f"    {module} (module)")
            for action_type, default in actions:
                ext = "extensible" if registry.is_extensible(action_type) else "non_extensible"
                impls = [r for r in regs if r.type == action_type]
                print(f"      {action_type:20s} {ext:15s} default {default}")
                for r in impls:
                    engine = ("torch engine" if r.target.startswith("autocnnp.components.torch")
                              else r.origin)
                    print(f"        - {r.name:18s} {engine:12s} {r.target}")
    print("\nDescribe one: autocnnp describe TYPE[.IMPLEMENTATION]")
    return 0
