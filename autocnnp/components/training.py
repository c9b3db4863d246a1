"""The training loop that runs after the generator's actions, and the final evaluation.

:func:`train` compiles the model with the distributed optimizer, restores the latest
checkpoint when resuming, makes every rank start from rank 0's variables, and calls ``fit``
with the callbacks of every action and plugin, in this order:

1. ``ctx.sync_callbacks`` (dist_strategy: broadcast, metric averaging, learning
   rate) - first, so that everything after sees averaged metrics and the lr;
2. the statistics average: BatchNorm's moving mean and variance follow each rank's own
   batches, so they are averaged across ranks before every validation and at every epoch end
   (before the checkpoints), and once more after ``fit``: the saved model is the same
   whichever rank saved it;
3. the NaN/Inf guard: after every step each rank checks its batch loss and its weights, at
   every epoch end the averaged metrics, and one small allreduce tells every rank when any
   found NaN or Inf: all ranks stop at that step with
   :class:`~autocnnp.components.rank_runtime.TrainingDivergedError` (exit code 4), naming
   epoch, step, ranks and the last good checkpoint; no test metrics are written;
3b. the divergence stop (off by default; ``<monitoring>`` divergence_factor,
   collapse_fraction): at an epoch end whose averaged loss ran away from its best or whose
   validation metric collapsed, every rank raises
   :class:`~autocnnp.components.divergence.LossDivergedError` (exit code 7);
4. the weight-consistency guard (unless the ``<monitoring>`` property ``weight_check`` is
   false): all ranks compare checksums of their trainable weights after training steps 2 and
   3 and at every epoch end, and stop with
   :class:`~autocnnp.components.rank_runtime.WeightDivergenceError` if they differ. The
   guards are added here rather than by ``dist_strategy`` so that a replacing plugin keeps
   them;
5. ``ctx.checkpoints.callbacks`` (rank 0: checkpoints, JSON-lines metrics,
   TensorBoard);
6. ``ctx.callbacks`` (plugins);
7. the progress printer (rank 0), one line per epoch on stdout::

       epoch 3/30  loss 0.41  val_dice 0.80  lr 2.0e-03  12.1s  eta 4m10s

8. the progress reporter (every rank): notes each step, validation step and epoch end in
   :data:`~autocnnp.components.progress.BOARD`, which the worker's heartbeat thread writes to
   ``RUN_DIR/progress/rank-K.json`` for the launcher's hang watch and ``autocnnp watch``.

After ``fit`` every rank checks that all ranks hold identical variables (trainable weights
and averaged statistics), and rank 0 saves the
final model to ``RUN_DIR/model/`` (a SavedModel, plus ``autocnnp.json`` describing its input).
:func:`evaluate` then scores it on the test split with SegEval on rank 0 and writes
``RUN_DIR/test_metrics.json``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

import numpy as np

from autocnnp.engine import rundir
from autocnnp.errors import AutocnnpError
from autocnnp.generator.context import RankContext

#: written next to the SavedModel: what ``autocnnp predict`` needs to prepare inputs
MODEL_META = "autocnnp.json"


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` did on this rank."""

    initial_epoch: int
    end_epoch: int
    seconds: float
    images_per_s: float
    history: dict[str, list[float]]


def format_duration(seconds: float) -> str:
    """``4m10s``, ``1h02m``, ``12s``: compact for the progress line."""
    seconds = max(0, int(round(seconds)))
    if seconds >= 3600:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def format_progress(epoch: int, end_epoch: int, logs: dict[str, float], seconds: float,
                    eta_s: float) -> str:
    """One progress line; ``val_dice`` when there is validation data, else ``dice``."""
    parts = [f"epoch {epoch}/{end_epoch}"]
    if "loss" in logs:
        parts.append(f"loss {logs['loss']:.3g}")  # 3 digits: crossentropy gets small
    if "val_dice" in logs:
        parts.append(f"val_dice {logs['val_dice']:.2f}")
    elif "dice" in logs:
        parts.append(f"dice {logs['dice']:.2f}")
    if "lr" in logs:
        parts.append(f"lr {logs['lr']:.1e}")
    parts.append(f"{seconds:.1f}s")
    parts.append(f"eta {format_duration(eta_s)}")
    return "  ".join(parts)


