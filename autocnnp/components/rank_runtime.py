"""What the built-in actions do on every rank (the bodies of ``autocnnp.components.actions``).

Each function reads what it needs from the :class:`~autocnnp.generator.context.RankContext`
and stores what it provides in ``ctx.values`` under the action's binding names:

=========================  ==================  ================================================
function                   provides            value
=========================  ==================  ================================================
init_communicator          ``communicator``    :class:`Communicator` (rank, size, hvd module)
seed_everything            ``seed``            the seed (int)
place_device               ``device``          :class:`DevicePlacement`
allocate_memory            ``memory``          :class:`MemoryPolicy`
define_task                ``task``            :class:`SegmentationTask`
inject_hyperparameters     ``hyperparameters``  :class:`HyperparameterValues`
                           ``lr_schedule``      :class:`~autocnnp.components.lr_policies.LRSchedule`
build_architecture         ``model``           the ``tf.keras.Model``
inject_dataset             ``dataset``         :class:`RankDataset` (this rank's shard)
ring_allreduce             ``optimizer``       ``hvd.DistributedOptimizer`` (legacy optimizer)
                           ``sync_callbacks``  Keras callbacks that keep ranks in step
setup_checkpoints          ``checkpoints``     :class:`CheckpointSetup`
=========================  ==================  ================================================

``ctx.callbacks`` is a list of extra Keras callbacks that the training loop passes to ``fit``
after the synchronisation and checkpoint callbacks; a plugin adds to it with
``ctx.callbacks.append(cb)``. Callbacks run on every rank: a plugin that writes files should
do so only when ``ctx.is_chief``. The values' classes and the accessors are the rank-side
contract, :mod:`autocnnp.generator.context`.

Order matters and is the generator's job (thesis 4.3.5): TensorFlow's device and thread
settings only take effect before its runtime starts, so nothing before ``place_device`` and
``allocate_memory`` may run a TensorFlow op; seeding does not.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from autocnnp.engine.rundir import atomic_write, replace_dir, write_json
from autocnnp.engine.vocabulary import HOROVOD_VERSION, OPTIMIZERS, rank_host
from autocnnp.engine.vocabulary import INTER_OP_THREADS_ENV as ENV_INTER_OP
from autocnnp.engine.vocabulary import INTRA_OP_THREADS_ENV as ENV_INTRA_OP
from autocnnp.errors import AutocnnpError, DataError, EnvironmentProblemError
from autocnnp.generator.context import (Communicator, DevicePlacement, HyperparameterValues,
                                        MemoryPolicy, RankContext, SegmentationTask)

#: training steps after which the weight guard compares ranks (step 1 is right after
#: BroadcastGlobalVariablesCallback copies rank 0's weights, so it would prove nothing)
GUARD_STEPS = (2, 3)
#: relative tolerance of the weight guard. Ring-allreduce gives every rank bit-identical
#: averages, so ranks on identical hardware hold bit-identical weights and their float64
#: checksums differ by exactly 0; 1e-9 leaves room for summation-order noise and last-bit
#: differences between CPU/GPU models. Ranks that do not average drift apart by about
#: lr * |gradient difference| per step: 2e-5 after two steps of SGD at lr 0.05 on the test's
#: U-Net, still ~1e-6 at the thesis's lr 1e-5.
GUARD_RTOL = 1e-9


class WeightDivergenceError(AutocnnpError):
    """Ranks hold different weights: gradients are not averaged across ranks."""

    exit_code = 1


class TrainingDivergedError(AutocnnpError):
    """The loss, an epoch metric or the weights became NaN or Inf: training diverged.

    Raised on every rank at the same step (see :func:`make_nonfinite_guard`); the worker and
    the launcher exit with :attr:`exit_code` 4.
    """

    exit_code = 4

    def __init__(self, message: str, *, epoch: int, step: int | None,
                 ranks: tuple[int, ...], remedy: str | None = None) -> None:
        self.epoch = epoch
        self.step = step
        self.ranks = ranks
        super().__init__(message, remedy=remedy)


# --- values the actions provide --------------------------------------------------------------

@dataclass
class RankDataset:
    """This rank's data: where its training batches and its validation shard come from.

    Training (:func:`~autocnnp.components.datasets.epoch_batches`): the split is listed once;
    each epoch's permutation (from the config's seed and the epoch, the same on every rank)
    is dealt round-robin to the ranks, so the shards are disjoint, every sample is used once
    per epoch and the order changes from epoch to epoch and repeats with the seed (a resumed
    run repeats it too). Every rank runs the same ``steps_per_epoch``, computed from the
    global count (:func:`~autocnnp.components.datasets.steps_per_epoch`), because ranks that
    ran different numbers of steps would wait for each other's allreduce forever.

    ``train`` and ``valid`` read samples on demand: a
    :class:`~autocnnp.components.datasets.SampleList` (``cache`` ``none``: files are read as
    the batches are needed, so memory follows the batch) or an
    :class:`~autocnnp.components.datasets.InMemorySamples` (``memory``: the split was read
    whole once).

    Validation: contiguous shards (:func:`~autocnnp.components.datasets.shard_indices`),
    averaged across ranks by ``MetricAverageCallback``; exact when the shards have equal
    sizes (otherwise the mean of per-rank means). With fewer validation samples than ranks
    every rank uses all of them.
    """

    train: Any
    valid: Any | None
    valid_indices: np.ndarray | None
    rank: int
    size: int
    seed: int
    steps_per_epoch: int
    n_train_total: int
    n_valid_total: int
    batch_size: int
    cache: str = "none"
    #: ``<data><augmentation>`` (an AugmentationSpec) or None: training batches as read
    augmentation: Any = None

    def augment(self, images: np.ndarray, masks: np.ndarray, epoch: int,
                step: int) -> tuple[np.ndarray, np.ndarray]:
        """Training batch ``step`` of ``epoch`` augmented (as it is without augmentation);
        the transforms are a function of the seed, the rank, the epoch and the step."""
        if self.augmentation is None:
            return images, masks
        from autocnnp.components.imgmed.augment import AugmentRanges, augment_batch, batch_rng

        aug = self.augmentation
        ranges = AugmentRanges(rotation=aug.rotation, zoom=tuple(aug.zoom),
                               translation=aug.translation)
        return augment_batch(images, masks, batch_rng(self.seed, self.rank, epoch, step),
                             ranges, tuple(aug.flip))

    def train_batches(self, epoch: int) -> list[np.ndarray]:
        """The sample indices of this rank's training batches in ``epoch``."""
        from autocnnp.components.datasets import epoch_batches

        return epoch_batches(self.n_train_total, self.rank, self.size, self.batch_size,
                             self.seed, epoch)

    def valid_batches(self) -> list[np.ndarray]:
        """This rank's validation batches, in order (empty without validation data)."""
        if self.valid_indices is None:
            return []
        idx = self.valid_indices
        return [idx[i:i + self.batch_size] for i in range(0, len(idx), self.batch_size)]

    @property
    def validation_steps(self) -> int | None:
        if self.valid_indices is None:
            return None
        return max(1, math.ceil(len(self.valid_indices) / self.batch_size))


