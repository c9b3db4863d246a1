"""What Keras users expect from the config, on every rank: optimizer settings (betas,
AdamW's weight decay), class weights and custom loss files, reduce-on-plateau, early
stopping, and initial weights from a previous run.

Decisions that change training (stop, lower the lr) read the epoch logs after Horovod's
``MetricAverageCallback`` has averaged them, so every rank decides the same at the same epoch.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any, Callable

from autocnnp.errors import AutocnnpError
from autocnnp.generator.context import RankContext

#: metrics that are better when higher
_MAXIMISED = ("dice", "val_dice")
#: Keras's own default for AdamW
ADAMW_DEFAULT_DECAY = 0.004


class LossFileError(AutocnnpError):
    """A user loss file cannot be used as configured."""

    exit_code = 2

    def __init__(self, source: str, message: str, *, remedy: str | None = None) -> None:
        super().__init__(f"loss file {source}: {message}", remedy=remedy)


def resolve_monitor(name: str, has_valid: bool) -> str:
    """``auto`` -> ``val_loss`` with a validation split, else ``loss``."""
    if name == "auto":
        return "val_loss" if has_valid else "loss"
    return name


def make_optimizer(name: str, lr: float, momentum: float, *, beta_1: float = 0.9,
                   beta_2: float = 0.999, weight_decay: float | None = None) -> Any:
    """The optimizer ``name`` at learning rate ``lr``.

    ``sgd``, ``adam`` and ``rmsprop`` are ``tf.keras.optimizers.legacy`` optimizers: Horovod's
    Keras callbacks and DistributedOptimizer work with those under Keras 2.15 (DESIGN.md
    section 9). Keras 2.15 has no legacy AdamW, so ``adamw`` is ``tf.keras.optimizers.AdamW``
    (decoupled weight decay); ``hvd.DistributedOptimizer`` averages its gradients too (the
    weight guard checks it on every run).
    """
    import tensorflow as tf

    legacy = tf.keras.optimizers.legacy
    if name == "sgd":
        return legacy.SGD(learning_rate=lr, momentum=momentum)
    if name == "adam":
        return legacy.Adam(learning_rate=lr, beta_1=beta_1, beta_2=beta_2)
    if name == "rmsprop":
        return legacy.RMSprop(learning_rate=lr, momentum=momentum)
    if name == "adamw":
        decay = ADAMW_DEFAULT_DECAY if weight_decay is None else weight_decay
        return tf.keras.optimizers.AdamW(learning_rate=lr, weight_decay=decay, beta_1=beta_1,
                                         beta_2=beta_2)
    raise AutocnnpError(f"unknown optimizer {name!r}; known: sgd, adam, rmsprop, adamw")


def load_loss_file(path: Path) -> Callable[..., Any]:
    """Import a loss file and return its ``loss(y_true, y_pred)``, checked on a small batch
    like an architecture file's model: it must return one value per image."""
    import numpy as np
    import tensorflow as tf

    path = Path(path)
    if not path.is_file():
        raise LossFileError(str(path), "file not found")
    from autocnnp.components.models.user import import_user_file

    module = import_user_file(path, "loss", lambda message: LossFileError(str(path), message))
    loss = getattr(module, "loss", None)
    if loss is None or not callable(loss):
        raise LossFileError(str(path), "defines no function loss(y_true, y_pred)")
    try:
        inspect.signature(loss).bind(None, None)
    except TypeError:
        raise LossFileError(str(path), f"loss{inspect.signature(loss)} must accept "
                                       f"(y_true, y_pred)") from None
    y_true = tf.constant(np.zeros((2, 4, 4), dtype=np.int32))
    y_pred = tf.fill((2, 4, 4, 2), 0.5)
    try:
        value = loss(y_true, y_pred)
    except Exception as exc:
        raise LossFileError(str(path), f"loss(y_true, y_pred) failed on a test batch: "
                                       f"{type(exc).__name__}: {exc}",
                            remedy="y_true is (B, H, W) int class indices, y_pred (B, H, W, C) "
                                   "softmax probabilities") from exc
    shape = tuple(getattr(value, "shape", ()))
    if shape not in ((2,), ()):
        raise LossFileError(str(path), f"loss returned shape {shape} for a batch of 2 images; "
                                       f"expected one value per image, shape (2,)")
    loss.__name__ = getattr(loss, "__name__", "loss")
    return loss


def make_loss(name: str, class_weights: tuple[float, ...] = ()) -> Callable[..., Any]:
    """The configured loss: a built-in (weighted by class when asked) or a loss file."""
    if name.endswith(".py"):
        return load_loss_file(Path(name))
    from autocnnp.components.losses import get_loss, weighted_loss
    if class_weights:
        return weighted_loss(name, class_weights)
    return get_loss(name)


def _better(monitor: str, value: float, best: float, min_delta: float) -> bool:
    if monitor in _MAXIMISED:
        return value > best + min_delta
    return value < best - min_delta


def _value(logs: dict | None, monitor: str) -> float | None:
    value = (logs or {}).get(monitor)
    return None if value is None or not math.isfinite(float(value)) else float(value)


