"""What the torch engine's actions do on every rank (bodies of
:mod:`autocnnp.components.torch_actions`).

The values stored in ``ctx.values`` are those of the Horovod engine
(:mod:`autocnnp.components.rank_runtime`), with PyTorch objects inside: ``model`` is the
``torch.nn.Module`` (unwrapped), ``optimizer`` a ``torch.optim`` optimizer over the
DistributedDataParallel wrapper's parameters, ``sync_callbacks`` a :class:`TorchSync`
holding that wrapper, and ``checkpoints`` a :class:`CheckpointSetup` whose manager writes
state dicts.

Ranks learn their place from the launcher's environment: torchrun's ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE`` or Open MPI's ``OMPI_COMM_WORLD_*``
(the local and hosts backends start the ranks with ``mpirun``), or Slurm's; the TCP
rendezvous is ``MASTER_ADDR``:``MASTER_PORT`` (set by the plan).
"""

from __future__ import annotations

import datetime
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist

from autocnnp.components.rank_runtime import (CheckpointManager, CheckpointSetup,
                                              checked_optimizer, thread_counts)
from autocnnp.engine.vocabulary import OPTIMIZERS, rank_host
from autocnnp.errors import AutocnnpError, EnvironmentProblemError
from autocnnp.generator.context import (Communicator, DevicePlacement, HyperparameterValues,
                                        MemoryPolicy, RankContext)

#: (rank, size, local rank, local size) variables, by launcher, first match wins
RANK_ENVIRONMENTS = (
    ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"),  # torchrun, swarm tasks
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
     "OMPI_COMM_WORLD_LOCAL_SIZE"),  # mpirun (local and hosts backends)
    # srun: the step's tasks on this node, "2" or "2(x3)" (SLURM_NTASKS_PER_NODE is set only
    # when the job asked for --ntasks-per-node)
    ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_STEP_TASKS_PER_NODE"),
)


@dataclass(frozen=True)
class TorchCommunicator(Communicator):
    """This rank's place in the job; ``backend`` is ``gloo`` or ``nccl``."""

    backend: str = "gloo"


@dataclass
class TorchSync:
    """What ``torch_ddp`` provides as ``sync_callbacks``: the DDP wrapper that averages
    gradients during backward, and the device batches are moved to."""

    ddp: Any
    device: Any
    callbacks: list[Any] = field(default_factory=list)
    #: ``<property name="precision">``: fp32, or bf16/fp16 autocast of forward and loss
    precision: str = "fp32"
    #: fp16's loss scaler (``torch.amp.GradScaler``), None otherwise
    scaler: Any = None

    def autocast(self) -> Any:
        """The context of a forward pass at this precision (a no-op in fp32)."""
        import contextlib

        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)


def rank_environment(env: dict[str, str] | None = None) -> tuple[int, int, int, int]:
    """(rank, size, local rank, local size) from the launcher's environment; (0, 1, 0, 1)
    when started alone."""
    env = dict(os.environ if env is None else env)
    for names in RANK_ENVIRONMENTS:
        if env.get(names[0], "").strip().isdigit() and env.get(names[1], "").strip().isdigit():
            rank, size = int(env[names[0]]), int(env[names[1]])
            local = env.get(names[2], "").strip()
            local_size = env.get(names[3], "").strip().split("(")[0]
            return (rank, size, int(local) if local.isdigit() else rank,
                    int(local_size) if local_size.isdigit() else size)
    return 0, 1, 0, 1


def _gpu_wanted(ctx: RankContext) -> bool:
    """Whether this rank will compute on a GPU: one is visible and the config does not pin
    ranks to the CPU (``device_placement`` ``cpu``)."""
    if not torch.cuda.is_available():
        return False
    choice = next((a for m in ctx.spec.generator for a in m.actions
                   if a.type == "device_placement"), None)
    return not (choice is not None and choice.implementation == "cpu")


# --- train_env_def ---------------------------------------------------------------------------