@dataclass
class CheckpointSetup:
    """Checkpoint directory and the Keras callbacks that write checkpoints and logs (rank 0)."""

    manager: "CheckpointManager"
    callbacks: list[Any]


# --- helpers ---------------------------------------------------------------------------------

def _env_int(name: str) -> int:
    text = os.environ.get(name, "").strip()
    try:
        return max(int(text), 0) if text else 0
    except ValueError:
        return 0


_SPLITS: dict[tuple, Any] = {}


def open_split(ctx: RankContext, which: str, cache: str = "none") -> Any | None:
    """The ``train``/``valid``/``test`` split of the spec's data (None if not configured):
    a :class:`~autocnnp.components.datasets.SampleList` that reads samples on demand, or,
    with ``cache="memory"``, an :class:`~autocnnp.components.datasets.InMemorySamples`
    holding the whole split (read once per process and kept)."""
    from autocnnp.components import datasets

    data = ctx.spec.data
    path = getattr(data, which)
    if path is None:
        return None
    cases = (data.cases or {}).get(which)
    key = (str(path), data.format, data.num_classes, data.image_size, data.channels, which, cache,
           tuple(cases) if cases is not None else None)
    if key not in _SPLITS:
        samples = datasets.open_data_split(data, which)
        _SPLITS[key] = datasets.InMemorySamples.read_all(samples) if cache == "memory" \
            else samples
    return _SPLITS[key]


# --- train_env_def ---------------------------------------------------------------------------

