"""The built-in actions of the default CNN-Parallelism-Generator tree.

Each class declares the values it ``requires`` and ``provides``: these are the bindings the
generator checks before a job starts and uses to order the actions on every rank. Heavy
imports (TensorFlow, Horovod) happen inside ``run`` only.
"""

from __future__ import annotations

from typing import Any

from autocnnp.generator.components import Action, ExtensibleAction, Param
from autocnnp.generator.context import RankContext


# --- module train_env_def -------------------------------------------------------------------

class HorovodCommunicationInit(Action):
    """Initialise Horovod (MPI or Gloo controller) and publish rank, size and local rank."""

    type = "communication_init"
    name = "horovod"
    provides = ("communicator",)

    def run(self, ctx: RankContext) -> None:
        from autocnnp.components import rank_runtime
        rank_runtime.init_communicator(ctx)


class Seeding(Action):
    """Seed Python, NumPy and TensorFlow from the config's seed (same seed on every rank)."""

    type = "seeding"
    name = "global_seed"
    requires = ("communicator",)
    provides = ("seed",)

    def run(self, ctx: RankContext) -> None:
        from autocnnp.components import rank_runtime
        rank_runtime.seed_everything(ctx)


class LocalRankDevicePlacement(Action):
    """Pin each rank to the GPU of its local rank (CPU when there is none)."""

    type = "device_placement"
    name = "local_rank"
    requires = ("communicator",)
    provides = ("device",)
    params = {"intra_op_threads": Param(int, 0, "TensorFlow intra-op threads (0: auto)"),
              "inter_op_threads": Param(int, 0, "TensorFlow inter-op threads (0: auto)")}

    def run(self, ctx: RankContext) -> None:
        from autocnnp.components import rank_runtime
        rank_runtime.place_device(ctx, gpu=True, **self.options)


class CpuDevicePlacement(LocalRankDevicePlacement):
    """Run every rank on the CPU even when GPUs are visible."""

    name = "cpu"

    def run(self, ctx: RankContext) -> None:
        from autocnnp.components import rank_runtime
        rank_runtime.place_device(ctx, gpu=False, **self.options)


class MemoryGrowth(Action):
    """Let TensorFlow grow GPU memory as needed instead of taking it all at start."""

    type = "memory_allocation"
    name = "growth"
    requires = ("device",)
    provides = ("memory",)

    def run(self, ctx: RankContext) -> None:
        from autocnnp.components import rank_runtime
        rank_runtime.allocate_memory(ctx, growth=True, soft_placement=False)


class SoftPlacement(MemoryGrowth):
    """Memory growth plus soft device placement (ops without a GPU kernel fall back to CPU)."""

    name = "soft_placement"

    def run(self, ctx: RankContext) -> None:
        from autocnnp.components import rank_runtime
        rank_runtime.allocate_memory(ctx, growth=True, soft_placement=True)


class FixedMemory(MemoryGrowth):
    """Let TensorFlow take the whole GPU memory at start (its own default)."""

    name = "fixed"

    def run(self, ctx: RankContext) -> None:
        from autocnnp.components import rank_runtime
        rank_runtime.allocate_memory(ctx, growth=False, soft_placement=False)


# --- module train_strategy_def --------------------------------------------------------------

class Hyperparameters(Action):
    """Inject the hyperparameters: scale the learning rate, set batch size, epochs, loss."""

    type = "hyperparameters"
    name = "inject"
    requires = ("communicator", "task")
    provides = ("hyperparameters", "lr_schedule")

    def run(self, ctx: RankContext) -> None:
        from autocnnp.components import rank_runtime
        rank_runtime.inject_hyperparameters(ctx)


class RingAllreduce(ExtensibleAction):
    """Synchronous data parallelism: Horovod DistributedOptimizer (ring-allreduce), broadcast
    of the initial state from rank 0, metric averaging and the weight-consistency guard."""

    type = "dist_strategy"
    name = "ring_allreduce"
    requires = ("communicator", "model", "hyperparameters", "lr_schedule")
    provides = ("optimizer", "sync_callbacks")

    def run(self, ctx: RankContext) -> None:
        from autocnnp.components import rank_runtime
        rank_runtime.ring_allreduce(ctx)


class PeriodicCheckpoint(ExtensibleAction):
    """Atomic periodic checkpoints, TensorBoard and CSV logs, written on rank 0 only."""

    type = "checkpoint"
    name = "periodic"
    requires = ("communicator", "model", "optimizer")
    provides = ("checkpoints",)

    def run(self, ctx: RankContext) -> None:
        from autocnnp.components import rank_runtime
        rank_runtime.setup_checkpoints(ctx)


# --- module injection -----------------------------------------------------------------------

class SegmentationTask(Action):
    """Define the task: semantic segmentation with the config's classes, loss and metrics."""

    type = "task_definition"
    name = "segmentation"
    provides = ("task",)

    def run(self, ctx: RankContext) -> None:
        from autocnnp.components import rank_runtime
        rank_runtime.define_task(ctx)


class ArchitectureInjection(Action):
    """Build the CNN: a built-in (U-Net, FCN) or the Keras model of a user architecture file."""

    type = "architecture"
    name = "inject"
    requires = ("task", "device", "memory", "seed")
    provides = ("model",)

    def run(self, ctx: RankContext) -> None:
        from autocnnp.components import rank_runtime
        rank_runtime.build_architecture(ctx)


class DatasetInjection(Action):
    """Load the data splits; each rank keeps its own shard of the training split."""

    type = "dataset"
    name = "shard"
    requires = ("task", "communicator", "hyperparameters")
    provides = ("dataset",)

    def run(self, ctx: RankContext) -> None:
        from autocnnp.components import rank_runtime
        rank_runtime.inject_dataset(ctx)