def init_communicator(ctx: RankContext) -> None:
    """Join the process group (Gloo on CPU, NCCL when this rank computes on a GPU) and publish
    this rank's :class:`TorchCommunicator`."""
    rank, size, local_rank, local_size = rank_environment()
    gpu = _gpu_wanted(ctx)
    backend = "nccl" if gpu else "gloo"
    timeout = datetime.timedelta(seconds=max(int(ctx.spec.deployment.rendezvous_timeout_s), 300))
    if not dist.is_initialized():
        if gpu:
            torch.cuda.set_device(local_rank % torch.cuda.device_count())
        if size == 1 and not os.environ.get("MASTER_ADDR"):
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1,
                                    timeout=timeout)
        else:
            addr = os.environ.get("MASTER_ADDR")
            port = os.environ.get("MASTER_PORT")
            if not addr or not port:
                raise EnvironmentProblemError(
                    f"rank {rank} of {size}: MASTER_ADDR and MASTER_PORT are not set, so the "
                    f"ranks cannot meet", remedy="start jobs with `autocnnp run CONFIG` (its "
                    "plan sets them) or with torchrun")
            try:
                dist.init_process_group(backend, init_method=f"tcp://{addr}:{port}", rank=rank,
                                        world_size=size, timeout=timeout)
            except Exception as exc:
                raise EnvironmentProblemError(
                    f"rank {rank} of {size} could not join the rendezvous at {addr}:{port}: "
                    f"{type(exc).__name__}: {exc}",
                    remedy="check that every host can reach that address and port") from exc
    comm = TorchCommunicator(rank=dist.get_rank(), size=dist.get_world_size(),
                             local_rank=local_rank, local_size=local_size,
                             hostname=rank_host(), backend=backend)
    ctx.values["communicator"] = comm
    expected = ctx.spec.parallelism_degree
    if expected and expected != comm.size:
        ctx.log.warning("the config asks for %d workers but %d ranks started; the learning "
                        "rate is scaled for %d", expected, comm.size, comm.size)
    ctx.log.info("rank %d/%d (local %d/%d) on %s, torch %s, %s", comm.rank, comm.size,
                 comm.local_rank, comm.local_size, comm.hostname, torch.__version__, backend)