def init_communicator(ctx: RankContext) -> None:
    """Initialise Horovod and publish this rank's :class:`Communicator`."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import horovod.tensorflow.keras as hvd
    except ImportError as exc:
        raise EnvironmentProblemError(
            f"Horovod is not importable: {exc}",
            remedy="HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 pip install "
                   f"--no-build-isolation horovod=={HOROVOD_VERSION} (after tensorflow-cpu==2.15.1)") from exc
    _check_keras_2()
    hvd.init()
    comm = Communicator(rank=hvd.rank(), size=hvd.size(), local_rank=hvd.local_rank(),
                        local_size=hvd.local_size(), hostname=rank_host(), hvd=hvd)
    ctx.values["communicator"] = comm
    expected = ctx.spec.parallelism_degree
    if expected and expected != comm.size:
        ctx.log.warning("the config asks for %d workers but %d ranks started; the learning "
                        "rate is scaled for %d", expected, comm.size, comm.size)
    ctx.log.info("rank %d/%d (local %d/%d) on %s", comm.rank, comm.size, comm.local_rank,
                 comm.local_size, comm.hostname)


def _check_keras_2() -> None:
    """Stop before training when tf.keras is Keras 3: there Horovod silently does not average
    gradients (DESIGN.md section 9)."""
    import tensorflow as tf

    version = str(getattr(tf.keras, "__version__", "") or "")
    if version.startswith("3"):
        raise EnvironmentProblemError(
            f"tf.keras is Keras {version}: Horovod 0.28's DistributedOptimizer does not average "
            f"gradients with Keras 3 (each rank would train alone)",
            remedy="use tensorflow-cpu==2.15.1 (Keras 2.15), or install tf-keras and set "
                   "TF_USE_LEGACY_KERAS=1")


def seed_everything(ctx: RankContext) -> None:
    """Seed Python, NumPy and TensorFlow with the config's seed (the same on every rank:
    identical initial weights, and the same data permutation for sharding)."""
    import tensorflow as tf

    seed = int(ctx.spec.reproducibility.seed)
    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)  # sets the global seed only; does not start the TF runtime
    if ctx.spec.reproducibility.deterministic:
        tf.config.experimental.enable_op_determinism()
    ctx.values["seed"] = seed


def place_device(ctx: RankContext, *, gpu: bool = True, intra_op_threads: int = 0,
                 inter_op_threads: int = 0) -> None:
    """Pin this rank to the GPU of its local rank (or to the CPU) and set thread counts.

    Thread counts, first match wins, for intra-op and inter-op threads separately:

    1. the ``device_placement`` action's parameter ``intra_op_threads`` /
       ``inter_op_threads`` when non-zero - it wins over ``<deployment> threads_per_rank``;
    2. ``AUTOCNNP_INTRA_OP_THREADS`` / ``AUTOCNNP_INTER_OP_THREADS``, which the launcher
       sets from ``<deployment> threads_per_rank`` (intra-op only: then the config's
       ``threads_per_rank`` itself, for a rank started without the launcher);
    3. TensorFlow's default (all cores, which oversubscribes when several ranks share a
       host).

    Rank 0 logs one INFO line saying which source each count came from.
    """
    import tensorflow as tf

    comm = ctx.communicator
    intra, inter = thread_counts(ctx, intra_op_threads, inter_op_threads, "TensorFlow's default")
    try:
        if intra:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError as exc:  # the runtime already started (a plugin ran an op earlier)
        ctx.log.warning("thread counts not applied: %s", exc)
    gpus = tf.config.list_physical_devices("GPU")
    if gpu and gpus:
        index = comm.local_rank % len(gpus)
        if comm.local_size > len(gpus):
            ctx.log.warning("%d ranks share %d GPUs on %s", comm.local_size, len(gpus),
                            comm.hostname)
        try:
            tf.config.set_visible_devices([gpus[index]], "GPU")
        except RuntimeError as exc:
            raise EnvironmentProblemError(
                f"cannot pin rank {comm.rank} to GPU {index}: {exc}",
                remedy="a plugin or architecture ran a TensorFlow op before device placement; "
                       "move that code into a later action") from exc
        placement = DevicePlacement("GPU", f"/GPU:0 (physical {gpus[index].name})", index,
                                    intra, inter)
    else:
        if gpus:
            try:
                tf.config.set_visible_devices([], "GPU")
            except RuntimeError as exc:
                ctx.log.warning("could not hide GPUs: %s", exc)
        placement = DevicePlacement("CPU", "/CPU:0", None, intra, inter)
    ctx.values["device"] = placement
    ctx.log.info("device %s, intra-op threads %s, inter-op threads %s", placement.device,
                 intra or "auto", inter or "auto")


def thread_counts(ctx: RankContext, intra_op_threads: int, inter_op_threads: int,
                  default: str) -> tuple[int, int]:
    """The intra-op and inter-op thread counts of this rank (0: the engine's ``default``),
    each from the first source that sets it (see :func:`place_device`); rank 0 logs which."""
    deployment_threads = int(ctx.spec.deployment.threads_per_rank or 0)
    intra, intra_from = _thread_count(intra_op_threads, "intra_op_threads", ENV_INTRA_OP,
                                      deployment_threads, default)
    inter, inter_from = _thread_count(inter_op_threads, "inter_op_threads", ENV_INTER_OP, 0,
                                      default)
    if ctx.is_chief:
        ctx.log.info("thread counts: intra-op %s from %s; inter-op %s from %s",
                     intra or "auto", intra_from, inter or "auto", inter_from)
    return intra, inter


def _thread_count(param: int, param_name: str, env_name: str,
                  deployment_threads: int, default: str) -> tuple[int, str]:
    """One thread count for :func:`place_device` and a description of where it came from."""
    env_value = _env_int(env_name)
    if param:
        note = (f" (overrides {env_name}={env_value} from <deployment> threads_per_rank)"
                if env_value and env_value != param else "")
        return int(param), f"device_placement parameter {param_name}{note}"
    if env_value:
        return env_value, f"{env_name} (<deployment> threads_per_rank)"
    if deployment_threads:
        return deployment_threads, "<deployment> threads_per_rank"
    return 0, default


def allocate_memory(ctx: RankContext, *, growth: bool = True, soft_placement: bool = False) -> None:
    """Set GPU memory growth (grow as needed instead of taking all memory at start) and turn
    soft placement on when asked (``False`` leaves TensorFlow's default, which is on in
    eager mode)."""
    import tensorflow as tf

    for device in tf.config.get_visible_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(device, growth)
        except RuntimeError as exc:
            ctx.log.warning("memory growth not applied to %s: %s", device.name, exc)
    if soft_placement:
        tf.config.set_soft_device_placement(True)
    ctx.values["memory"] = MemoryPolicy(growth=growth, soft_placement=soft_placement)


# --- injection -------------------------------------------------------------------------------

def define_task(ctx: RankContext) -> None:
    """Define the segmentation task; reads one training sample to learn the image shape."""
    data = ctx.spec.data
    shape = open_split(ctx, "train").sample_shape
    ctx.values["task"] = SegmentationTask(classes=tuple(data.classes), input_shape=shape,
                                          name=ctx.spec.task)


def checked_optimizer(hp: Any) -> str:
    """The optimizer's name (lower case) once ``hp`` (the spec's hyperparameters) is known to
    train: a known optimizer and more than zero epochs. Both engines call it."""
    optimizer = hp.optimizer.lower()
    if optimizer not in OPTIMIZERS:
        raise AutocnnpError(f"unknown optimizer {hp.optimizer!r}; known: {', '.join(OPTIMIZERS)}")
    if hp.end_epoch <= hp.start_epoch:
        raise AutocnnpError(f"end_epoch ({hp.end_epoch}) must be greater than start_epoch "
                            f"({hp.start_epoch})")
    return optimizer


def inject_hyperparameters(ctx: RankContext) -> None:
    """Scale the learning rate for the number of ranks, set the per-rank batch and the loss,
    and bind the learning-rate schedule."""
    from autocnnp.components.keras_settings import make_loss, training_callbacks
    from autocnnp.components.lr_policies import LRSchedule

    comm = ctx.communicator
    ctx.task
    hp = ctx.spec.hyperparameters
    optimizer = checked_optimizer(hp)
    schedule = LRSchedule(ctx.spec.lr_policy, hp.lr, comm.size, hp.start_epoch, hp.end_epoch)
    try:
        loss = make_loss(hp.loss, tuple(hp.class_weights))
    except ValueError as exc:
        raise AutocnnpError(str(exc)) from None
    ctx.values["hyperparameters"] = HyperparameterValues.injected(
        hp, schedule, optimizer=optimizer, loss=loss, workers=comm.size)
    ctx.values["lr_schedule"] = schedule
    ctx.callbacks.extend(training_callbacks(ctx))
    ctx.log.info("hyperparameters: %s; %r", ctx.hyperparameters, schedule)


def build_architecture(ctx: RankContext) -> None:
    """Build the configured CNN for the task's image shape."""
    from autocnnp.components.models import build_model

    task = ctx.task
    base_dir = Path(ctx.spec.source).parent if ctx.spec.source else None
    model = build_model(ctx.spec.architecture, task.input_shape, task.num_classes,
                        base_dir=base_dir)
    if ctx.spec.architecture.init is not None:
        from autocnnp.components.keras_settings import initialise_weights
        initialise_weights(model, Path(ctx.spec.architecture.init), ctx.log)
    ctx.values["model"] = model
    ctx.log.info("model %s: %d parameters", model.name, model.count_params())


