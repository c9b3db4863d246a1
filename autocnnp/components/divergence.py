"""The divergence stop beyond NaN (off by default): a loss that runs away, a validation metric
that collapses.

With ``<monitoring>`` property ``divergence_factor`` F, an epoch whose loss is above F times
the best epoch loss so far stops training; with ``collapse_fraction`` C, an epoch whose
``collapse_monitor`` (auto: ``val_dice`` with a validation split, else ``dice``) is below C
times its best value so far does too. The check reads the epoch's metrics after Horovod
averaged them, so every rank reaches the same verdict at the same epoch end without a
message, and it runs before the checkpoint callback: the diverged epoch is never
checkpointed. Every rank then raises :class:`LossDivergedError` (exit code 7) naming the
epoch, what ran away, the best epoch and the last good checkpoint.

The NaN/Inf stop (exit code 4) is :func:`~autocnnp.components.rank_runtime.make_nonfinite_guard`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from autocnnp.components.rank_runtime import TrainingDivergedError

#: exit status of a job stopped by the divergence stop
LOSS_DIVERGED_EXIT = 7

LOSS_DIVERGED_REMEDY = ("lower the learning rate (<property name=\"lr\">) or lengthen the "
                        "warmup (<lr_policy> warmup_epochs), then start a new run, or continue "
                        "from the last good checkpoint with `autocnnp run --resume RUN`; "
                        "<monitoring> divergence_factor / collapse_fraction set how far "
                        "training may stray (0: off)")


class LossDivergedError(TrainingDivergedError):
    """The loss ran away from its best value, or a validation metric collapsed."""

    exit_code = LOSS_DIVERGED_EXIT


@dataclass
class DivergenceCheck:
    """The best values so far and the verdict on each new epoch (pure: no TensorFlow)."""

    factor: float = 0.0
    fraction: float = 0.0
    monitor: str = "val_dice"
    best_loss: tuple[float, int] | None = None      # (value, epoch)
    best_metric: tuple[float, int] | None = None
    history: list[int] = field(default_factory=list)

    def update(self, epoch: int, logs: dict[str, Any]) -> str | None:
        """The reason to stop after ``epoch`` (1-based), or None; remembers the bests."""
        loss, metric = _number(logs.get("loss")), _number(logs.get(self.monitor))
        reason = None
        if self.factor and loss is not None and self.best_loss is not None:
            best, at = self.best_loss
            if loss > self.factor * best:
                reason = (f"the loss {loss:.4g} is above {self.factor:g} x its best "
                          f"({best:.4g} at epoch {at})")
        if reason is None and self.fraction and metric is not None and self.best_metric is not None:
            best, at = self.best_metric
            if metric < self.fraction * best:
                reason = (f"{self.monitor} {metric:.4g} fell below {self.fraction:g} x its best "
                          f"({best:.4g} at epoch {at})")
        if reason is None:
            if loss is not None and (self.best_loss is None or loss < self.best_loss[0]):
                self.best_loss = (loss, epoch)
            if metric is not None and (self.best_metric is None or metric > self.best_metric[0]):
                self.best_metric = (metric, epoch)
        return reason


def _number(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def divergence_message(epoch: int, reason: str, size: int, checkpoint: str | None) -> str:
    return (f"training diverged at the end of epoch {epoch}: {reason}; every rank "
            f"({size}, on the averaged metrics) stopped there. Last good checkpoint: "
            f"{checkpoint or 'none (no checkpoint was written before)'}")


def make_divergence_guard(check: DivergenceCheck, size: int, manager: Any) -> Any:
    """A Keras callback raising :class:`LossDivergedError` when ``check`` says so."""
    import tensorflow as tf

    class DivergenceGuard(tf.keras.callbacks.Callback):
        """Stops every rank at the epoch end where the loss ran away or the metric collapsed."""

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            reason = check.update(epoch + 1, dict(logs or {}))
            if reason is None:
                return
            latest = manager.latest() if manager is not None else None
            checkpoint = f"{latest[1]} (epoch {latest[0]})" if latest else None
            raise LossDivergedError(divergence_message(epoch + 1, reason, size, checkpoint),
                                    epoch=epoch + 1, step=None, ranks=tuple(range(size)),
                                    remedy=LOSS_DIVERGED_REMEDY)

    return DivergenceGuard()


def divergence_check(monitoring: Any, has_valid: bool) -> DivergenceCheck | None:
    """The check the ``<monitoring>`` settings ask for (None: off, the default)."""
    if not monitoring.divergence_factor and not monitoring.collapse_fraction:
        return None
    monitor = monitoring.collapse_monitor
    if monitor == "auto":
        monitor = "val_dice" if has_valid else "dice"
    return DivergenceCheck(factor=monitoring.divergence_factor,
                           fraction=monitoring.collapse_fraction, monitor=monitor)
