"""The default component tree as data (thesis Figure 4.3): its names, aliases and shape.

The config language's vocabulary for ``<CNN-Parallelism-Generator>``: which composites hold
which modules, which modules hold which action types, each action type's default
implementation, which action types take plugins, and the spellings accepted for the thesis's
listing. Validation reads it here; :mod:`autocnnp.generator.registry` maps the implementation
names to classes.
"""

from __future__ import annotations

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

#: Action types whose implementation a plugin may replace or extend (thesis: extensible).
EXTENSIBLE_TYPES = frozenset({"dist_strategy", "checkpoint"})

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
    """Whether ``action_type`` accepts plugins."""
    return action_type in EXTENSIBLE_TYPES