def make_plateau_callback(schedule: Any, monitor: str, patience: int, factor: float,
                          min_lr: float, log: Any) -> Any:
    """Reduce on plateau through ``schedule.scale``: the ``<lr_policy>`` keeps it (a value
    written into the optimizer would be overwritten whenever the policy's value changes)."""
    import tensorflow as tf

    class ReduceOnPlateau(tf.keras.callbacks.Callback):
        """Multiplies the policy's learning rate by ``factor`` after ``patience`` epochs
        without improvement of ``monitor``; never below ``min_lr``."""

        def __init__(self) -> None:
            super().__init__()
            self.best = -math.inf if monitor in _MAXIMISED else math.inf
            self.waited = 0
            self.reductions = 0

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            value = _value(logs, monitor)
            if value is None:
                return
            if _better(monitor, value, self.best, 0.0):
                self.best, self.waited = value, 0
                return
            self.waited += 1
            if self.waited < patience:
                return
            self.waited = 0
            scale = schedule.scale * factor
            unscaled = schedule(epoch + 1) / schedule.scale if schedule.scale > 0 else 0.0
            if min_lr > 0 and unscaled > 0 and unscaled * scale < min_lr:
                scale = min(schedule.scale, min_lr / unscaled)  # down to min_lr, never up
            schedule.scale = scale
            self.reductions += 1
            log.info("reduce on plateau: %s did not improve for %d epoch(s); lr scale now %g",
                     monitor, patience, schedule.scale)

    return ReduceOnPlateau()


def make_early_stopping(monitor: str, patience: int, min_delta: float, chief: bool,
                        log: Any) -> Any:
    """Stop ``fit`` after ``patience`` epochs without an improvement of ``monitor`` by more
    than ``min_delta``; every rank stops at the same epoch (averaged logs)."""
    import tensorflow as tf

    class EarlyStopping(tf.keras.callbacks.Callback):
        """Sets ``model.stop_training``; rank 0 prints one line saying why."""

        def __init__(self) -> None:
            super().__init__()
            self.best = -math.inf if monitor in _MAXIMISED else math.inf
            self.best_epoch = 0
            self.waited = 0
            self.stopped_epoch: int | None = None

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            value = _value(logs, monitor)
            if value is None:
                return
            if _better(monitor, value, self.best, min_delta):
                self.best, self.best_epoch, self.waited = value, epoch + 1, 0
                return
            self.waited += 1
            if self.waited >= patience:
                self.model.stop_training = True
                self.stopped_epoch = epoch + 1
                text = (f"early stopping after epoch {epoch + 1}: {monitor} did not improve "
                        f"by more than {min_delta:g} for {patience} epoch(s) (best "
                        f"{self.best:.4g} at epoch {self.best_epoch})")
                log.info(text)
                if chief:
                    print(text, flush=True)

    return EarlyStopping()


def training_callbacks(ctx: RankContext) -> list[Any]:
    """The reduce-on-plateau and early-stopping callbacks the config asks for."""
    spec = ctx.spec
    has_valid = spec.data.valid is not None
    callbacks = []
    policy = spec.lr_policy
    if policy.plateau_patience > 0:
        callbacks.append(make_plateau_callback(
            ctx.lr_schedule, resolve_monitor(policy.plateau_monitor, has_valid),
            policy.plateau_patience, policy.plateau_factor, policy.plateau_min_lr, ctx.log))
    monitoring = spec.monitoring
    if monitoring.early_stopping_patience > 0:
        callbacks.append(make_early_stopping(
            resolve_monitor(monitoring.early_stopping_monitor, has_valid),
            monitoring.early_stopping_patience, monitoring.early_stopping_min_delta,
            ctx.is_chief, ctx.log))
    return callbacks


def initialise_weights(model: Any, path: Path, log: Any) -> int:
    """Copy the weights of the model saved at ``path`` (a SavedModel folder or a .keras/.h5
    file) into ``model``; both must have the same weights in the same order and shapes.
    Returns how many weight arrays were copied."""
    import tensorflow as tf

    from autocnnp.components.losses import custom_objects
    from autocnnp.components.models import ArchitectureError

    try:
        source = tf.keras.models.load_model(str(path), compile=False,
                                            custom_objects=custom_objects())
    except Exception as exc:
        raise ArchitectureError(f"<init> {path}", f"cannot load the model: "
                                                  f"{type(exc).__name__}: {exc}") from exc
    theirs, ours = source.get_weights(), model.weights
    if len(theirs) != len(ours):
        raise ArchitectureError(f"<init> {path}", f"the saved model has {len(theirs)} weight "
                                                  f"arrays, this architecture {len(ours)}",
                                remedy="initialise from a run of the same architecture "
                                       "and <param> values")
    for value, variable in zip(theirs, ours):
        if tuple(value.shape) != tuple(variable.shape):
            raise ArchitectureError(
                f"<init> {path}", f"weight {variable.name} has shape {tuple(variable.shape)} "
                                  f"here but {tuple(value.shape)} in the saved model",
                remedy="initialise from a run of the same architecture, <param> values and "
                       "number of classes")
    model.set_weights(theirs)
    log.info("initialised %d weight arrays from %s", len(theirs), path)
    return len(theirs)