def inject_dataset(ctx: RankContext) -> None:
    """List the data, choose how it is held (``<data cache>``) and set up this rank's shard
    (see :class:`RankDataset`)."""
    from autocnnp.components.datasets import choose_cache, shard_indices, steps_per_epoch

    comm = ctx.communicator
    hp = ctx.hyperparameters
    task = ctx.task
    listed = open_split(ctx, "train")
    valid_listed = open_split(ctx, "valid")
    n = len(listed)
    n_valid = len(valid_listed) if valid_listed is not None else 0
    if n < comm.size:
        raise DataError(f"{listed.root}: the training split has {n} samples, fewer than the "
                        f"{comm.size} ranks; every rank needs at least one")
    cache, why = choose_cache(ctx.spec.data.cache.value, n + n_valid, task.input_shape)
    if comm.rank == 0:
        ctx.log.info("data cache: %s (%s)", cache, why)
    train = open_split(ctx, "train", cache)
    valid = open_split(ctx, "valid", cache)
    steps = steps_per_epoch(n, comm.size, hp.batch_size)
    if n // comm.size < hp.batch_size:
        text = (f"each rank gets {n // comm.size} training samples per epoch, fewer than the "
                f"batch size {hp.batch_size}: batches are smaller")
        ctx.log.warning("%s", text)
        if comm.rank == 0:  # the terminal shows rank 0's stdout, not the rank logs
            print(f"warning: {text}", flush=True)
    valid_indices = None
    if valid is not None:
        valid_indices = (shard_indices(n_valid, comm.rank, comm.size) if n_valid >= comm.size
                         else np.arange(n_valid))
    ctx.values["dataset"] = RankDataset(
        train=train, valid=valid, valid_indices=valid_indices, rank=comm.rank,
        size=comm.size, seed=int(ctx.spec.reproducibility.seed), steps_per_epoch=steps,
        n_train_total=n, n_valid_total=n_valid, batch_size=hp.batch_size, cache=cache,
        augmentation=ctx.spec.data.augmentation)
    ctx.log.info("data: %d training samples in all, %d steps of up to %d per epoch on every "
                 "rank, %d validation samples on this rank", n, steps, hp.batch_size,
                 len(valid_indices) if valid_indices is not None else 0)


# --- train_strategy_def ----------------------------------------------------------------------

def make_optimizer(name: str, lr: float, momentum: float, **settings: Any) -> Any:
    """The optimizer of ``name`` (see :func:`autocnnp.components.keras_settings.
    make_optimizer`: legacy Keras optimizers, and Keras's AdamW)."""
    from autocnnp.components import keras_settings
    return keras_settings.make_optimizer(name, lr, momentum, **settings)


def ring_allreduce(ctx: RankContext) -> None:
    """Synchronous data parallelism with Horovod's ring-allreduce.

    Provides the optimizer (a legacy Keras optimizer at the schedule's first learning rate,
    wrapped in ``hvd.DistributedOptimizer``, which averages gradients over ranks before every
    update) and the synchronisation callbacks, in this order: broadcast of rank 0's variables
    after the first step, averaging of the epoch metrics over ranks (before anything reads
    them), and the per-step learning-rate schedule.

    The weight-consistency guard that checks this worked is added by the training loop
    (``training.callbacks_for_fit``), not here, so that a plugin replacing ``dist_strategy``
    cannot remove it.
    """
    from autocnnp.components.lr_policies import make_lr_callback

    comm = ctx.communicator
    hp = ctx.hyperparameters
    schedule = ctx.lr_schedule
    ctx.model
    hvd = comm.hvd
    optimizer = hvd.DistributedOptimizer(make_optimizer(
        hp.optimizer, hp.initial_lr, hp.momentum, beta_1=hp.beta_1, beta_2=hp.beta_2,
        weight_decay=hp.weight_decay))
    sync = [hvd.callbacks.BroadcastGlobalVariablesCallback(0),
            hvd.callbacks.MetricAverageCallback(),
            make_lr_callback(schedule)]
    ctx.values["optimizer"] = optimizer
    ctx.values["sync_callbacks"] = sync
    ctx.log.info("optimizer %s", {k: v for k, v in optimizer.get_config().items()
                                  if k not in ("is_legacy_optimizer", "jit_compile")})


# --- NaN and Inf: stop every rank at the step where training diverges -----------------------

#: the remedy of :class:`TrainingDivergedError`
DIVERGED_REMEDY = ('lower the learning rate (<property name="lr">) or check the training data '
                   'for NaN/Inf values, then start a new run with `autocnnp run CONFIG`; '
                   '`autocnnp run --resume RUN` would continue from the last good checkpoint '
                   'with the same settings')

#: what a rank found not finite, as bits of the flag it sends to the others
NONFINITE_KINDS = {1: "loss", 2: "weights", 4: "epoch metrics"}


def json_safe_logs(logs: dict[str, Any] | None) -> tuple[dict[str, float | None], list[str]]:
    """Keras logs as JSON numbers: NaN and Inf become ``None`` (JSON ``null``, since bare
    ``NaN`` is not JSON) and their names are returned, to be recorded as ``"nonfinite"``."""
    values: dict[str, float | None] = {}
    nonfinite: list[str] = []
    for key, value in (logs or {}).items():
        number = float(value)
        if math.isfinite(number):
            values[key] = number
        else:
            values[key] = None
            nonfinite.append(key)
    return values, nonfinite