def make_progress_callback(end_epoch: int, stream: TextIO | None = None) -> Any:
    """Keras callback printing :func:`format_progress` lines (used on rank 0 only)."""
    import tensorflow as tf

    class Progress(tf.keras.callbacks.Callback):
        """Prints one concise line per epoch; the ETA uses the mean epoch time so far."""

        def __init__(self) -> None:
            super().__init__()
            self.durations: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            took = time.perf_counter() - self._start
            self.durations.append(took)
            eta = (end_epoch - epoch - 1) * sum(self.durations) / len(self.durations)
            out = stream or sys.stdout
            out.write(format_progress(epoch + 1, end_epoch, dict(logs or {}), took, eta) + "\n")
            out.flush()

    return Progress()


def make_datasets(ctx: RankContext, initial_epoch: int = 0) -> tuple[Any, Any]:
    """tf.data pipelines of this rank's data: an endless training stream of
    ``steps_per_epoch`` batches per epoch, epoch after epoch from ``initial_epoch`` (the
    batches of :meth:`~autocnnp.components.rank_runtime.RankDataset.train_batches`), and the
    validation shard (None without validation data).

    Only sample indices travel through the pipeline until the map step reads their pixels
    (several batches in parallel, in order, and a few batches ahead by ``prefetch``): a rank
    holds a few batches, not its shard, unless the data is cached in memory. A file that
    cannot be read fails ``fit`` with a :class:`~autocnnp.errors.DataError` naming it.
    """
    import tensorflow as tf

    data = ctx.dataset
    shape = tuple(ctx.task.input_shape)

    def train_indices() -> Any:
        epoch = int(initial_epoch)
        while True:
            yield from data.train_batches(epoch)
            epoch += 1

    def train_keyed() -> Any:  # with augmentation: each batch's epoch and step too
        epoch = int(initial_epoch)
        while True:
            for step, indices in enumerate(data.train_batches(epoch)):
                yield indices, np.array([epoch, step], dtype=np.int64)
            epoch += 1

    if getattr(data, "augmentation", None) is None:
        train = _read_batches(tf, tf.data.Dataset.from_generator(
            train_indices, output_signature=tf.TensorSpec([None], tf.int64)), data.train,
            shape)
    else:
        train = _read_batches(tf, tf.data.Dataset.from_generator(
            train_keyed, output_signature=(tf.TensorSpec([None], tf.int64),
                                           tf.TensorSpec([2], tf.int64))),
            data.train, shape, augment=data.augment)
    valid = None
    if data.valid is not None:
        valid = _read_batches(tf, tf.data.Dataset.from_generator(
            data.valid_batches, output_signature=tf.TensorSpec([None], tf.int64)),
            data.valid, shape)
    return train, valid


