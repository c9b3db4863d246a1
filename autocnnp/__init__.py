"""autocnnp: one XML training config in, a data-parallel segmentation training job out.

The package is split as the design card asks:

- ``autocnnp.engine``: load and validate configs, the typed ``TrainingSpec``, planning.
- ``autocnnp.generator``: the CNN-Parallelism-Generator (composites, modules, actions,
  bindings), the component registry and plugin loading.
- ``autocnnp.components``: built-in actions, models, data loaders, metrics, LR policies.
- ``autocnnp.run_manage``: backends that launch ranks, the worker, monitoring.

Nothing in ``engine`` or ``generator`` imports TensorFlow, Horovod or docker at module level,
so ``autocnnp validate`` and ``autocnnp plan`` stay fast.
"""

__version__ = "0.1.0"
