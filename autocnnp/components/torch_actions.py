"""The torch engine's actions: what ``dist_strategy`` ``torch_ddp`` swaps into the tree.

Choosing ``<action type="dist_strategy"><value>torch_ddp</value></action>`` replaces
``dist_strategy`` and the modules it depends on (thesis 4.4.1.5): communicator init, seeding,
device placement, memory, hyperparameters (the loss), the architecture and the checkpoints
get these PyTorch implementations, under the names the config already uses (``local_rank``,
``growth``, ``periodic``...), with the same bindings. ``task_definition`` and ``dataset`` are
shared with the Horovod engine. Importing this module never imports torch: the bodies are in
:mod:`autocnnp.components.torch_runtime`, imported inside ``run``.
"""

from __future__ import annotations

from typing import Any

from autocnnp.components import actions as horovod_actions
from autocnnp.generator.components import Action, ExtensibleAction
from autocnnp.generator.context import RankContext


def _runtime() -> Any:
    from autocnnp.components import torch_runtime
    return torch_runtime


# --- module train_env_def -------------------------------------------------------------------

class TorchDistributedInit(Action):
    """Initialise torch.distributed (Gloo on CPU, NCCL on GPU) from the launcher's per-rank
    environment and publish rank, size and local rank."""

    type = "communication_init"
    name = "torch_distributed"
    provides = ("communicator",)

    def run(self, ctx: RankContext) -> None:
        _runtime().init_communicator(ctx)


class TorchSeeding(Action):
    """Seed Python, NumPy and torch from the config's seed (the same on every rank); the
    determinism switch turns on torch's deterministic algorithms."""

    type = "seeding"
    name = "global_seed"
    requires = ("communicator",)
    provides = ("seed",)

    def run(self, ctx: RankContext) -> None:
        _runtime().seed_everything(ctx)


class TorchLocalRankDevice(Action):
    """Pin each rank to the GPU of its local rank (CPU when there is none); torch's thread
    counts from the parameters or ``<deployment> threads_per_rank``."""

    type = "device_placement"
    name = "local_rank"
    requires = ("communicator",)
    provides = ("device",)
    params = horovod_actions.LocalRankDevicePlacement.params

    def run(self, ctx: RankContext) -> None:
        _runtime().place_device(ctx, gpu=True, **self.options)


class TorchCpuDevice(TorchLocalRankDevice):
    """Run every rank on the CPU even when GPUs are visible."""

    name = "cpu"

    def run(self, ctx: RankContext) -> None:
        _runtime().place_device(ctx, gpu=False, **self.options)


class TorchMemoryGrowth(Action):
    """GPU memory as torch's caching allocator takes it (grows as needed): nothing to set."""

    type = "memory_allocation"
    name = "growth"
    requires = ("device",)
    provides = ("memory",)

    def run(self, ctx: RankContext) -> None:
        _runtime().allocate_memory(ctx, fraction=None, soft_placement=False)


class TorchSoftPlacement(TorchMemoryGrowth):
    """As ``growth``; soft placement has no meaning in torch (an op runs where its tensors
    are), so it is recorded and nothing else changes."""

    name = "soft_placement"

    def run(self, ctx: RankContext) -> None:
        _runtime().allocate_memory(ctx, fraction=None, soft_placement=True)


class TorchFixedMemory(TorchMemoryGrowth):
    """Allow this rank the whole memory of its GPU (``set_per_process_memory_fraction(1.0)``)."""

    name = "fixed"

    def run(self, ctx: RankContext) -> None:
        _runtime().allocate_memory(ctx, fraction=1.0, soft_placement=False)


# --- module train_strategy_def --------------------------------------------------------------

class TorchHyperparameters(Action):
    """Inject the hyperparameters: scale the learning rate, set batch size, epochs and the
    PyTorch loss (the same losses as the Horovod engine)."""

    type = "hyperparameters"
    name = "inject"
    requires = ("communicator", "task")
    provides = ("hyperparameters", "lr_schedule")

    def run(self, ctx: RankContext) -> None:
        _runtime().inject_hyperparameters(ctx)


class TorchDDP(ExtensibleAction):
    """Synchronous data parallelism with PyTorch DistributedDataParallel: gradients averaged
    by allreduce (NCCL ring on GPUs, Gloo on CPUs) during backward, rank 0's parameters and
    buffers broadcast at wrap time (BatchNorm's running statistics are then averaged across
    ranks at every epoch end, not broadcast), the optimizer at the schedule's first learning
    rate.

    Selecting it runs the job on the torch engine: communication_init, seeding,
    device_placement, memory_allocation, hyperparameters, architecture and checkpoint take
    their PyTorch implementations, and the training loop is PyTorch's."""

    type = "dist_strategy"
    name = "torch_ddp"
    requires = ("communicator", "model", "hyperparameters", "lr_schedule")
    provides = ("optimizer", "sync_callbacks")

    def run(self, ctx: RankContext) -> None:
        _runtime().torch_ddp(ctx)


class TorchPeriodicCheckpoint(ExtensibleAction):
    """Atomic periodic checkpoints as state dicts (model, optimizer, learning-rate state and
    every rank's RNG), the per-epoch JSON-lines metrics and TensorBoard, written on rank 0."""

    type = "checkpoint"
    name = "periodic"
    requires = ("communicator", "model", "optimizer")
    provides = ("checkpoints",)

    def run(self, ctx: RankContext) -> None:
        _runtime().setup_checkpoints(ctx)


# --- module injection -----------------------------------------------------------------------

class TorchArchitectureInjection(Action):
    """Build the CNN: a built-in (U-Net, FCN in PyTorch) or the ``torch.nn.Module`` of a user
    architecture file's ``build_model``."""

    type = "architecture"
    name = "inject"
    requires = ("task", "device", "memory", "seed")
    provides = ("model",)

    def run(self, ctx: RankContext) -> None:
        _runtime().build_architecture(ctx)