def nonfinite_message(epoch: int, step: int | None, flags: dict[int, int],
                      checkpoint: str | None) -> str:
    """The message of :class:`TrainingDivergedError` (kept in one place for the tests).

    ``flags`` maps each rank that found something not finite to its :data:`NONFINITE_KINDS`
    bits; ``step`` is None for the check after the epoch's validation.
    """
    where = (f"epoch {epoch}, step {step}" if step is not None
             else f"the end of epoch {epoch} (after validation)")
    found = "; ".join(
        " and ".join(f"the {name}" for bit, name in NONFINITE_KINDS.items() if bits & bit)
        + f" of rank {rank}" for rank, bits in sorted(flags.items()))
    last = checkpoint or "none (no checkpoint was written before)"
    return (f"training diverged at {where}: NaN or Inf in {found}; every rank stopped there. "
            f"Last good checkpoint: {last}")


def make_finite_check(variables: list[Any]) -> Callable[[], bool]:
    """A function telling whether every value of ``variables`` is finite: one compiled
    TensorFlow graph (a few ms per call where eager ops per variable took ten times more)."""
    import tensorflow as tf

    if not variables:
        return lambda: True

    @tf.function(autograph=False)
    def all_finite() -> Any:
        return tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(v)) for v in variables]))

    return lambda: bool(all_finite())


def gather_flags(comm: Communicator, bits: int) -> dict[int, int]:
    """Every rank's flag bits, with one small allreduce (each rank fills its own slot of a
    vector and the ranks sum it); ranks whose bits are 0 are left out. A collective."""
    if comm.size < 2:
        return {comm.rank: bits} if bits else {}
    import horovod.tensorflow as hvd_tf
    import tensorflow as tf

    mine = np.zeros(comm.size, dtype=np.int32)
    mine[comm.rank] = bits
    total = hvd_tf.allreduce(tf.constant(mine), op=hvd_tf.Sum,
                             name="autocnnp_nonfinite_guard").numpy()
    return {rank: int(value) for rank, value in enumerate(total) if value}


def make_nonfinite_guard(comm: Communicator, manager: "CheckpointManager | None") -> Any:
    """A Keras callback that stops training on every rank at the step where the loss or the
    weights of any rank become NaN or Inf, and at the end of an epoch whose averaged metrics
    (validation included) are not finite.

    After every training step each rank checks its own batch loss and its trainable weights,
    and the ranks exchange one flag each (:func:`gather_flags`), so that all of them raise
    :class:`TrainingDivergedError` together instead of the others waiting in the next
    allreduce. It runs before the checkpoint callback: no checkpoint holds NaN weights.
    """
    import tensorflow as tf

    class NonFiniteGuard(tf.keras.callbacks.Callback):
        """Raises TrainingDivergedError on every rank when any rank sees NaN or Inf."""

        def __init__(self) -> None:
            super().__init__()
            self.comm = comm
            self.epoch = 0
            self.weights_finite: Callable[[], bool] = lambda: True

        def on_train_begin(self, logs: dict | None = None) -> None:
            self.weights_finite = make_finite_check(list(self.model.trainable_weights))

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.epoch = epoch + 1

        def _stop_if_flagged(self, bits: int, step: int | None) -> None:
            flags = gather_flags(self.comm, bits)
            if not flags:
                return
            latest = manager.latest() if manager is not None else None
            checkpoint = f"{latest[1]} (epoch {latest[0]})" if latest else None
            raise TrainingDivergedError(
                nonfinite_message(self.epoch, step, flags, checkpoint), epoch=self.epoch,
                step=step, ranks=tuple(sorted(flags)), remedy=DIVERGED_REMEDY)

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            loss = (logs or {}).get("loss")
            bits = 0
            if loss is not None and not math.isfinite(float(loss)):
                bits |= 1
            if not self.weights_finite():
                bits |= 2
            self._stop_if_flagged(bits, batch + 1)

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            _, nonfinite = json_safe_logs(logs)
            self._stop_if_flagged(4 if nonfinite else 0, None)

    return NonFiniteGuard()


# --- the weight-consistency guard (DESIGN.md section 9) --------------------------------------

def weight_checksum(variables: list[Any]) -> np.ndarray:
    """Three float64 numbers that change when any of ``variables`` changes: a
    position-weighted sum, the sum of absolute values and the sum of squares."""
    import tensorflow as tf

    weighted, absolute, squares = [], [], []
    count = max(len(variables), 1)
    for i, var in enumerate(variables):
        value = tf.cast(var, tf.float64)
        # weights in (0, 1] keep |weighted| <= sum|w|, which then scales the comparison
        weighted.append(tf.reduce_sum(value) * ((i + 1) / count))
        absolute.append(tf.reduce_sum(tf.abs(value)))
        squares.append(tf.reduce_sum(tf.square(value)))
    if not weighted:
        return np.zeros(3)
    return np.array([float(tf.add_n(weighted)), float(tf.add_n(absolute)),
                     float(tf.add_n(squares))])


#: why ranks drift apart, by engine (the end of :func:`divergence_message`)
DIVERGENCE_CAUSES = {
    "horovod": "This usually happens when tf.keras is Keras 3 (TensorFlow >= 2.16), where "
               "hvd.DistributedOptimizer wraps the optimizer without error but does not "
               "average; when the optimizer is not wrapped in hvd.DistributedOptimizer; or when "
               "a plugin replaced dist_strategy and put a plain optimizer in "
               "ctx.values['optimizer']",
    "torch": "This happens when the optimizer updates parameters that DistributedDataParallel "
             "does not average (an optimizer built over the unwrapped model's copy, or "
             "parameters changed outside backward), or when a plugin replaced dist_strategy "
             "and trains without the DDP wrapper",
}


def divergence_message(where: str, size: int, spread: float, engine: str = "horovod") -> str:
    """The message of :class:`WeightDivergenceError` (kept in one place for the tests)."""
    return (f"the {size} ranks hold different trainable weights after {where} (weight "
            f"checksums differ by a relative {spread:.1e}): gradients are not being averaged "
            f"across ranks, so this is {size} separate trainings rather than one data-parallel "
            f"training. {DIVERGENCE_CAUSES[engine]}")