@contextlib.contextmanager
def reading_errors(*sources: Any) -> Iterator[None]:
    """Turn TensorFlow's wrapping of a reader's exception back into that exception (a
    DataError naming the file) when a pipeline of :func:`make_datasets` failed to read.
    ``sources`` are the RankDataset or sample sources whose reads run inside."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.OpError as exc:
        for source in sources:
            for part in (source, getattr(source, "train", None), getattr(source, "valid", None)):
                failure = getattr(part, "failure", None)
                if isinstance(failure, AutocnnpError):
                    raise failure from exc
        raise


def _read_batches(tf: Any, indices: Any, source: Any, shape: tuple[int, ...],
                  augment: Callable[..., Any] | None = None) -> Any:
    """``indices`` (a dataset of index batches) mapped to ``(images, masks)`` read from
    ``source``; the reader's DataError is kept on ``source.failure`` for :func:`train`.
    With ``augment``, ``indices`` holds ``(indices, [epoch, step])`` pairs and every batch
    read is passed through ``augment(images, masks, epoch, step)``."""

    def read(idx: np.ndarray, key: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        try:
            images, masks = source.read_batch(idx)
            if augment is not None:
                images, masks = augment(images, masks, int(key[0]), int(key[1]))
            return images, masks
        except Exception as exc:
            source.failure = exc
            raise

    def load(idx: Any, key: Any = None) -> tuple[Any, Any]:
        args = [idx] if key is None else [idx, key]
        images, masks = tf.numpy_function(read, args, (tf.float32, tf.int32),
                                          stateful=False)
        images.set_shape((None,) + shape)
        masks.set_shape((None,) + shape[:2])
        return images, masks

    return (indices.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE))


def callbacks_for_fit(ctx: RankContext, *, progress: bool = True) -> list[Any]:
    """Every callback of the actions and plugins, in the order the module docstring gives."""
    from autocnnp.components.rank_runtime import (make_nonfinite_guard, make_statistics_sync,
                                                  make_weight_guard)

    from autocnnp.components.preemption import make_warning_callback, warning_signal
    from autocnnp.components.divergence import divergence_check, make_divergence_guard
    from autocnnp.components.progress import BOARD, make_progress_reporter, reporting_wanted

    comm = ctx.communicator
    callbacks = list(ctx.sync_callbacks)
    if warning_signal() is not None:  # a cluster that warns before it kills (Slurm)
        callbacks.append(make_warning_callback(comm))
    # before the guard and the checkpoints: they read the averaged statistics
    callbacks.append(make_statistics_sync(comm))
    # before the checkpoints, so that no checkpoint holds NaN weights
    callbacks.append(make_nonfinite_guard(comm, ctx.checkpoints.manager))
    check = divergence_check(ctx.spec.monitoring, ctx.dataset.valid is not None)
    if check is not None:  # off by default; after NaN, before the checkpoints
        callbacks.append(make_divergence_guard(check, comm.size,
                                               ctx.checkpoints.manager))
    if ctx.spec.monitoring.weight_check:
        callbacks.append(make_weight_guard(comm))
    callbacks += list(ctx.checkpoints.callbacks)
    callbacks += list(ctx.callbacks)
    if progress and comm.rank == 0:
        callbacks.append(make_progress_callback(ctx.hyperparameters.end_epoch))
    if reporting_wanted(ctx.spec.monitoring):
        # last: an epoch's end counts as progress once its checkpoint is written
        callbacks.append(make_progress_reporter(
            BOARD, end_epoch=ctx.hyperparameters.end_epoch,
            steps_per_epoch=ctx.dataset.steps_per_epoch,
            global_batch=ctx.hyperparameters.global_batch_size))
    return callbacks


def resume_on_chief(ctx: RankContext, manager: Any, model: Any, optimizer: Any,
                    epoch: int) -> tuple[int, dict[str, Any] | None]:
    """Rank 0's part of ``--resume`` on either engine: restore the newest checkpoint that
    verifies (saying on stdout which were skipped and why), say where training continues, and
    cut ``RUN_DIR/metrics/epochs.jsonl`` back to that epoch. Returns (the epoch to continue
    at, the checkpoint's state, or None when no checkpoint is usable and training starts at
    ``epoch``)."""
    from autocnnp.components.rank_runtime import truncate_epoch_log

    def say(text: str) -> None:
        ctx.log.warning("%s", text)
        print(text, flush=True)

    found = manager.restore_latest(model, optimizer, say)
    state = None
    if found is not None:
        state, folder = found
        epoch = int(state["epoch"])
        ctx.log.info("resuming from %s (epoch %d)", folder, epoch)
        print(f"resuming from checkpoint {folder.name} (epoch {epoch})", flush=True)
    else:
        ctx.log.warning("--resume: no usable checkpoint in %s; starting at epoch %d",
                        manager.directory, epoch)
        print(f"no usable checkpoint in {manager.directory}: starting at epoch {epoch}",
              flush=True)
    # epochs past the checkpoint were logged before the interruption and run again now: drop
    # their lines so that the log lists every epoch once
    log_path = Path(ctx.run_dir) / "metrics" / "epochs.jsonl"
    dropped = truncate_epoch_log(log_path, epoch)
    if dropped:
        ctx.log.info("dropped %d line(s) past epoch %d from %s", dropped, epoch, log_path)
    return epoch, state


def restore(ctx: RankContext) -> int:
    """Resume: rank 0 loads the newest checkpoint that verifies (skipping corrupt ones, and
    saying so on stdout), then every rank takes rank 0's variables (model and optimizer).
    Returns the epoch to continue at (the config's start epoch when there is no usable
    checkpoint or when not resuming). Rank 0 first removes the temporary folders of
    checkpoint writers that were killed.

    When resuming, rank 0 also cuts ``RUN_DIR/metrics/epochs.jsonl`` back to the epochs up to
    the one it continues at (:func:`~autocnnp.components.rank_runtime.truncate_epoch_log`),
    so that after the run the file lists every epoch exactly once."""
    import horovod.tensorflow as hvd_tf

    comm = ctx.communicator
    model = ctx.model
    optimizer = ctx.optimizer
    hp = ctx.hyperparameters
    # slots (Adam moments, momentum) exist only after the first update; create them now so
    # that a checkpoint restores them at once and the broadcast covers them
    if hasattr(optimizer, "_create_all_weights"):  # legacy optimizers (the built-in path)
        optimizer._create_all_weights(model.trainable_variables)
    elif hasattr(optimizer, "build"):  # a plugin's new-style Keras optimizer
        optimizer.build(model.trainable_variables)
    epoch = hp.start_epoch
    manager = ctx.checkpoints.manager
    if comm.rank == 0:
        # this job owns the run directory (the launcher holds its lock): what a killed writer
        # left behind is garbage now
        for name in manager.remove_stale():
            ctx.log.info("removed %s, left by a checkpoint writer that was interrupted", name)
    if ctx.resume:
        if comm.rank == 0:
            epoch, _ = resume_on_chief(ctx, manager, model, optimizer, epoch)
        epoch = int(hvd_tf.broadcast_object(epoch, root_rank=0, name="autocnnp_resume_epoch"))
    # every rank starts from rank 0's variables, whatever the architecture's initialisers do
    opt_vars = optimizer.variables() if callable(optimizer.variables) else optimizer.variables
    hvd_tf.broadcast_variables(list(model.variables) + list(opt_vars), root_rank=0)
    return epoch


def train(ctx: RankContext) -> TrainResult:
    """Compile, resume if asked, fit, check weights across ranks, save the model (rank 0)."""
    from autocnnp.components.losses import dice_metric
    from autocnnp.components.preemption import WarningSignalStop
    from autocnnp.components.rank_runtime import average_statistics, check_weights_identical

    comm = ctx.communicator
    model = ctx.model
    hp = ctx.hyperparameters
    data = ctx.dataset
    model.compile(optimizer=ctx.optimizer, loss=hp.loss, metrics=[dice_metric])
    initial_epoch = restore(ctx)
    build_compiled_state(model, tuple(ctx.task.input_shape))
    train_ds, valid_ds = make_datasets(ctx, initial_epoch)
    start = time.perf_counter()
    history: dict[str, list[float]] = {}
    if initial_epoch < hp.end_epoch:
        try:
            with reading_errors(data):
                result = model.fit(train_ds, epochs=hp.end_epoch, initial_epoch=initial_epoch,
                                   steps_per_epoch=data.steps_per_epoch,
                                   validation_data=valid_ds,
                                   validation_steps=data.validation_steps,
                                   callbacks=callbacks_for_fit(ctx), verbose=0)
        except WarningSignalStop as stop:
            checkpoint_on_warning(ctx, stop)
        history = {k: [float(v) for v in vals] for k, vals in result.history.items()}
    seconds = time.perf_counter() - start
    if model.train_function is not None:
        ctx.log.info("training step traced %d time(s)",
                     model.train_function.experimental_get_tracing_count())
    epochs = max(hp.end_epoch - initial_epoch, 0)
    images = epochs * data.steps_per_epoch * hp.global_batch_size
    # the statistics are already averaged at the last epoch end; once more costs one
    # allreduce per statistic and covers a fit that ran no epoch (resume at end_epoch)
    average_statistics(model, comm)
    if ctx.spec.monitoring.weight_check:
        check_weights_identical(model, comm, "training", trainable_only=False)
    if comm.rank == 0:
        save_model(ctx)
    return TrainResult(initial_epoch=initial_epoch, end_epoch=hp.end_epoch, seconds=seconds,
                       images_per_s=images / seconds if seconds > 0 else 0.0, history=history)


def build_compiled_state(model: Any, input_shape: tuple[int, ...]) -> None:
    """Create, before ``fit``, the variables Keras would otherwise create inside the first
    training step: the compiled loss's and metrics' accumulators. A ``tf.function`` that
    creates variables on its first call is traced twice, so without this the training step
    (the whole model, its gradients and Horovod's allreduce) is traced twice in the first
    epoch. The optimizer's slots are created by :func:`restore`. One forward pass of one
    zero image, outside any graph; nothing is trained."""
    import tensorflow as tf

    y_pred = model(tf.zeros((1,) + input_shape), training=False)
    if not tf.is_tensor(y_pred):  # a user model with several outputs: Keras builds them
        return
    y_true = tf.zeros(tuple(y_pred.shape[:-1]), tf.int32)
    model.compiled_loss.build(y_pred)
    model.compiled_metrics.build(y_pred, y_true)


def checkpoint_on_warning(ctx: RankContext, stop: Any) -> None:
    """Every rank stopped at the same step on the cluster's warning signal: average the
    statistics, let rank 0 checkpoint the weights reached (as the last finished epoch: the
    resumed job runs the interrupted epoch again from them) and stop every rank with
    :class:`~autocnnp.components.preemption.PreemptedError` once the checkpoint is written."""
    from autocnnp.components.preemption import PreemptedError
    from autocnnp.components.rank_runtime import average_statistics

    comm = ctx.communicator
    model = ctx.model
    average_statistics(model, comm)
    manager = ctx.checkpoints.manager
    folder = manager.directory / f"{manager.PREFIX}{stop.epoch - 1:05d}"
    if comm.rank == 0:
        folder = manager.save(model, ctx.optimizer, stop.epoch - 1,
                              {"time": time.time(),
                               "interrupted": {"epoch": stop.epoch, "step": stop.step}})
    if comm.size > 1:  # every rank waits for the checkpoint: the first rank to exit makes
        import horovod.tensorflow as hvd_tf  # srun --kill-on-bad-exit end the others

        hvd_tf.broadcast_object(str(folder), root_rank=0, name="autocnnp_warning_checkpoint")
    raise PreemptedError(f"checkpointed on the warning signal at epoch {stop.epoch} step "
                         f"{stop.step} ({folder}); the job is requeued and resumes there")


def save_model(ctx: RankContext) -> Path:
    """Save the trained model to ``RUN_DIR/model/`` atomically (temp folder, then rename)."""
    model = ctx.model
    task = ctx.task
    run_dir = Path(ctx.run_dir)
    final = run_dir / rundir.MODEL
    tmp = run_dir / f".tmp-model-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(str(tmp), include_optimizer=False, save_format="tf")
    data = ctx.spec.data
    channels = getattr(ctx.dataset.train, "channels", None)
    meta = {"classes": list(task.classes), "num_classes": task.num_classes,
            "input_shape": list(task.input_shape), "image_size": data.image_size,
            "format": data.format, "architecture": ctx.spec.architecture.label,
            # the volume channels trained on (None: every one), so predict reads the same
            "channels": None if channels is None else [int(c) for c in channels],
            "epochs": ctx.spec.hyperparameters.end_epoch}
    rundir.write_json(tmp / MODEL_META, meta)
    return rundir.replace_dir(tmp, final)


def predict_labels(model: Any, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Class index per pixel, ``(N, H, W)`` int32, for ``(N, H, W, C)`` images."""
    probs = model.predict(images, batch_size=batch_size, verbose=0)
    return np.argmax(probs, axis=-1).astype(np.int32)


def evaluate(ctx: RankContext) -> dict[str, Any] | None:
    """Score the trained model on the test split with SegEval, every rank its share.

    The test split is streamed: its batches (of the training batch size, in file order) are
    dealt round-robin to the ranks, each rank reads and predicts only its own, then the
    confusion matrices are summed with one allreduce (exact for every overlap metric) and
    the per-item HD95 values are gathered on rank 0 in file order, so the result equals an
    evaluation of the whole split in one process exactly. A large test split never has to
    fit on one rank. A collective: every rank calls it.

    ``<evaluation><property name="metrics">`` (``spec.evaluation.metrics``) selects what is
    reported: HD95 (the slow part) is computed only when ``hd95`` is selected, and the list
    is written as ``selected_metrics`` so that readers show only those
    (``SegEvalResult.from_dict(d).table(d.get("selected_metrics"))``). The overlap metrics
    come from the confusion matrix at no extra cost and are always in the file.

    Writes ``RUN_DIR/test_metrics.json`` and prints one summary line. Returns the metrics
    dict on rank 0, None elsewhere or when the config has no test split.
    """
    from autocnnp.components.rank_runtime import open_split
    from autocnnp.components.segeval import (SELECTABLE_METRICS, SegEvaluator, confusion_matrix,
                                             per_case_results, save_test_metrics,
                                             write_per_case_csv)

    comm = ctx.communicator
    if ctx.spec.data.test is None:
        return None
    selected = list(dict.fromkeys(ctx.spec.evaluation.metrics))
    unknown = [m for m in selected if m not in SELECTABLE_METRICS]
    if unknown and comm.rank == 0:  # validate.py rejects these in a config; a spec may not
        ctx.log.warning("unknown evaluation metric(s) %s ignored", ", ".join(unknown))
    selected = [m for m in selected if m in SELECTABLE_METRICS]
    task = ctx.task
    model = ctx.model
    batch = ctx.hyperparameters.batch_size
    test = open_split(ctx, "test")
    names = test.names
    start = time.perf_counter()
    class_names = {i: n for i, n in enumerate(task.classes)}
    evaluator = SegEvaluator(task.num_classes, hd95="hd95" in selected,
                             class_names=class_names)
    order, item_confusion = [], []
    for first in range(comm.rank * batch, len(test), comm.size * batch):
        indices = np.arange(first, min(first + batch, len(test)))
        images, masks = test.read_batch(indices)
        pred = predict_labels(model, images, batch)
        for k, i in enumerate(indices):
            evaluator.add(masks[k], pred[k], name=names[i])
            item_confusion.append(confusion_matrix(masks[k], pred[k], task.num_classes))
            order.append(int(i))
    gathered = gather_evaluation(evaluator, order, comm, class_names, item_confusion)
    if gathered is None:
        return None
    result, item_hd, item_confusion = gathered
    case_ids = getattr(test, "case_ids", None) or names  # a split without cases: per sample
    cases = per_case_results(case_ids, item_confusion, item_hd, task.num_classes,
                             hd95="hd95" in selected, class_names=class_names)
    write_per_case_csv(cases, Path(ctx.run_dir) / rundir.PER_CASE_FILE, hd95="hd95" in selected)
    metrics = {"split": "test", "source": str(test.root), "samples": len(test),
               "cases": len(cases), "per_case": rundir.PER_CASE_FILE,
               "seconds": round(time.perf_counter() - start, 3), "selected_metrics": selected,
               **result.to_dict()}
    return save_test_metrics(Path(ctx.run_dir), metrics, result)


def close(ctx: RankContext) -> None:  # noqa: ARG001 - the engines share one interface
    """Nothing to release here: Horovod shuts itself down when the process exits (its
    ``atexit`` hook), after the worker has written every file."""


def gather_evaluation(evaluator: Any, order: list[int], comm: Any,
                      class_names: dict[int, str], item_confusion: list | None = None) -> Any:
    """The :class:`~autocnnp.components.segeval.SegEvalResult` of every rank's ``evaluator``
    together, on rank 0 (None on the others), with the per-item HD95 values and confusion
    matrices in global order (for the per-case metrics): one allreduce of the confusion
    matrices, one gather of the per-item values and of ``order``, the global index of each
    item."""
    from autocnnp.components.segeval import SegEvaluator

    item_confusion = list(item_confusion or [])
    if comm.size == 1:
        return evaluator.result(), evaluator.item_hd, item_confusion
    import horovod.tensorflow as hvd_tf
    import tensorflow as tf

    confusion = hvd_tf.allreduce(tf.constant(evaluator.confusion), op=hvd_tf.Sum,
                                 name="autocnnp_eval_confusion").numpy()
    parts = hvd_tf.allgather_object((order, evaluator.item_hd, item_confusion),
                                    name="autocnnp_eval_hd95")
    if comm.rank != 0:
        return None
    items = sorted(((i, hd, cm) for part_order, part_hd, part_cm in parts
                    for i, hd, cm in zip(part_order, part_hd or [{}] * len(part_order),
                                         part_cm or [None] * len(part_order))),
                   key=lambda item: item[0])
    total = sum(len(part_order) for part_order, _, _ in parts)
    merged = SegEvaluator.combined(evaluator.num_classes, confusion, [hd for _, hd, _ in items],
                                   total, hd95=evaluator.hd95, class_names=class_names)
    return merged.result(), [hd for _, hd, _ in items], [cm for _, _, cm in items]
