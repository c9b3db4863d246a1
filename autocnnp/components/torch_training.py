"""The torch engine's training loop and final evaluation (the worker calls :func:`train`,
:func:`evaluate` and :func:`close` when the job runs ``dist_strategy`` ``torch_ddp``).

What the Horovod engine's ``fit`` and callbacks do, in one loop, in the same order and with
the same files:

- per step: the learning rate of the schedule at ``epoch + step / steps`` (linear scaling,
  warmup, GreScale: the same :class:`~autocnnp.components.lr_policies.LRSchedule`), forward,
  the per-image loss averaged over the batch, backward (DDP averages the gradients), update;
  then the NaN/Inf guard (one small allreduce: every rank stops at the same step) and the
  weight-consistency guard after steps 2 and 3;
- per epoch: the metrics averaged over ranks (``loss``, ``dice``, ``val_loss``,
  ``val_dice``, weighted by samples), the weight guard, reduce-on-plateau and early stopping
  as configured, a checkpoint every ``checkpoint_every`` epochs and after the last (rank 0;
  every rank's RNG state gathered into it), one line in ``RUN_DIR/metrics/epochs.jsonl`` (on a
  GPU with ``gpu_memory_mib``, the peak memory torch allocated so far on rank 0), the
  TensorBoard scalars (rank 0, ``ctx.checkpoints.callbacks``) and the progress line on stdout
  (rank 0);
- on the cluster's warning signal (Slurm, before a time limit or a preemption): every rank
  stops at the same step, rank 0 checkpoints the weights reached, and the ranks exit to be
  requeued (:func:`checkpoint_on_warning`);
- after training: the full weight check (parameters and buffers), and rank 0 saves
  ``RUN_DIR/model/model.pt`` (the state dict) with ``autocnnp.json``.

Plugins: the objects in ``ctx.callbacks`` are called as Keras calls its callbacks,
with the method names of ``tf.keras.callbacks.Callback`` (each optional):
``on_train_begin(logs)``, ``on_epoch_begin(epoch, logs)``, ``on_train_batch_end(batch,
logs)``, ``on_epoch_end(epoch, logs)``, ``on_train_end(logs)``; before the first call the loop
sets ``callback.model`` to the (unwrapped) ``torch.nn.Module``. They run on every rank.

BatchNorm buffers: each rank's running statistics follow its own batches (DDP's
``broadcast_buffers`` is off); after the training steps of every epoch, before validation
and the checkpoint, they are averaged across ranks
(:func:`~autocnnp.components.torch_runtime.average_statistics`), as the Horovod engine does,
so validation, checkpoints and the saved model hold one set whichever rank wrote them.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autocnnp.components.progress import BOARD
from autocnnp.components.training import MODEL_META, TrainResult, format_progress
from autocnnp.components.torch_runtime import (allreduce, average_statistics,
                                               broadcast_object, check_weights_identical,
                                               dice_metric, gather_flags, gather_objects,
                                               leave_process_group, torch_device)
from autocnnp.engine import rundir
from autocnnp.engine.vocabulary import MONAI_PREFIX
from autocnnp.errors import AutocnnpError
from autocnnp.generator.context import RankContext

#: file of the trained model's state dict in ``RUN_DIR/model/``
MODEL_FILE = "model.pt"
#: a user architecture file's copy in ``RUN_DIR/model/`` (what predict rebuilds it from)
ARCHITECTURE_COPY = "architecture.py"
#: the per-step flag bit of a rank that got the cluster's warning signal (bits 1 and 2 say
#: a non-finite loss or weight)
WARNED = 8


def _notify(ctx: RankContext, event: str, *args: Any) -> None:
    """Call ``event`` on every callback that defines it: the checkpoint action's (rank 0:
    TensorBoard), then the plugins' (see the module docstring), as the Horovod engine orders
    them."""
    for callback in (*ctx.checkpoints.callbacks, *ctx.callbacks):
        method = getattr(callback, event, None)
        if method is not None:
            method(*args)


def _to_tensors(images: np.ndarray, masks: np.ndarray, device: Any) -> tuple[Any, Any]:
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
    return x.contiguous().to(device), torch.from_numpy(masks.astype(np.int64)).to(device)


class _Plateau:
    """Reduce on plateau through ``schedule.scale`` (as keras_settings.make_plateau_callback)."""

    def __init__(self, schedule: Any, monitor: str, patience: int, factor: float,
                 min_lr: float) -> None:
        from autocnnp.components.keras_settings import _MAXIMISED

        self.schedule, self.monitor, self.patience = schedule, monitor, patience
        self.factor, self.min_lr = factor, min_lr
        self.best = -math.inf if monitor in _MAXIMISED else math.inf
        self.waited = 0

    def epoch_end(self, epoch: int, logs: dict[str, float], log: Any) -> None:
        from autocnnp.components.keras_settings import _better, _value

        value = _value(logs, self.monitor)
        if value is None:
            return
        if _better(self.monitor, value, self.best, 0.0):
            self.best, self.waited = value, 0
            return
        self.waited += 1
        if self.waited < self.patience:
            return
        self.waited = 0
        scale = self.schedule.scale * self.factor
        unscaled = self.schedule(epoch + 1) / self.schedule.scale if self.schedule.scale > 0 else 0.0
        if self.min_lr > 0 and unscaled > 0 and unscaled * scale < self.min_lr:
            scale = min(self.schedule.scale, self.min_lr / unscaled)
        self.schedule.scale = scale
        log.info("reduce on plateau: %s did not improve for %d epoch(s); lr scale now %g",
                 self.monitor, self.patience, scale)


class _EarlyStop:
    """Early stopping on averaged logs (every rank stops at the same epoch)."""

    def __init__(self, monitor: str, patience: int, min_delta: float) -> None:
        from autocnnp.components.keras_settings import _MAXIMISED

        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.best = -math.inf if monitor in _MAXIMISED else math.inf
        self.best_epoch = 0
        self.waited = 0

    def should_stop(self, epoch: int, logs: dict[str, float]) -> str | None:
        from autocnnp.components.keras_settings import _better, _value

        value = _value(logs, self.monitor)
        if value is None:
            return None
        if _better(self.monitor, value, self.best, self.min_delta):
            self.best, self.best_epoch, self.waited = value, epoch + 1, 0
            return None
        self.waited += 1
        if self.waited < self.patience:
            return None
        return (f"early stopping after epoch {epoch + 1}: {self.monitor} did not improve "
                f"by more than {self.min_delta:g} for {self.patience} epoch(s) (best "
                f"{self.best:.4g} at epoch {self.best_epoch})")


def _policies(ctx: RankContext) -> tuple[_Plateau | None, _EarlyStop | None]:
    from autocnnp.components.keras_settings import resolve_monitor

    spec = ctx.spec
    has_valid = spec.data.valid is not None
    policy, monitoring = spec.lr_policy, spec.monitoring
    plateau = (_Plateau(ctx.lr_schedule,
                        resolve_monitor(policy.plateau_monitor, has_valid),
                        policy.plateau_patience, policy.plateau_factor, policy.plateau_min_lr)
               if policy.plateau_patience > 0 else None)
    stop = (_EarlyStop(resolve_monitor(monitoring.early_stopping_monitor, has_valid),
                       monitoring.early_stopping_patience, monitoring.early_stopping_min_delta)
            if monitoring.early_stopping_patience > 0 else None)
    return plateau, stop


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _lr_state(schedule: Any, plateau: _Plateau | None, stop: _EarlyStop | None) -> dict:
    return {"scale": schedule.scale,
            "plateau": None if plateau is None else [plateau.best, plateau.waited],
            "early_stopping": None if stop is None else [stop.best, stop.best_epoch, stop.waited]}


def restore(ctx: RankContext, plateau: _Plateau | None, stop: _EarlyStop | None) -> int:
    """Resume: rank 0 restores the newest checkpoint that verifies (saying which it skipped),
    every rank takes its model, optimizer and learning-rate state and its own RNG state.
    Returns the epoch to continue at."""
    from autocnnp.components.training import resume_on_chief

    comm = ctx.communicator
    model = ctx.model
    optimizer = ctx.optimizer
    schedule = ctx.lr_schedule
    hp = ctx.hyperparameters
    manager = ctx.checkpoints.manager
    epoch = hp.start_epoch
    if comm.rank == 0:
        for name in manager.remove_stale():
            ctx.log.info("removed %s, left by a checkpoint writer that was interrupted", name)
    if not ctx.resume:
        return epoch
    blob = None
    if comm.rank == 0:
        epoch, state = resume_on_chief(ctx, manager, model, optimizer, epoch)
        blob = state["torch_state"] if state is not None else None
    epoch, blob = broadcast_object((epoch, blob), comm)
    if blob is not None:
        model.load_state_dict(blob["model"])
        optimizer.load_state_dict(blob["optimizer"])
        lr = blob.get("lr_state") or {}
        schedule.scale = float(lr.get("scale", 1.0))
        if plateau is not None and lr.get("plateau"):
            plateau.best, plateau.waited = lr["plateau"]
        if stop is not None and lr.get("early_stopping"):
            stop.best, stop.best_epoch, stop.waited = lr["early_stopping"]
        scaler = ctx.sync_callbacks.scaler
        if scaler is not None and blob.get("scaler"):
            scaler.load_state_dict(blob["scaler"])
        rng = blob.get("rng") or []
        if comm.rank < len(rng):
            _set_rng_state(rng[comm.rank])
    return int(epoch)


def _run_epoch(ctx: RankContext, epoch: int, steps_done: int, guard_steps: set[int]) -> tuple[
        dict[str, float], float, int, float]:
    """One training epoch on this rank; returns (averaged logs, last lr, steps, train s).
    Raises :class:`~autocnnp.components.preemption.WarningSignalStop` on every rank at the
    same step once any rank got the cluster's warning signal (the flag rides on the NaN/Inf
    guard's allreduce, so it costs nothing more)."""
    from autocnnp.components.preemption import WarningSignalStop, received, warning_signal
    from autocnnp.components.rank_runtime import (DIVERGED_REMEDY, TrainingDivergedError,
                                                  nonfinite_message)

    watching = warning_signal() is not None

    def warned() -> bool:
        return watching and received()

    comm = ctx.communicator
    sync = ctx.sync_callbacks
    ddp, device = sync.ddp, sync.device
    optimizer = ctx.optimizer
    schedule = ctx.lr_schedule
    hp = ctx.hyperparameters
    data = ctx.dataset
    manager = ctx.checkpoints.manager
    weight_check = ctx.spec.monitoring.weight_check
    batches = data.train_batches(epoch)
    steps = len(batches)
    totals = np.zeros(3)  # loss * n, dice * n, n
    lr = schedule(epoch)
    start = time.perf_counter()
    ddp.train()
    for step, indices in enumerate(batches):
        BOARD.begin_step()
        lr = schedule(epoch + step / max(steps, 1))
        for group in optimizer.param_groups:
            group["lr"] = lr
        images, masks = data.augment(*data.train.read_batch(indices), epoch, step)
        x, y = _to_tensors(images, masks, device)
        with sync.autocast():
            probs = ddp(x)
            loss = hp.loss(y, probs).mean()
        optimizer.zero_grad(set_to_none=True)
        if sync.scaler is not None:  # fp16: scaled loss, steps skipped on overflow
            sync.scaler.scale(loss).backward()
            sync.scaler.step(optimizer)
            sync.scaler.update()
        else:
            loss.backward()
            optimizer.step()
        value = float(loss.detach())
        n = len(indices)
        with torch.no_grad():
            totals += (value * n, float(dice_metric(y, probs).sum()), n)
        bits = 0 if math.isfinite(value) else 1
        if not all(bool(torch.isfinite(p).all()) for p in ddp.module.parameters()):
            bits |= 2
        if warned():
            bits |= WARNED
        flags = gather_flags(comm, bits)
        if flags and all(bit == WARNED for bit in flags.values()):
            raise WarningSignalStop(epoch + 1, step + 1)
        if flags:
            flags = {rank: bit & ~WARNED for rank, bit in flags.items() if bit & ~WARNED}
            latest = manager.latest()
            checkpoint = f"{latest[1]} (epoch {latest[0]})" if latest else None
            raise TrainingDivergedError(
                nonfinite_message(epoch + 1, step + 1, flags, checkpoint), epoch=epoch + 1,
                step=step + 1, ranks=tuple(sorted(flags)), remedy=DIVERGED_REMEDY)
        if weight_check and steps_done + step + 1 in guard_steps:
            check_weights_identical(ddp.module, comm, f"training step {steps_done + step + 1}")
        _notify(ctx, "on_train_batch_end", step, {"loss": value})
        BOARD.end_step()
    train_s = time.perf_counter() - start
    # BatchNorm's running statistics followed each rank's own batches: one set for
    # validation, checkpoints and the saved model (the Horovod engine's moments)
    average_statistics(ddp.module, comm)
    totals = allreduce(totals, comm)
    logs = {"loss": totals[0] / max(totals[2], 1), "dice": totals[1] / max(totals[2], 1)}
    if data.valid is not None:
        valid = np.zeros(3)
        ddp.eval()
        with torch.no_grad():
            for indices in data.valid_batches():
                images, masks = data.valid.read_batch(indices)
                x, y = _to_tensors(images, masks, device)
                with sync.autocast():
                    probs = ddp.module(x)
                valid += (float(hp.loss(y, probs).sum()), float(dice_metric(y, probs).sum()),
                          len(indices))
                BOARD.end_valid_step()
        valid = allreduce(valid, comm)
        logs["val_loss"] = valid[0] / max(valid[2], 1)
        logs["val_dice"] = valid[1] / max(valid[2], 1)
    return logs, lr, steps, train_s