def leave_process_group() -> None:
    """Destroy this rank's process group, once every collective of the job is done. A rank
    that exits with it alive can abort in the interpreter's teardown ("terminate called
    without an active exception", exit -6: Gloo's threads die before they are joined), which
    turns a finished job into a failed rank."""
    if dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(ctx: RankContext) -> None:
    """Seed Python, NumPy and torch (identical initial weights on every rank; DDP broadcasts
    rank 0's anyway). The determinism switch makes torch use deterministic algorithms only."""
    seed = int(ctx.spec.reproducibility.seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if ctx.spec.reproducibility.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    ctx.values["seed"] = seed


def place_device(ctx: RankContext, *, gpu: bool = True, intra_op_threads: int = 0,
                 inter_op_threads: int = 0) -> None:
    """Pin this rank to the GPU of its local rank (or the CPU) and set torch's thread counts
    (same sources and order as the Horovod engine: the parameter, then
    ``<deployment> threads_per_rank``, then torch's default)."""
    comm = ctx.communicator
    intra, inter = thread_counts(ctx, intra_op_threads, inter_op_threads, "torch's default")
    if intra:
        torch.set_num_threads(intra)
    if inter:
        try:
            torch.set_num_interop_threads(inter)
        except RuntimeError as exc:  # only settable before the first parallel work
            ctx.log.warning("inter-op threads not applied: %s", exc)
    if gpu and torch.cuda.is_available():
        index = comm.local_rank % torch.cuda.device_count()
        if comm.local_size > torch.cuda.device_count():
            ctx.log.warning("%d ranks share %d GPUs on %s", comm.local_size,
                            torch.cuda.device_count(), comm.hostname)
        torch.cuda.set_device(index)
        placement = DevicePlacement("GPU", f"cuda:{index} ({torch.cuda.get_device_name(index)})",
                                    index, intra, inter)
    else:
        placement = DevicePlacement("CPU", "cpu", None, intra, inter)
    ctx.values["device"] = placement
    ctx.log.info("device %s, intra-op threads %s, inter-op threads %s", placement.device,
                 intra or "auto", inter or "auto")


def torch_device(placement: DevicePlacement) -> torch.device:
    return torch.device(f"cuda:{placement.gpu_index}" if placement.kind == "GPU" else "cpu")


def allocate_memory(ctx: RankContext, *, fraction: float | None, soft_placement: bool) -> None:
    """torch's caching allocator grows as needed; ``fixed`` allows the whole GPU."""
    placement = ctx.device
    if fraction is not None and placement.kind == "GPU":
        torch.cuda.set_per_process_memory_fraction(fraction, placement.gpu_index)
    ctx.values["memory"] = MemoryPolicy(growth=fraction is None, soft_placement=soft_placement)


# --- losses (the Horovod engine's, on channel-first probabilities) ---------------------------

#: probabilities are clipped to avoid log(0) (as :data:`autocnnp.components.losses.EPSILON`)
EPSILON = 1e-7
#: soft Dice smoothing (as :data:`autocnnp.components.losses.DICE_SMOOTH`)
DICE_SMOOTH = 1.0

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _onehot(y_true: torch.Tensor, classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(y_true.long(), classes).permute(0, 3, 1, 2).float()


def crossentropy(y_true: torch.Tensor, y_pred: torch.Tensor,
                 weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image mean pixel cross-entropy of probabilities ``(B, C, H, W)``, shape ``(B,)``;
    with ``weights``, each pixel weighted by its true class, normalised per image."""
    probs = y_pred.float()
    probs = probs / probs.sum(dim=1, keepdim=True)  # as Keras does before the log
    picked = probs.clamp(EPSILON, 1.0 - EPSILON).gather(1, y_true.long().unsqueeze(1)).squeeze(1)
    ce = -torch.log(picked)
    if weights is None:
        return ce.mean(dim=(1, 2))
    pixel = weights[y_true.long()]
    return (ce * pixel).sum(dim=(1, 2)) / pixel.sum(dim=(1, 2))


def dice(y_true: torch.Tensor, y_pred: torch.Tensor,
         weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image soft Dice loss over all classes (background included), shape ``(B,)``."""
    probs = y_pred.float()
    onehot = _onehot(y_true, probs.shape[1])
    inter = (onehot * probs).sum(dim=(2, 3))
    denom = onehot.sum(dim=(2, 3)) + probs.sum(dim=(2, 3))
    per_class = (2.0 * inter + DICE_SMOOTH) / (denom + DICE_SMOOTH)
    if weights is None:
        return 1.0 - per_class.mean(dim=1)
    return 1.0 - (per_class * weights).sum(dim=1) / weights.sum()


def dice_crossentropy(y_true: torch.Tensor, y_pred: torch.Tensor,
                      weights: torch.Tensor | None = None) -> torch.Tensor:
    return dice(y_true, y_pred, weights) + crossentropy(y_true, y_pred, weights)


LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "dice": dice, "crossentropy": crossentropy, "dice_crossentropy": dice_crossentropy}


def dice_metric(y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
    """Hard Dice of the argmax, mean over the foreground classes, per image (as Keras's
    ``dice``): a class absent from mask and prediction counts as 1."""
    classes = y_pred.shape[1]
    pred = _onehot(y_pred.argmax(dim=1), classes)
    true = _onehot(y_true, classes)
    inter = (pred * true).sum(dim=(2, 3))
    denom = pred.sum(dim=(2, 3)) + true.sum(dim=(2, 3))
    per_class = torch.where(denom > 0, 2.0 * inter / denom.clamp(min=1.0),
                            torch.ones_like(denom))
    first = min(1, classes - 1)
    return per_class[:, first:].mean(dim=1)


def make_loss(name: str, class_weights: tuple[float, ...] = ()) -> Loss:
    """The configured loss on torch tensors: a built-in, weighted by class when asked, or a
    loss file's ``loss(y_true, y_pred)`` (``(B, H, W)`` class indices, ``(B, C, H, W)``
    probabilities, one value per image)."""
    if name.endswith(".py"):
        from autocnnp.components.keras_settings import LossFileError
        from autocnnp.components.models.user import import_user_file

        module = import_user_file(Path(name), "loss",
                                  lambda message: LossFileError(name, message))
        loss = getattr(module, "loss", None)
        if loss is None or not callable(loss):
            raise LossFileError(name, "defines no function loss(y_true, y_pred)")
        return loss
    key = name.lower()
    if key not in LOSSES:
        raise AutocnnpError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}")
    weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
    base = LOSSES[key]

    def loss(y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
        w = weights.to(y_pred.device) if weights is not None else None
        return base(y_true, y_pred, w)

    loss.__name__ = key
    return loss


# --- train_strategy_def ----------------------------------------------------------------------

def inject_hyperparameters(ctx: RankContext) -> None:
    """Scale the learning rate for the number of ranks (the same :class:`LRSchedule` as the
    Horovod engine), set the per-rank batch and the loss."""
    from autocnnp.components.lr_policies import LRSchedule

    comm = ctx.communicator
    ctx.task
    hp = ctx.spec.hyperparameters
    optimizer = checked_optimizer(hp)
    schedule = LRSchedule(ctx.spec.lr_policy, hp.lr, comm.size, hp.start_epoch, hp.end_epoch)
    loss = make_loss(hp.loss, tuple(hp.class_weights))
    ctx.values["hyperparameters"] = HyperparameterValues.injected(
        hp, schedule, optimizer=optimizer, loss=loss, workers=comm.size)
    ctx.values["lr_schedule"] = schedule
    ctx.log.info("hyperparameters: %s; %r", ctx.hyperparameters, schedule)


#: Keras's AdamW default weight decay (keras_settings.ADAMW_DEFAULT_DECAY)
ADAMW_DEFAULT_DECAY = 0.004


def make_optimizer(name: str, params: Any, lr: float, momentum: float, *, beta_1: float = 0.9,
                   beta_2: float = 0.999, weight_decay: float | None = None) -> Any:
    """The torch optimizer ``name`` with Keras's defaults where torch's differ (epsilon 1e-7,
    RMSprop's rho 0.9), so that a config means the same on both engines."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(beta_1, beta_2), eps=1e-7)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=0.9, momentum=momentum, eps=1e-7)
    if name == "adamw":
        decay = ADAMW_DEFAULT_DECAY if weight_decay is None else weight_decay
        return torch.optim.AdamW(params, lr=lr, betas=(beta_1, beta_2), eps=1e-7,
                                 weight_decay=decay)
    raise AutocnnpError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")


def torch_ddp(ctx: RankContext) -> None:
    """Wrap the model in DistributedDataParallel (which broadcasts rank 0's parameters and
    buffers now and averages gradients in backward) and make the optimizer.

    ``broadcast_buffers`` is off: DDP would otherwise copy rank 0's BatchNorm running
    statistics over every rank's before each forward, so the model would end with rank 0's
    alone; the training loop averages them across ranks instead (:func:`average_statistics`),
    as the Horovod engine does."""
    from torch.nn.parallel import DistributedDataParallel

    ctx.communicator
    hp = ctx.hyperparameters
    ctx.lr_schedule
    model = ctx.model
    device = torch_device(ctx.device)
    model.to(device)
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                  else None, broadcast_buffers=False)
    optimizer = make_optimizer(hp.optimizer, ddp.parameters(), hp.initial_lr, hp.momentum,
                               beta_1=hp.beta_1, beta_2=hp.beta_2, weight_decay=hp.weight_decay)
    precision = ctx.spec.hyperparameters.precision
    if precision != "fp32" and device.type != "cuda":
        raise AutocnnpError(
            f"precision {precision} needs a GPU: rank {ctx.require('communicator').rank} "
            f"computes on the CPU, where {precision} autocast does not make training faster "
            f"(and fp16 loses accuracy for nothing)",
            remedy='use <property name="precision">fp32</property> (the default) on CPUs')
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    ctx.values["optimizer"] = optimizer
    ctx.values["sync_callbacks"] = TorchSync(ddp=ddp, device=device, precision=precision,
                                             scaler=scaler)
    ctx.log.info("optimizer %s %s", type(optimizer).__name__,
                 {k: v for k, v in optimizer.defaults.items() if not callable(v)})


# --- collectives -----------------------------------------------------------------------------

def allreduce(values: np.ndarray, comm: Communicator, op: str = "sum") -> np.ndarray:
    """``values`` reduced over every rank (``sum``, ``max`` or ``min``); a collective.
    ``values`` itself is left as it was."""
    if comm.size < 2:
        return np.asarray(values)
    backend_device = "cuda" if getattr(comm, "backend", "gloo") == "nccl" else "cpu"
    # a copy: torch.as_tensor would share the array's memory on the CPU, and the in-place
    # allreduce would overwrite the caller's values (the weight guard's min would then
    # reduce the max it had just computed, and never see ranks differ)
    tensor = torch.tensor(np.asarray(values)).to(backend_device)
    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
    dist.all_reduce(tensor, op=ops[op])
    return tensor.cpu().numpy()


def gather_flags(comm: Communicator, bits: int) -> dict[int, int]:
    """Every rank's flag bits with one small allreduce; ranks whose bits are 0 left out."""
    mine = np.zeros(comm.size, dtype=np.int64)
    mine[comm.rank] = bits
    total = allreduce(mine, comm)
    return {rank: int(value) for rank, value in enumerate(total) if value}


def weight_checksum(tensors: list[torch.Tensor]) -> np.ndarray:
    """The three float64 numbers of :func:`autocnnp.components.rank_runtime.weight_checksum`."""
    count = max(len(tensors), 1)
    weighted = absolute = squares = 0.0
    for i, tensor in enumerate(tensors):
        value = tensor.detach().double()
        weighted += float(value.sum()) * ((i + 1) / count)
        absolute += float(value.abs().sum())
        squares += float((value * value).sum())
    return np.array([weighted, absolute, squares])


def check_weights_identical(model: Any, comm: Communicator, where: str, *,
                            trainable_only: bool = True) -> float:
    """The weight-consistency guard (DESIGN.md section 9) on the torch engine: compare
    checksums of every rank's parameters (and buffers when ``trainable_only`` is False) with
    a max and a min allreduce; raise WeightDivergenceError on every rank when they differ,
    TrainingDivergedError when a rank holds NaN or Inf. Returns the relative spread."""
    from autocnnp.components.rank_runtime import (DIVERGED_REMEDY, GUARD_RTOL,
                                                  TrainingDivergedError,
                                                  WeightDivergenceError, divergence_message)

    if comm.size < 2:
        return 0.0
    tensors = [p for p in model.parameters() if p.requires_grad]
    if not trainable_only:
        tensors = list(model.parameters()) + [b for b in model.buffers()
                                              if b.dtype.is_floating_point]
    checksum = weight_checksum(tensors)
    finite = bool(np.all(np.isfinite(checksum)))
    local = np.append(np.where(np.isfinite(checksum), checksum, 0.0), 0.0 if finite else 1.0)
    high = allreduce(local, comm, "max")
    low = allreduce(local, comm, "min")
    if high[3] > 0:
        raise TrainingDivergedError(
            f"training diverged: the weights hold NaN or Inf after {where} (found by the "
            f"weight check){'' if finite else f' on rank {comm.rank}'}",
            epoch=0, step=None, ranks=() if finite else (comm.rank,), remedy=DIVERGED_REMEDY)
    high, low = high[:3], low[:3]
    scale = np.array([high[1], high[1], high[2]])
    spread = float(np.max(np.abs(high - low) / np.maximum(scale, 1e-30)))
    if not spread <= GUARD_RTOL:
        raise WeightDivergenceError(divergence_message(where, comm.size, spread, "torch"))
    return spread


def running_statistics(model: Any) -> list[torch.Tensor]:
    """The buffers training changes without gradients: the running mean and variance of
    every normalisation layer that tracks them (BatchNorm, InstanceNorm with
    ``track_running_stats``) and is in training mode. Layers a model keeps in eval mode (a
    frozen BatchNorm) are left out: their statistics do not change."""
    from torch.nn.modules.batchnorm import _NormBase

    return [buffer for module in model.modules()
            if isinstance(module, _NormBase) and module.track_running_stats and module.training
            for buffer in (module.running_mean, module.running_var) if buffer is not None]


def average_statistics(model: Any, comm: Communicator) -> int:
    """Replace every rank's running statistics by their mean over all ranks (one allreduce
    of them all, on the device they live on). Returns how many buffers were averaged. A
    collective: every rank must call it at the same point.

    ``num_batches_tracked`` is not averaged: every rank takes the same number of steps, so it
    is the same everywhere."""
    buffers = running_statistics(model)
    if comm.size < 2 or not buffers:
        return 0
    with torch.no_grad():
        flat = torch.cat([b.reshape(-1).float() for b in buffers])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= comm.size
        offset = 0
        for buffer in buffers:
            count = buffer.numel()
            buffer.copy_(flat[offset:offset + count].view_as(buffer))
            offset += count
    return len(buffers)


def broadcast_object(value: Any, comm: Communicator, root: int = 0) -> Any:
    """``value`` of rank ``root`` on every rank (pickled); a collective."""
    if comm.size < 2:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=root)
    return box[0]


def gather_objects(value: Any, comm: Communicator) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank; a collective."""
    if comm.size < 2:
        return [value]
    out: list[Any] = [None] * comm.size
    dist.all_gather_object(out, value)
    return out


# --- checkpoints -----------------------------------------------------------------------------

class TorchCheckpointManager(CheckpointManager):
    """:class:`~autocnnp.components.rank_runtime.CheckpointManager` (atomic folders,
    manifests with sha256, keep the last N, skip corrupt ones on resume) holding one
    ``state.pt``: the model's and optimizer's state dicts, the learning-rate state and every
    rank's RNG state, so that ``--resume`` continues exactly where the run stopped."""

    STATE_FILE = "state.pt"

    def __init__(self, directory: Path, keep: int = 3) -> None:
        super().__init__(directory, keep)
        self.pending: dict[str, Any] = {}

    def write_state(self, folder: Path, model: Any, optimizer: Any) -> None:
        """``state.pt``: the state dicts, with ``self.pending`` (the learning-rate state, the
        loss scaler and every rank's RNG, set by the training loop before :meth:`save`)."""
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    **self.pending}, folder / self.STATE_FILE)

    def estimate_bytes(self, model: Any, optimizer: Any) -> int:
        latest = self.latest()
        if latest is not None:
            size = sum(p.stat().st_size for p in latest[1].rglob("*") if p.is_file())
            if size:
                return size
        return 3 * sum(p.numel() * p.element_size() for p in model.parameters())

    @staticmethod
    def restore(model: Any, optimizer: Any, folder: Path) -> dict[str, Any]:
        """Read ``state.pt`` of ``folder`` (not applied: see ``torch_training.restore``);
        returns ``state.json`` with the tensors under ``"torch_state"``."""
        import json

        folder = Path(folder)
        if not (folder / TorchCheckpointManager.STATE_FILE).is_file():
            raise FileNotFoundError(f"{TorchCheckpointManager.STATE_FILE} is missing (a "
                                    f"checkpoint of the Horovod engine?)")
        blob = torch.load(folder / TorchCheckpointManager.STATE_FILE, map_location="cpu",
                          weights_only=False)
        model.load_state_dict(blob["model"])  # fails here, not later, on a different model
        state = json.loads((folder / "state.json").read_text())
        state["torch_state"] = blob
        return state


