"""The registry of components: built-ins by name, plus installed plugins (entry points).

Built-in actions are a ``(type, implementation) -> "module:Class"`` map, imported only when
asked for. Installed packages add or override implementations through the entry-point group
``autocnnp.actions``, with entry-point names ``TYPE.IMPLEMENTATION``, for example::

    [options.entry_points]
    autocnnp.actions =
        dist_strategy.parameter_server = my_pkg.ps:ParameterServer

The default tree (thesis Figure 4.3) is data here too: which composites hold which modules,
which modules hold which action types, and each action type's default implementation.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache

from autocnnp.errors import PluginError

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

#: The default tree: composite -> modules -> (action type, default implementation).
DEFAULT_TREE: dict[str, dict[str, tuple[tuple[str, str], ...]]] = {
    "parallelism_definition": {
        "train_env_def": (("communication_init", "horovod"), ("seeding", "global_seed"),
                          ("device_placement", "local_rank"), ("memory_allocation", "growth")),
        "train_strategy_def": (("dist_strategy", "ring_allreduce"), ("checkpoint", "periodic"),
                               ("hyperparameters", "inject")),
    },
    "model_definition": {
        "injection": (("task_definition", "segmentation"), ("architecture", "inject"),
                      ("dataset", "shard")),
    },
}
ROOT_NAME = "cnn_parallelism_generator"
DEFAULT_TREE_BY_MODULE = {module: actions for modules in DEFAULT_TREE.values()
                          for module, actions in modules.items()}

#: Spellings accepted for compatibility with the thesis's listing (warn, then use canonical).
MODULE_ALIASES = {"train_srategy_def": "train_strategy_def", "training_strategy_def": "train_strategy_def",
                  "train_environment_def": "train_env_def", "injection_module": "injection"}
ACTION_ALIASES = {"tr_checkpoint": "checkpoint", "training_checkpoint": "checkpoint",
                  "distributed_optimizer": "dist_strategy", "hyperparameters_injection": "hyperparameters",
                  "architecture_injection": "architecture", "dataset_injection": "dataset"}


def module_of(action_type: str) -> str | None:
    """The module of the default tree that holds ``action_type``."""
    for modules in DEFAULT_TREE.values():
        for module, actions in modules.items():
            if any(t == action_type for t, _ in actions):
                return module
    return None


def action_types() -> list[str]:
    return [t for modules in DEFAULT_TREE.values() for acts in modules.values() for t, _ in acts]


def module_names() -> list[str]:
    return [m for modules in DEFAULT_TREE.values() for m in modules]


def is_extensible(action_type: str) -> bool:
    """Whether ``action_type`` accepts plugins (its built-in default is extensible)."""
    module = module_of(action_type)
    default = dict(DEFAULT_TREE_BY_MODULE[module])[action_type] if module else None
    target = BUILTIN_ACTIONS.get((action_type, default)) if default else None
    return bool(target and Registration(action_type, default, target, "builtin").load().extensible)


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
            _check_installed_action(cls, self, plugin)
        return cls


def _check_installed_action(cls: object, reg: "Registration", plugin: str) -> None:
    """An entry-point implementation must be an ExtensibleAction of an extensible type."""
    import inspect

    from autocnnp.generator.components import ExtensibleAction

    if not (inspect.isclass(cls) and issubclass(cls, ExtensibleAction)):
        raise PluginError(plugin, "must be a class that subclasses autocnnp.generator.ExtensibleAction")
    if reg.type not in action_types():
        raise PluginError(plugin, f"names unknown action type {reg.type!r}; known: {', '.join(action_types())}")
    if not is_extensible(reg.type):
        raise PluginError(plugin, f"{reg.type} is not extensible: only extensible actions "
                                  f"(dist_strategy, checkpoint) take installed implementations")
    if cls.type != reg.type:
        raise PluginError(plugin, f"declares type {cls.type!r} but is registered for {reg.type!r}")
    params = [p.name for p in inspect.signature(cls.run).parameters.values()]
    if cls.run is ExtensibleAction.run or params != ["self", "ctx"]:
        raise PluginError(plugin, "must implement run(self, ctx)")


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


def registrations() -> list[Registration]:
    """Every known implementation; installed plugins override built-ins of the same name."""
    table = {key: Registration(key[0], key[1], target, "builtin")
             for key, target in BUILTIN_ACTIONS.items()}
    for reg in _entry_point_registrations():
        table[(reg.type, reg.name)] = reg
    return list(table.values())


def implementations(action_type: str) -> dict[str, Registration]:
    return {r.name: r for r in registrations() if r.type == action_type}


def lookup(action_type: str, name: str) -> Registration | None:
    return implementations(action_type).get(name)
