"""The registry of components: built-ins by name, plus installed plugins (entry points).

Built-in actions are a ``(type, implementation) -> "module:Class"`` map, imported only when
asked for. Installed packages add or override implementations through the entry-point group
``autocnnp.actions``, with entry-point names ``TYPE.IMPLEMENTATION``, for example::

    [options.entry_points]
    autocnnp.actions =
        dist_strategy.parameter_server = my_pkg.ps:ParameterServer

The default tree (thesis Figure 4.3) is data in :mod:`autocnnp.engine.default_tree`; its names are
re-exported here for the generator's readers.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache

from autocnnp.engine.default_tree import (ACTION_ALIASES, DEFAULT_TREE, DEFAULT_TREE_BY_MODULE,
                                  HOROVOD_ENGINE, MODULE_ALIASES, ROOT_NAME, TORCH_ENGINE,
                                  action_types, default_implementation, is_extensible,
                                  module_names, module_of)
from autocnnp.errors import PluginError
from autocnnp.generator.plugins import check_plugin_class

__all__ = ["ACTION_ALIASES", "BUILTIN_ACTIONS", "DEFAULT_TREE", "DEFAULT_TREE_BY_MODULE",
           "ENGINE_SPECIFIC_TYPES", "ENTRY_POINT_GROUP", "HOROVOD_ENGINE", "MODULE_ALIASES",
           "ROOT_NAME", "Registration", "TORCH_ACTIONS", "TORCH_ENGINE", "action_types",
           "default_implementation", "engine_summary", "implementations", "is_extensible", "lookup",
           "module_names", "module_of", "other_engine_of", "registrations"]

ENTRY_POINT_GROUP = "autocnnp.actions"

#: (action type, implementation name) -> dotted path of the built-in class
BUILTIN_ACTIONS: dict[tuple[str, str], str] = {
    ("communication_init", "horovod"): "autocnnp.components.actions:HorovodCommunicationInit",
    ("seeding", "global_seed"): "autocnnp.components.actions:Seeding",
    ("device_placement", "local_rank"): "autocnnp.components.actions:LocalRankDevicePlacement",
    ("device_placement", "cpu"): "autocnnp.components.actions:CpuDevicePlacement",
    ("memory_allocation", "growth"): "autocnnp.components.actions:MemoryGrowth",
    ("memory_allocation", "soft_placement"): "autocnnp.components.actions:SoftPlacement",
    ("memory_allocation", "fixed"): "autocnnp.components.actions:FixedMemory",
    ("dist_strategy", "ring_allreduce"): "autocnnp.components.actions:RingAllreduce",
    ("checkpoint", "periodic"): "autocnnp.components.actions:PeriodicCheckpoint",
    ("hyperparameters", "inject"): "autocnnp.components.actions:Hyperparameters",
    ("task_definition", "segmentation"): "autocnnp.components.actions:SegmentationTask",
    ("architecture", "inject"): "autocnnp.components.actions:ArchitectureInjection",
    ("dataset", "shard"): "autocnnp.components.actions:DatasetInjection",
}

#: the torch engine's implementations (``dist_strategy`` ``torch_ddp``): the same names as the
#: Horovod engine's where the config's meaning is the same, PyTorch bodies. Action types not
#: listed (task_definition, dataset) are engine-neutral and shared.
TORCH_ACTIONS: dict[tuple[str, str], str] = {
    ("communication_init", "torch_distributed"): "autocnnp.components.torch_actions:TorchDistributedInit",
    ("seeding", "global_seed"): "autocnnp.components.torch_actions:TorchSeeding",
    ("device_placement", "local_rank"): "autocnnp.components.torch_actions:TorchLocalRankDevice",
    ("device_placement", "cpu"): "autocnnp.components.torch_actions:TorchCpuDevice",
    ("memory_allocation", "growth"): "autocnnp.components.torch_actions:TorchMemoryGrowth",
    ("memory_allocation", "soft_placement"): "autocnnp.components.torch_actions:TorchSoftPlacement",
    ("memory_allocation", "fixed"): "autocnnp.components.torch_actions:TorchFixedMemory",
    ("dist_strategy", "torch_ddp"): "autocnnp.components.torch_actions:TorchDDP",
    ("checkpoint", "periodic"): "autocnnp.components.torch_actions:TorchPeriodicCheckpoint",
    ("hyperparameters", "inject"): "autocnnp.components.torch_actions:TorchHyperparameters",
    ("architecture", "inject"): "autocnnp.components.torch_actions:TorchArchitectureInjection",
}
#: action types whose implementation depends on the engine
ENGINE_SPECIFIC_TYPES = frozenset(t for t, _ in TORCH_ACTIONS)

@dataclass(frozen=True)
class Registration:
    """One implementation of an action type and where it comes from."""

    type: str
    name: str
    target: str
    origin: str

    def load(self) -> type:
        """Import the class; an installed plugin is checked against the action interface."""
        module_name, _, attr = self.target.partition(":")
        plugin = f"{self.type}.{self.name} ({self.origin}: {self.target})"
        try:
            module = importlib.import_module(module_name)
            cls = getattr(module, attr)
        except Exception as exc:  # the package's code: report it, never crash validation
            raise PluginError(plugin, f"cannot be loaded: {type(exc).__name__}: {exc}",
                              remedy="reinstall the package that provides it") from exc
        if self.origin != "builtin":
            check_plugin_class(cls, plugin, self.type, installed=True)
        return cls


def _any_distribution_declares_plugins() -> bool:
    """A cheap scan of installed metadata for our entry-point group.

    importlib.metadata costs ~20 ms to import, a fifth of ``autocnnp validate``'s budget;
    most environments have no plugin package, so look at the files first.
    """
    import sys
    from pathlib import Path

    marker = f"[{ENTRY_POINT_GROUP}]"
    for entry in sys.path:
        folder = Path(entry or ".")
        if not folder.is_dir():
            continue
        for ep_file in folder.glob("*.dist-info/entry_points.txt"):
            try:
                if marker in ep_file.read_text(errors="replace"):
                    return True
            except OSError:
                continue
        for ep_file in folder.glob("*.egg-info/entry_points.txt"):
            try:
                if marker in ep_file.read_text(errors="replace"):
                    return True
            except OSError:
                continue
    return False


@lru_cache(maxsize=1)
def _entry_point_registrations() -> tuple[Registration, ...]:
    if not _any_distribution_declares_plugins():
        return ()
    from importlib.metadata import entry_points

    found = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        action_type, _, impl = ep.name.partition(".")
        dist = getattr(ep, "dist", None)
        origin = f"entry point of {dist.name} {dist.version}" if dist else "entry point"
        found.append(Registration(action_type, impl or action_type, ep.value, origin))
    return tuple(found)


def registrations(engine: str = HOROVOD_ENGINE) -> list[Registration]:
    """Every implementation known on ``engine``; installed plugins override built-ins of the
    same name. On the torch engine the engine-specific types take :data:`TORCH_ACTIONS` only
    (a Horovod implementation cannot run there), and ``torch_ddp`` is also listed for the
    Horovod engine's ``dist_strategy``: choosing it is what switches engines."""
    table = {key: Registration(key[0], key[1], target, "builtin")
             for key, target in BUILTIN_ACTIONS.items()}
    torch_table = {key: Registration(key[0], key[1], target, "builtin")
                   for key, target in TORCH_ACTIONS.items()}
    if engine == TORCH_ENGINE:
        table = {key: reg for key, reg in table.items() if key[0] not in ENGINE_SPECIFIC_TYPES}
        table.update(torch_table)
    else:
        table[("dist_strategy", "torch_ddp")] = torch_table[("dist_strategy", "torch_ddp")]
    for reg in _entry_point_registrations():
        table[(reg.type, reg.name)] = reg
    return list(table.values())