def train(ctx: RankContext) -> TrainResult:
    """Resume if asked, train every epoch, check weights across ranks, save the model."""
    from autocnnp.components.preemption import WarningSignalStop
    from autocnnp.components.rank_runtime import (DIVERGED_REMEDY, GUARD_STEPS,
                                                  TrainingDivergedError, json_safe_logs,
                                                  nonfinite_message)

    comm = ctx.communicator
    model = ctx.model
    hp = ctx.hyperparameters
    data = ctx.dataset
    optimizer = ctx.optimizer
    schedule = ctx.lr_schedule
    manager = ctx.checkpoints.manager
    monitoring = ctx.spec.monitoring
    plateau, stop = _policies(ctx)
    initial_epoch = restore(ctx, plateau, stop)
    run_dir = Path(ctx.run_dir)
    log_path = run_dir / "metrics" / "epochs.jsonl"
    history: dict[str, list[float]] = {}
    durations: list[float] = []
    start = time.perf_counter()
    epochs_run = 0
    for callback in (*ctx.checkpoints.callbacks, *ctx.callbacks):
        callback.model = model
    _notify(ctx, "on_train_begin", {})
    # the launcher's hang watch and `autocnnp watch` read this board (components/progress.py)
    BOARD.start_training(hp.end_epoch, data.steps_per_epoch, hp.global_batch_size)
    for epoch in range(initial_epoch, hp.end_epoch):
        began = time.perf_counter()
        BOARD.start_epoch(epoch + 1)
        _notify(ctx, "on_epoch_begin", epoch, {})
        try:
            logs, lr, steps, train_s = _run_epoch(ctx, epoch, epochs_run * data.steps_per_epoch,
                                                  set(GUARD_STEPS))
        except WarningSignalStop as warning:
            checkpoint_on_warning(ctx, warning, plateau, stop)
        logs["lr"] = lr
        epochs_run += 1
        values, nonfinite = json_safe_logs(logs)
        if nonfinite:
            flags = gather_flags(comm, 4)
            latest = manager.latest()
            raise TrainingDivergedError(
                nonfinite_message(epoch + 1, None, flags, f"{latest[1]} (epoch {latest[0]})"
                                  if latest else None), epoch=epoch + 1, step=None,
                ranks=tuple(sorted(flags)), remedy=DIVERGED_REMEDY)
        if monitoring.weight_check:
            check_weights_identical(model, comm, f"epoch {epoch + 1}")
        for key, value in logs.items():
            history.setdefault(key, []).append(float(value))
        if plateau is not None:
            plateau.epoch_end(epoch, logs, ctx.log)
        _notify(ctx, "on_epoch_end", epoch, logs)
        done = epoch + 1
        checkpoint_now = monitoring.checkpoint_every > 0 and (
            done % monitoring.checkpoint_every == 0 or done == hp.end_epoch)
        stopping = stop.should_stop(epoch, logs) if stop is not None else None
        if stopping:
            checkpoint_now = monitoring.checkpoint_every > 0
        if checkpoint_now:
            rng = gather_objects(_rng_state(), comm)  # a collective: every rank
            if comm.rank == 0:
                scaler = ctx.sync_callbacks.scaler
                manager.pending = {"rng": rng, "lr_state": _lr_state(schedule, plateau, stop),
                                   "scaler": scaler.state_dict() if scaler else None}
                manager.save(model, optimizer, done, {"engine": "torch", "time": time.time(),
                                                      "logs": values})
        BOARD.end_epoch_work()
        now = time.perf_counter()
        took = now - began
        durations.append(took)
        if comm.rank == 0:
            record = {"epoch": done, **values, "time_s": round(took, 4),
                      "train_s": round(train_s, 4),
                      "images_per_s": round(steps * hp.global_batch_size / max(train_s, 1e-9), 2),
                      "wall": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            if torch.cuda.is_available() and ctx.sync_callbacks.device.type == "cuda":
                record["gpu_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, allow_nan=False) + "\n")
            eta = (hp.end_epoch - done) * sum(durations) / len(durations)
            sys.stdout.write(format_progress(done, hp.end_epoch, logs, took, eta) + "\n")
            sys.stdout.flush()
        if stopping:
            ctx.log.info(stopping)
            if comm.rank == 0:
                print(stopping, flush=True)
            break
    _notify(ctx, "on_train_end", {})
    BOARD.finish()
    seconds = time.perf_counter() - start
    images = epochs_run * data.steps_per_epoch * hp.global_batch_size
    if monitoring.weight_check:
        check_weights_identical(model, comm, "training", trainable_only=False)
    if comm.rank == 0:
        save_model(ctx)
    return TrainResult(initial_epoch=initial_epoch, end_epoch=hp.end_epoch, seconds=seconds,
                       images_per_s=images / seconds if seconds > 0 else 0.0, history=history)


def checkpoint_on_warning(ctx: RankContext, warning: Any, plateau: _Plateau | None,
                          stop: _EarlyStop | None) -> None:
    """Every rank stopped at the same step on the cluster's warning signal: as the Horovod
    engine (:func:`autocnnp.components.training.checkpoint_on_warning`), average the
    BatchNorm statistics, let rank 0 checkpoint the weights reached as the last finished
    epoch (the resumed job runs the interrupted epoch again from them), and stop every rank
    with :class:`~autocnnp.components.preemption.PreemptedError` once the checkpoint is
    written."""
    from autocnnp.components.preemption import PreemptedError

    comm = ctx.communicator
    model = ctx.model
    manager = ctx.checkpoints.manager
    average_statistics(model, comm)
    rng = gather_objects(_rng_state(), comm)  # a collective: every rank
    folder = manager.directory / f"{manager.PREFIX}{warning.epoch - 1:05d}"
    if comm.rank == 0:
        scaler = ctx.sync_callbacks.scaler
        manager.pending = {"rng": rng, "lr_state": _lr_state(ctx.lr_schedule, plateau, stop),
                           "scaler": scaler.state_dict() if scaler else None}
        folder = manager.save(model, ctx.optimizer, warning.epoch - 1,
                              {"engine": "torch", "time": time.time(),
                               "interrupted": {"epoch": warning.epoch, "step": warning.step}})
    # every rank waits for the checkpoint: the first rank to exit makes srun
    # --kill-on-bad-exit end the others, rank 0 in the middle of its write
    folder = broadcast_object(str(folder), comm)
    raise PreemptedError(f"checkpointed on the warning signal at epoch {warning.epoch} step "
                         f"{warning.step} ({folder}); the job is requeued and resumes there")


def save_model(ctx: RankContext) -> Path:
    """``RUN_DIR/model/model.pt`` (the state dict) and ``autocnnp.json``, atomically; a user
    architecture file is copied beside them (:data:`ARCHITECTURE_COPY`), so that
    :func:`load_model` rebuilds the module without the config's folder."""
    model = ctx.model
    task = ctx.task
    run_dir = Path(ctx.run_dir)
    final = run_dir / rundir.MODEL
    tmp = run_dir / f".tmp-model-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp / MODEL_FILE)
    data = ctx.spec.data
    arch = ctx.spec.architecture
    channels = getattr(ctx.dataset.train, "channels", None)
    meta = {"engine": "torch", "classes": list(task.classes), "num_classes": task.num_classes,
            "input_shape": list(task.input_shape), "image_size": data.image_size,
            "format": data.format, "architecture": arch.label,
            "params": dict(arch.params), "layout": "NCHW",
            # the volume channels trained on (None: every one), so predict reads the same
            "channels": None if channels is None else [int(c) for c in channels],
            "epochs": ctx.spec.hyperparameters.end_epoch}
    if arch.path is not None:
        shutil.copyfile(arch.path, tmp / ARCHITECTURE_COPY)
        meta["architecture_file"] = ARCHITECTURE_COPY
    rundir.write_json(tmp / MODEL_META, meta)
    return rundir.replace_dir(tmp, final)


class TorchPredictor:
    """A trained torch module behind the Keras ``predict`` that ``autocnnp predict`` calls:
    ``(N, H, W, C)`` images in, ``(N, H, W, classes)`` probabilities out, on the CPU in eval
    mode (BatchNorm's averaged running statistics, no dropout)."""

    def __init__(self, module: Any) -> None:
        self.module = module.eval()

    def predict(self, images: np.ndarray, batch_size: int = 8, verbose: int = 0) -> np.ndarray:
        out = []
        with torch.no_grad():
            for first in range(0, len(images), max(int(batch_size), 1)):
                x = torch.from_numpy(np.ascontiguousarray(
                    images[first:first + batch_size], dtype=np.float32)).permute(0, 3, 1, 2)
                out.append(self.module(x.contiguous()).permute(0, 2, 3, 1).numpy())
        return np.concatenate(out) if out else np.zeros((0,), dtype=np.float32)


def load_model(model_dir: Path, meta: dict[str, Any]) -> TorchPredictor:
    """The model :func:`save_model` wrote: the architecture rebuilt from ``autocnnp.json``
    (a built-in by name, or the copied architecture file) with its parameters, and the
    state dict loaded on the CPU."""
    from autocnnp.components.models.torch_user import build_torch_model
    from autocnnp.engine.spec import ArchitectureSpec

    model_dir = Path(model_dir)
    label = str(meta.get("architecture", "builtin:unet"))
    if meta.get("architecture_file"):
        arch = ArchitectureSpec(name=None, path=model_dir / meta["architecture_file"],
                                params=dict(meta.get("params") or {}))
    elif label.startswith(("builtin:", MONAI_PREFIX)):
        arch = ArchitectureSpec(name=label.removeprefix("builtin:"),
                                params=dict(meta.get("params") or {}))
    else:
        raise AutocnnpError(
            f"{model_dir}: the model's architecture file {label} was not saved with it (a run "
            f"of an earlier version)", remedy=f"copy {Path(label).name} into {model_dir} as "
                                              f"{ARCHITECTURE_COPY} and add \"architecture_file\": "
                                              f"\"{ARCHITECTURE_COPY}\" to {MODEL_META}")
    module = build_torch_model(arch, tuple(meta["input_shape"]), int(meta["num_classes"]))
    state = torch.load(model_dir / MODEL_FILE, map_location="cpu", weights_only=True)
    module.load_state_dict(state)
    return TorchPredictor(module)


def predict_labels(model: Any, images: np.ndarray, device: Any) -> np.ndarray:
    """Class index per pixel, ``(N, H, W)`` int32, for ``(N, H, W, C)`` images."""
    model.eval()
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
        probs = model(x.contiguous().to(device))
    return probs.argmax(dim=1).cpu().numpy().astype(np.int32)


def evaluate(ctx: RankContext) -> dict[str, Any] | None:
    """SegEval on the test split, streamed and shared by the ranks exactly as on the Horovod
    engine (``training.evaluate``): confusion matrices summed with one allreduce, per-item
    HD95 gathered on rank 0 in file order. Writes ``RUN_DIR/test_metrics.json``."""
    from autocnnp.components.rank_runtime import open_split
    from autocnnp.components.segeval import (SELECTABLE_METRICS, SegEvaluator,
                                             save_test_metrics)

    comm = ctx.communicator
    if ctx.spec.data.test is None:
        return None
    selected = [m for m in dict.fromkeys(ctx.spec.evaluation.metrics) if m in SELECTABLE_METRICS]
    task = ctx.task
    model = ctx.model
    device = torch_device(ctx.device)
    batch = ctx.hyperparameters.batch_size
    test = open_split(ctx, "test")
    names = test.names
    start = time.perf_counter()
    class_names = {i: n for i, n in enumerate(task.classes)}
    evaluator = SegEvaluator(task.num_classes, hd95="hd95" in selected, class_names=class_names)
    order = []
    for first in range(comm.rank * batch, len(test), comm.size * batch):
        indices = np.arange(first, min(first + batch, len(test)))
        images, masks = test.read_batch(indices)
        pred = predict_labels(model, images, device)
        for k, i in enumerate(indices):
            evaluator.add(masks[k], pred[k], name=names[i])
            order.append(int(i))
    if comm.size == 1:
        result = evaluator.result()
    else:
        confusion = allreduce(np.asarray(evaluator.confusion, dtype=np.int64), comm)
        parts = gather_objects((order, evaluator.item_hd), comm)
        if comm.rank != 0:
            return None
        items = sorted((i, hd) for part_order, part_hd in parts
                       for i, hd in zip(part_order, part_hd or [{}] * len(part_order)))
        total = sum(len(part_order) for part_order, _ in parts)
        result = SegEvaluator.combined(evaluator.num_classes, confusion,
                                       [hd for _, hd in items], total, hd95=evaluator.hd95,
                                       class_names=class_names).result()
    metrics = {"split": "test", "source": str(test.root), "samples": len(test),
               "seconds": round(time.perf_counter() - start, 3), "selected_metrics": selected,
               "engine": "torch", **result.to_dict()}
    return save_test_metrics(Path(ctx.run_dir), metrics, result)


def close(ctx: RankContext) -> None:
    """Leave the process group: this rank's collectives are over (see
    :func:`~autocnnp.components.torch_runtime.leave_process_group`)."""
    leave_process_group()