def setup_checkpoints(ctx: RankContext) -> None:
    """Checkpoints (state dicts), the per-epoch JSON-lines metrics and TensorBoard on rank 0;
    files as on the Horovod engine: ``RUN_DIR/checkpoints/epoch-NNNNN/``,
    ``RUN_DIR/metrics/epochs.jsonl`` and, unless ``<monitoring>`` turns ``tensorboard`` off,
    ``RUN_DIR/tensorboard/train/`` and ``validation/`` (the scalars the Keras callback writes:
    :class:`~autocnnp.components.event_files.EpochTensorBoard`)."""
    from autocnnp.components.event_files import EpochTensorBoard, tensorboard_missing

    comm = ctx.communicator
    ctx.model
    ctx.optimizer
    monitoring = ctx.spec.monitoring
    manager = TorchCheckpointManager(Path(ctx.run_dir) / "checkpoints",
                                     keep=monitoring.keep_checkpoints)
    callbacks: list[Any] = []
    if comm.rank == 0 and monitoring.tensorboard:
        missing = tensorboard_missing()
        if missing is None:
            callbacks.append(EpochTensorBoard(Path(ctx.run_dir) / "tensorboard"))
        else:
            ctx.log.warning("no TensorBoard files: %s (pip install tensorboard, or set the "
                            "<monitoring> property tensorboard to false)", missing)
    ctx.values["checkpoints"] = CheckpointSetup(manager=manager, callbacks=callbacks)


# --- injection -------------------------------------------------------------------------------

def build_architecture(ctx: RankContext) -> None:
    """Build the configured CNN (``torch.nn.Module``) for the task's image shape."""
    from autocnnp.components.models.torch_user import build_torch_model

    task = ctx.task
    ctx.device
    base_dir = Path(ctx.spec.source).parent if ctx.spec.source else None
    if ctx.spec.architecture.init is not None:
        raise AutocnnpError("<CNN_archi><init> loads a Keras model, which the torch engine "
                            "cannot use", remedy="drop <init> or use dist_strategy "
                                                 "ring_allreduce")
    model = build_torch_model(ctx.spec.architecture, task.input_shape, task.num_classes,
                              base_dir=base_dir)
    ctx.values["model"] = model
    from autocnnp.components.models.torch_models import count_params
    ctx.log.info("model %s: %d parameters", getattr(model, "name", type(model).__name__),
                 count_params(model))