def implementations(action_type: str, engine: str = HOROVOD_ENGINE) -> dict[str, Registration]:
    return {r.name: r for r in registrations(engine) if r.type == action_type}


def lookup(action_type: str, name: str, engine: str = HOROVOD_ENGINE) -> Registration | None:
    return implementations(action_type, engine).get(name)


def engine_summary(engine: str) -> str:
    """One line for ``plan`` and ``describe``: what ``engine`` is and which action types it
    runs in its own implementation (the modules ``dist_strategy`` depends on)."""
    from autocnnp.engine.default_tree import ENGINE_LABELS

    if engine == TORCH_ENGINE:
        swapped = [t for t in action_types() if t in ENGINE_SPECIFIC_TYPES]
        shared = [t for t in action_types() if t not in ENGINE_SPECIFIC_TYPES]
        return (f"{engine} ({ENGINE_LABELS[engine]}); PyTorch implementations of "
                f"{', '.join(swapped)}; shared with the Horovod engine: {', '.join(shared)}")
    return f"{engine} ({ENGINE_LABELS[engine]})"


def other_engine_of(action_type: str, name: str, engine: str) -> str | None:
    """The engine that has ``action_type.name`` when ``engine`` has not (None: no engine has)."""
    for other in (HOROVOD_ENGINE, TORCH_ENGINE):
        if other != engine and lookup(action_type, name, other) is not None:
            return other
    return None