def check_weights_identical(model: Any, comm: Communicator, where: str, *,
                            trainable_only: bool = True) -> float:
    """Compare the weights of all ranks with two small allreduces (max and min of the
    checksums); raise :class:`WeightDivergenceError` on every rank if they differ.

    During training only the trainable weights are compared: they are what averaged
    gradients keep identical, while BatchNorm's moving statistics follow each rank's own
    batches until :func:`average_statistics` averages them (``trainable_only=False`` checks
    every variable, for use right after that averaging).

    Returns the relative spread (0.0 when identical). Every rank must call this at the same
    point, as with any collective.
    """
    if comm.size < 2:
        return 0.0
    import horovod.tensorflow as hvd_tf
    import tensorflow as tf

    variables = list(model.trainable_weights if trainable_only else model.weights)
    checksum = weight_checksum(variables)
    # NaN compares false with everything (a NaN spread would pass "> tol"), and how an
    # allreduce orders NaN is undefined: send finite numbers plus a flag for NaN/Inf
    finite = bool(np.all(np.isfinite(checksum)))
    local = tf.constant(np.append(np.where(np.isfinite(checksum), checksum, 0.0),
                                  0.0 if finite else 1.0), dtype=tf.float64)
    high = hvd_tf.allreduce(local, op=hvd_tf.Max, name="autocnnp_weight_guard_max").numpy()
    low = hvd_tf.allreduce(local, op=hvd_tf.Min, name="autocnnp_weight_guard_min").numpy()
    if high[3] > 0:
        raise TrainingDivergedError(
            f"training diverged: the weights hold NaN or Inf after {where} (found by the "
            f"weight check){'' if finite else f' on rank {comm.rank}'}",
            epoch=0, step=None, ranks=() if finite else (comm.rank,),
            remedy=DIVERGED_REMEDY)
    high, low = high[:3], low[:3]
    scale = np.array([high[1], high[1], high[2]])  # sum|w| bounds the weighted sum
    spread = float(np.max(np.abs(high - low) / np.maximum(scale, 1e-30)))
    if not spread <= GUARD_RTOL:
        raise WeightDivergenceError(divergence_message(where, comm.size, spread))
    return spread


def make_weight_guard(comm: Communicator, steps: tuple[int, ...] = GUARD_STEPS) -> Any:
    """A Keras callback that runs :func:`check_weights_identical` after the training steps
    in ``steps`` (counted from the start of ``fit``) and at the end of every epoch."""
    import tensorflow as tf

    class WeightConsistencyGuard(tf.keras.callbacks.Callback):
        """Stops training with an error when ranks stop holding identical weights."""

        def __init__(self) -> None:
            super().__init__()
            self.comm = comm
            self.steps = set(steps)
            self.step = 0
            self.checks = 0

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.step += 1
            if self.step in self.steps:
                check_weights_identical(self.model, self.comm, f"training step {self.step}")
                self.checks += 1

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            check_weights_identical(self.model, self.comm, f"epoch {epoch + 1}")
            self.checks += 1

    return WeightConsistencyGuard()


# --- statistics that training updates outside the gradients (BatchNorm) ----------------------

def running_statistics(model: Any) -> list[Any]:
    """The variables training changes without gradients: the non-trainable floating-point
    variables of layers that train (BatchNorm's moving mean and variance, in practice).

    Variables of frozen layers (``layer.trainable = False``) are left out: they do not change,
    so averaging them would only add rounding noise.
    """
    frozen: set[int] = set()
    for layer in model.submodules:
        if getattr(layer, "trainable", True) is False:
            frozen.update(id(v) for v in getattr(layer, "weights", ()))
    return [v for v in model.non_trainable_weights
            if id(v) not in frozen and v.dtype.is_floating]


def average_statistics(model: Any, comm: Communicator) -> int:
    """Replace every rank's running statistics by their mean over all ranks (one allreduce
    per variable). Returns how many variables were averaged. A collective: every rank must
    call it at the same point."""
    variables = running_statistics(model)
    if comm.size < 2 or not variables:
        return 0
    import horovod.tensorflow as hvd_tf

    for i, var in enumerate(variables):
        var.assign(hvd_tf.allreduce(var, op=hvd_tf.Average, name=f"autocnnp_statistics_{i}"))
    return len(variables)


def make_statistics_sync(comm: Communicator) -> Any:
    """A Keras callback that averages the running statistics across ranks whenever training
    has changed them and something is about to read them: before validation and at the end
    of every epoch, so that validation, checkpoints and the final model see one set of
    statistics whichever rank saved them."""
    import tensorflow as tf

    class StatisticsAverage(tf.keras.callbacks.Callback):
        """Averages BatchNorm's moving statistics across ranks before they are used."""

        def __init__(self) -> None:
            super().__init__()
            self.comm = comm
            self.dirty = False
            self.averaged = 0

        def _sync(self) -> None:
            if self.dirty:
                average_statistics(self.model, self.comm)
                self.averaged += 1
                self.dirty = False

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.dirty = True

        def on_test_begin(self, logs: dict | None = None) -> None:
            self._sync()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self._sync()

    return StatisticsAverage()


# --- checkpoints and logs (rank 0) -----------------------------------------------------------

