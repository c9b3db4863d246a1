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

#: The engines a job can run on, named by the ``dist_strategy`` implementation that selects
#: them. Replacing ``dist_strategy`` replaces the modules it depends on (thesis 4.4.1.5): on
#: the torch engine every action whose implementation below is engine-specific runs its
#: PyTorch version (same name in the config, same bindings), and the training loop is
#: PyTorch's. ``ring_allreduce`` (Horovod) stays the default.
HOROVOD_ENGINE = "horovod"
TORCH_ENGINE = "torch"
ENGINE_OF_STRATEGY = {"ring_allreduce": HOROVOD_ENGINE, "torch_ddp": TORCH_ENGINE}
#: an engine's default implementations where they differ from :data:`DEFAULT_TREE`'s
ENGINE_DEFAULTS: dict[str, dict[str, str]] = {
    TORCH_ENGINE: {"communication_init": "torch_distributed", "dist_strategy": "torch_ddp"},
}
#: what each engine is, for ``describe`` and ``plan``
ENGINE_LABELS = {HOROVOD_ENGINE: "Horovod ring-allreduce on TensorFlow 2.15 / Keras 2.15",
                 TORCH_ENGINE: "PyTorch DistributedDataParallel (Gloo on CPU, NCCL on GPU)"}

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


def engine_of(strategy: str | None) -> str:
    """The engine a ``dist_strategy`` implementation runs on (a plugin or an implementation
    installed from a package runs on the default Horovod engine)."""
    return ENGINE_OF_STRATEGY.get(strategy or "", HOROVOD_ENGINE)


def default_implementation(action_type: str, engine: str = HOROVOD_ENGINE) -> str:
    """The implementation ``action_type`` gets when the config does not name one."""
    override = ENGINE_DEFAULTS.get(engine, {}).get(action_type)
    if override is not None:
        return override
    return dict(DEFAULT_TREE_BY_MODULE[module_of(action_type) or ""])[action_type]
