"""The rank-side action contract: the context every action of a rank reads and writes, and
the engine-neutral values the built-in actions provide through it.

An action (:class:`~autocnnp.generator.components.Action`) declares the binding names it
``requires`` and ``provides``; the generator orders the actions so that each name is provided
before it is required, and each action runs on the rank's :class:`RankContext`. The built-in
names have typed accessors (``ctx.communicator``, ``ctx.task``, ``ctx.hyperparameters``...);
a plugin's own names are read with :meth:`RankContext.require` and written into
:attr:`RankContext.values`.

=================  ================================  =========================================
binding            value                             provided by (Keras / torch)
=================  ================================  =========================================
``communicator``   :class:`Communicator`             ``init_communicator``
``seed``           int                               ``seed_everything``
``device``         :class:`DevicePlacement`          ``place_device``
``memory``         :class:`MemoryPolicy`             ``allocate_memory``
``task``           :class:`SegmentationTask`         ``define_task``
``hyperparameters`` :class:`HyperparameterValues`    ``inject_hyperparameters``
``lr_schedule``    the engine's LR schedule          ``inject_hyperparameters``
``model``          ``tf.keras.Model`` / DDP module   ``build_architecture``
``dataset``        this rank's shard (RankDataset)   ``inject_dataset``
``optimizer``      the distributed optimizer         ``ring_allreduce``
``sync_callbacks`` what keeps the ranks in step      ``ring_allreduce``
``checkpoints``    the checkpoint manager/callbacks  ``setup_checkpoints``
``callbacks``      extra callbacks (plugins add)     anyone
=================  ================================  =========================================

The model, optimizer, dataset and checkpoint objects are the engine's own (Keras or torch),
so their accessors are untyped; the others are the same on both engines.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from autocnnp.engine.spec import TrainingSpec


# --- the engine-neutral values the built-in actions provide -----------------------------------

@dataclass(frozen=True)
class Communicator:
    """This rank's place in the job, and the Horovod module that connects it to the others."""

    rank: int
    size: int
    local_rank: int
    local_size: int
    hostname: str
    hvd: Any = field(repr=False, compare=False, default=None)

    @property
    def is_chief(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class DevicePlacement:
    """Where this rank computes: ``GPU`` (one, by local rank) or ``CPU``."""

    kind: str
    device: str
    gpu_index: int | None
    intra_op_threads: int
    inter_op_threads: int


@dataclass(frozen=True)
class MemoryPolicy:
    """GPU memory growth and soft placement as set for this rank."""

    growth: bool
    soft_placement: bool


@dataclass(frozen=True)
class SegmentationTask:
    """Semantic segmentation: classes, and the image shape the model is built for."""

    classes: tuple[str, ...]
    input_shape: tuple[int, int, int]
    name: str = "imaging_segmentation"

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class HyperparameterValues:
    """The hyperparameters as injected on this rank (learning rates already scaled)."""

    base_lr: float
    target_lr: float
    initial_lr: float
    optimizer: str
    momentum: float
    loss_name: str
    loss: Callable[..., Any] = field(repr=False, compare=False)
    batch_size: int = 8
    global_batch_size: int = 8
    start_epoch: int = 0
    end_epoch: int = 1
    workers: int = 1
    beta_1: float = 0.9
    beta_2: float = 0.999
    weight_decay: float | None = None
    class_weights: tuple[float, ...] = ()

    @classmethod
    def injected(cls, hp: Any, schedule: Any, *, optimizer: str, loss: Callable[..., Any],
                 workers: int) -> "HyperparameterValues":
        """The values of the config's ``<hyperparameters>`` ``hp`` on a job of ``workers``
        ranks, with the learning rates of ``schedule`` (the LR policy)."""
        return cls(
            base_lr=float(hp.lr), target_lr=schedule.target,
            initial_lr=schedule(hp.start_epoch), optimizer=optimizer, momentum=float(hp.momentum),
            loss_name=hp.loss, loss=loss, batch_size=int(hp.minibatch_size),
            global_batch_size=int(hp.minibatch_size) * workers, start_epoch=int(hp.start_epoch),
            end_epoch=int(hp.end_epoch), workers=workers, beta_1=float(hp.beta_1),
            beta_2=float(hp.beta_2), weight_decay=hp.weight_decay,
            class_weights=tuple(float(w) for w in hp.class_weights))



# --- the context -------------------------------------------------------------------------------

@dataclass
class RankContext:
    """State of one rank: the spec, the run directory and the values bound between actions,
    keyed by the binding names declared on the action classes (see the module's table)."""

    spec: TrainingSpec
    run_dir: Path
    resume: bool = False
    values: dict[str, Any] = field(default_factory=dict)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("autocnnp.worker"))

    def require(self, name: str) -> Any:
        """The value bound to ``name``; an error naming it when no action provided it."""
        try:
            return self.values[name]
        except KeyError:
            raise RuntimeError(
                f"binding {name!r} has no value: the action that provides it did not run "
                f"(this is a bug in the generator's ordering or in a plugin)") from None

    @property
    def communicator(self) -> Communicator:
        return self.require("communicator")

    @property
    def seed(self) -> int:
        return self.require("seed")

    @property
    def device(self) -> DevicePlacement:
        return self.require("device")

    @property
    def memory(self) -> MemoryPolicy:
        return self.require("memory")

    @property
    def task(self) -> SegmentationTask:
        return self.require("task")

    @property
    def hyperparameters(self) -> HyperparameterValues:
        return self.require("hyperparameters")

    @property
    def lr_schedule(self) -> Any:
        return self.require("lr_schedule")

    @property
    def model(self) -> Any:
        return self.require("model")

    @property
    def dataset(self) -> Any:
        return self.require("dataset")

    @property
    def optimizer(self) -> Any:
        return self.require("optimizer")

    @property
    def sync_callbacks(self) -> Any:
        return self.require("sync_callbacks")

    @property
    def checkpoints(self) -> Any:
        return self.require("checkpoints")

    @property
    def callbacks(self) -> list[Any]:
        """Extra callbacks the training loop runs after its own (a plugin appends to it)."""
        return self.values.setdefault("callbacks", [])

    @property
    def rank(self) -> int:
        return self.values["communicator"].rank if "communicator" in self.values else 0

    @property
    def is_chief(self) -> bool:
        return self.rank == 0