class CheckpointManager:
    """Atomic, verified checkpoints of model and optimizer in ``directory/epoch-NNNNN/``.

    A checkpoint is written to a hidden temporary folder next to its final place and renamed
    into place (``os.replace``), so a crash mid-write never leaves a half checkpoint that
    resume would pick up. Its last file, ``manifest.json``, lists every other file with its
    size and sha256, read back from disk after writing: :meth:`verify` finds truncated or
    flipped bytes, a damaged ``state.json`` and missing files, and :meth:`restore_latest`
    resumes from the newest checkpoint that verifies and TensorFlow can read, setting the
    others aside as ``epoch-NNNNN.corrupt``. Only the last ``keep`` checkpoints are kept, and
    only after a new one is complete; a write that fails for space raises
    :class:`~autocnnp.diskspace.DiskFullError` and leaves the earlier ones as they were.
    ``epoch`` is the number of completed epochs (the Keras epoch to resume at).
    """

    PREFIX = "epoch-"
    MANIFEST = "manifest.json"
    #: hidden folders a killed writer leaves behind (temporary and swapped-out checkpoints)
    STALE = (".tmp-epoch-*", ".old-epoch-*")

    def __init__(self, directory: Path, keep: int = 3) -> None:
        self.directory = Path(directory)
        self.keep = max(int(keep), 1)

    def _final(self, epoch: int) -> Path:
        return self.directory / f"{self.PREFIX}{epoch:05d}"

    def list(self) -> list[tuple[int, Path]]:
        """Checkpoint folders as (epoch, folder), oldest first (complete or not: see
        :meth:`verify`)."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            if path.name.startswith(self.PREFIX) and path.is_dir():
                try:
                    found.append((int(path.name[len(self.PREFIX):]), path))
                except ValueError:
                    continue
        return sorted(found)

    def latest(self) -> tuple[int, Path] | None:
        """The newest checkpoint folder, or None (not verified: see :meth:`restore_latest`)."""
        found = self.list()
        return found[-1] if found else None

    @classmethod
    def _digests(cls, folder: Path) -> dict[str, dict[str, Any]]:
        import hashlib

        files = {}
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.name != cls.MANIFEST:
                digest = hashlib.sha256()
                with open(path, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
                files[path.relative_to(folder).as_posix()] = {
                    "bytes": path.stat().st_size, "sha256": digest.hexdigest()}
        return files

    @classmethod
    def verify(cls, folder: Path) -> str | None:
        """Why ``folder`` is not a usable checkpoint, or None when every file matches its
        manifest and ``state.json`` is a JSON object."""
        folder = Path(folder)
        try:
            manifest = json.loads((folder / cls.MANIFEST).read_text(encoding="utf-8"))
            listed = dict(manifest["files"])
        except FileNotFoundError:
            if (folder / "state.json").is_file() and (folder / "ckpt.index").is_file():
                listed = {}  # written before checksums (autocnnp < 0.x): TensorFlow checks it
            else:
                return f"{cls.MANIFEST} is missing"
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"{cls.MANIFEST} is unreadable ({type(exc).__name__}: {exc})"
        found = cls._digests(folder)
        for name, expected in sorted(listed.items()):
            actual = found.get(name)
            if actual is None:
                return f"{name} is missing"
            if actual["bytes"] != expected.get("bytes"):
                return (f"{name} has {actual['bytes']} bytes, the manifest says "
                        f"{expected.get('bytes')} (truncated or overwritten)")
            if actual["sha256"] != expected.get("sha256"):
                return f"{name} does not match its sha256 in {cls.MANIFEST} (corrupted bytes)"
        try:
            state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
            if not isinstance(state, dict) or "epoch" not in state:
                return "state.json has no epoch"
        except (OSError, ValueError) as exc:
            return f"state.json is unreadable ({type(exc).__name__}: {exc})"
        return None

    def remove_stale(self) -> list[str]:
        """Delete the temporary folders of writers that were killed mid-write; returns their
        names. Call only while no writer runs (rank 0, before training)."""
        removed = []
        if self.directory.is_dir():
            for pattern in self.STALE:
                for path in sorted(self.directory.glob(pattern)):
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path.name)
        return removed

    def write_state(self, folder: Path, model: Any, optimizer: Any) -> None:
        """Write the model's and optimizer's state into ``folder`` (TensorFlow's
        ``ckpt.*`` files here; the torch engine's manager writes ``state.pt``)."""
        import tensorflow as tf

        tf.train.Checkpoint(model=model, optimizer=optimizer).write(str(folder / "ckpt"))

    def save(self, model: Any, optimizer: Any, epoch: int, state: dict[str, Any]) -> Path:
        """Write a checkpoint for ``epoch`` completed epochs; returns its folder."""
        from autocnnp.diskspace import DiskFullError, is_disk_full

        final = self._final(epoch)
        tmp = self.directory / f".tmp-{final.name}-{os.getpid()}"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            self.write_state(tmp, model, optimizer)
            (tmp / "state.json").write_text(json.dumps({"epoch": epoch, **state}, indent=1,
                                                       allow_nan=False))
            manifest = {"epoch": epoch, "files": self._digests(tmp)}
            with open(tmp / self.MANIFEST, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(manifest, indent=1))
                handle.flush()
                os.fsync(handle.fileno())
        except Exception as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if is_disk_full(exc):
                raise DiskFullError(self.directory, self.estimate_bytes(model, optimizer),
                                    remedy=self._full_remedy()) from exc
            raise
        replace_dir(tmp, final)  # the same epoch again after a resume: swapped in one rename
        for _, path in self.list()[:-self.keep]:
            shutil.rmtree(path, ignore_errors=True)
        return final

    def _full_remedy(self) -> str:
        kept = [p.name for _, p in self.list()]
        run_dir = self.directory.parent
        return (f"free space there (earlier checkpoints are intact: "
                f"{', '.join(kept) or 'none'}), then continue with: "
                f"autocnnp run --resume {run_dir}")

    def estimate_bytes(self, model: Any, optimizer: Any) -> int:
        """What one checkpoint needs: the size of the newest one, else the size of the model's
        and optimizer's variables."""
        latest = self.latest()
        if latest is not None:
            size = sum(p.stat().st_size for p in latest[1].rglob("*") if p.is_file())
            if size:
                return size
        opt_vars = optimizer.variables() if callable(optimizer.variables) else optimizer.variables
        return sum(int(v.shape.num_elements() or 0) * v.dtype.size
                   for v in list(model.variables) + list(opt_vars))

    @staticmethod
    def restore(model: Any, optimizer: Any, folder: Path) -> dict[str, Any]:
        """Load model and optimizer state from ``folder``; returns its ``state.json``.

        The optimizer's slot variables must exist already (see ``training.restore``) so
        that they are restored now rather than lazily at the first step.
        """
        import tensorflow as tf

        tf.train.Checkpoint(model=model, optimizer=optimizer).read(
            str(Path(folder) / "ckpt")).assert_existing_objects_matched()
        return json.loads((Path(folder) / "state.json").read_text())

    def restore_latest(self, model: Any, optimizer: Any,
                       say: Callable[[str], None]) -> tuple[dict[str, Any], Path] | None:
        """Restore the newest checkpoint that verifies and loads; ``say`` is told about each
        one skipped (which, and why), which is then renamed ``epoch-NNNNN.corrupt``. Returns
        (state, folder), or None when no checkpoint is usable."""
        for _, folder in reversed(self.list()):
            reason = self.verify(folder)
            if reason is None:
                try:
                    return self.restore(model, optimizer, folder), folder
                except Exception as exc:  # noqa: BLE001 - TensorFlow raises many kinds
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    reason = f"TensorFlow cannot read it ({type(exc).__name__}: {first})"
            aside = folder.with_name(f"{folder.name}.corrupt")
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(folder, aside)
            say(f"checkpoint {folder.name} skipped: {reason}; kept as {aside.name}")
        return None


def make_checkpoint_callback(manager: CheckpointManager, optimizer: Any, every: int,
                             end_epoch: int) -> Any:
    """Keras callback: a checkpoint every ``every`` epochs and after the last one."""
    import tensorflow as tf

    class AtomicCheckpoint(tf.keras.callbacks.Callback):
        """Writes :class:`CheckpointManager` checkpoints at epoch ends (rank 0 only)."""

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            done = epoch + 1
            if done % max(every, 1) == 0 or done == end_epoch:
                values, nonfinite = json_safe_logs(logs)
                state = {"time": time.time(), "logs": values}
                if nonfinite:  # NaN/Inf are written as null (bare NaN is not JSON)
                    state["nonfinite"] = nonfinite
                path = manager.save(self.model, optimizer, done, state)
                self.last_path = path

    return AtomicCheckpoint()


def make_epoch_logger(path: Path, global_batch: int) -> Any:
    """Keras callback: one JSON line per epoch in ``path`` with the averaged metrics, the
    learning rate, the epoch's wall time, its training time and the training throughput."""
    import tensorflow as tf

    class EpochMetricsLogger(tf.keras.callbacks.Callback):
        """Appends ``{"epoch", metrics..., "lr", "time_s", "train_s", "images_per_s"}``."""

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._start = time.perf_counter()
            self._train_end: float | None = None
            self._steps = 0

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self._steps += 1
            self._train_end = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            now = time.perf_counter()
            train_s = (self._train_end or now) - self._start
            values, nonfinite = json_safe_logs(logs)
            record = {"epoch": epoch + 1, **values,
                      "time_s": round(now - self._start, 4), "train_s": round(train_s, 4),
                      "images_per_s": round(self._steps * global_batch / max(train_s, 1e-9), 2),
                      "wall": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            if nonfinite:  # NaN/Inf are written as null (bare NaN is not JSON)
                record["nonfinite"] = nonfinite
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, allow_nan=False) + "\n")

    return EpochMetricsLogger()


def truncate_epoch_log(path: Path, epoch: int) -> int:
    """Keep only the lines of the JSON-lines epoch log ``path`` with ``"epoch" <= epoch``.

    Resume calls this on rank 0 with the checkpoint's epoch before training continues: the
    epochs after the checkpoint ran (and were logged) before the interruption and are about
    to run again, so without it the file would list them twice. Lines that are not a JSON
    object with an integer ``epoch`` (a line cut short by a crash) are dropped too. The file
    is rewritten atomically (a crash leaves the old file or the new one) and only when
    something is dropped. Returns the number of lines dropped (0 when there is no file).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return 0
    kept, dropped = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            keep = isinstance(record, dict) and int(record["epoch"]) <= epoch
        except (ValueError, TypeError, KeyError):
            keep = False
        if keep:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        atomic_write(path, "".join(f"{line}\n" for line in kept).encode("utf-8"))
    return dropped


def setup_checkpoints(ctx: RankContext) -> None:
    """Periodic atomic checkpoints, TensorBoard and per-epoch JSON-lines metrics, on rank 0.

    Files: ``RUN_DIR/checkpoints/epoch-NNNNN/``, ``RUN_DIR/tensorboard/``,
    ``RUN_DIR/metrics/epochs.jsonl``. Other ranks get the manager (for resume) and no
    callbacks.
    """
    import tensorflow as tf

    comm = ctx.communicator
    ctx.model
    optimizer = ctx.optimizer
    monitoring = ctx.spec.monitoring
    hp = ctx.spec.hyperparameters
    run_dir = Path(ctx.run_dir)
    manager = CheckpointManager(run_dir / "checkpoints", keep=monitoring.keep_checkpoints)
    callbacks: list[Any] = []
    if comm.rank == 0:
        if monitoring.checkpoint_every > 0:
            callbacks.append(make_checkpoint_callback(manager, optimizer,
                                                      monitoring.checkpoint_every,
                                                      int(hp.end_epoch)))
        callbacks.append(make_epoch_logger(run_dir / "metrics" / "epochs.jsonl",
                                           int(hp.minibatch_size) * comm.size))
        if monitoring.tensorboard:
            callbacks.append(tf.keras.callbacks.TensorBoard(
                log_dir=str(run_dir / "tensorboard"), update_freq="epoch", profile_batch=0,
                write_graph=False))
    ctx.values["checkpoints"] = CheckpointSetup(manager=manager, callbacks=callbacks)
