"""Learning-rate policies for data-parallel training (thesis 6.2-6.3).

All policies are pure functions of the (fractional) epoch, so they can be unit-tested with
exact values and plotted without TensorFlow. ``epoch`` counts from the start of training
(epoch 0.0 is the first step; 2.5 is half way through the third epoch); the Keras callback
that applies a policy evaluates it once per step as ``epoch + batch / steps_per_epoch``.

Let ``b`` be the single-worker (base) learning rate from the config, ``N`` the number of
workers and ``t = b * N`` the target of the linear scaling rule.

``constant``
    ``b`` at every step: no scaling (a 1-worker baseline, or a user who tuned ``lr`` for N).
``linear_scaling``
    ``t`` at every step (Goyal et al.'s linear scaling rule without warmup).
``warmup``
    Goyal et al.'s gradual warmup: a per-step linear ramp from ``b`` at epoch 0 to ``t`` at
    ``warmup_epochs``, then ``t``.
``grescale``
    The thesis's GreScale, three stages over ``E`` total epochs. With
    ``W = min(warmup_epochs, E)``, ``R = E - W`` the remaining epochs,
    ``S = stabilization_fraction * R`` and ``D = decay_fraction * R``:

    1. warmup, ``[0, W)``: the ramp of ``warmup`` from ``b`` to ``t``;
    2. stabilization, ``[W, W + S)``: constant ``s = t * stabilization_factor`` (a factor
       below 1 is the thesis's "reduced" stabilization learning rate);
    3. decay, ``[W + S, W + S + D)``: exponential decay ``s * exp(-k * (epoch - W - S))``
       where ``k = decay_coefficient`` is per epoch;
    4. after ``W + S + D`` (only when the two fractions add up to less than 1): the value
       reached at the end of the decay.

    The decay is ``exp(-k * epochs)`` rather than "end at ``t * k``" because the guideline's
    tuning step "increase the decay coefficient" (Figure 6.3) follows "decrease the initial
    learning rate": both must lower the learning rate late in training, which a larger
    ``k`` does here. With the default ``k = 0.1`` the learning rate falls by ``e^-1`` (to 37%)
    every 10 decay epochs.
"""

from __future__ import annotations

import math
from typing import Any

from autocnnp.engine.spec import LRPolicyName, LRPolicySpec

__all__ = ["lr_at", "target_lr", "grescale_stages", "LRSchedule", "make_lr_callback"]


def target_lr(policy: LRPolicySpec, base_lr: float, workers: int) -> float:
    """The learning rate the policy scales to: ``base_lr`` for constant, else ``base_lr * N``."""
    if LRPolicyName(policy.name) is LRPolicyName.CONSTANT:
        return base_lr
    return base_lr * workers


def grescale_stages(policy: LRPolicySpec, total_epochs: float) -> tuple[float, float, float]:
    """GreScale stage boundaries ``(W, W + S, W + S + D)`` in epochs, for ``total_epochs``."""
    warm = max(0.0, min(float(policy.warmup_epochs), float(total_epochs)))
    remaining = max(0.0, float(total_epochs) - warm)
    stab_end = warm + policy.stabilization_fraction * remaining
    decay_end = stab_end + policy.decay_fraction * remaining
    return warm, stab_end, decay_end


def _ramp(epoch: float, warmup_epochs: float, base: float, target: float) -> float:
    if warmup_epochs <= 0 or epoch >= warmup_epochs:
        return target
    return base + (target - base) * max(epoch, 0.0) / warmup_epochs


def lr_at(epoch: float, policy: LRPolicySpec, base_lr: float, workers: int,
          total_epochs: float) -> float:
    """The learning rate at fractional ``epoch`` (0-based, from the start of training)."""
    name = LRPolicyName(policy.name)
    target = target_lr(policy, base_lr, workers)
    if name in (LRPolicyName.CONSTANT, LRPolicyName.LINEAR_SCALING):
        return target
    if name is LRPolicyName.WARMUP:
        return _ramp(epoch, float(policy.warmup_epochs), base_lr, target)
    # GreScale
    warm, stab_end, decay_end = grescale_stages(policy, total_epochs)
    if epoch < warm:
        # thesis: stabilization "starts right after reaching the target lr (k * lr)", so the
        # ramp ends at t even when the stabilization factor then lowers it
        return _ramp(epoch, warm, base_lr, target)
    stab = target * policy.stabilization_factor
    if epoch < stab_end:
        return stab
    into_decay = min(epoch, decay_end) - stab_end
    return stab * math.exp(-policy.decay_coefficient * into_decay)


class LRSchedule:
    """A policy bound to one job: base lr, number of workers and epoch range.

    ``start_epoch`` is the config's first epoch: Keras epoch numbers are absolute (a resumed
    run continues at, say, epoch 12), the policy counts from ``start_epoch``.

    ``scale`` (1.0) multiplies every value: it is how a plugin or reduce-on-plateau lowers
    the learning rate without fighting the policy, whose callback would overwrite a value
    written straight into the optimizer whenever the policy's own value changes.
    """

    def __init__(self, policy: LRPolicySpec, base_lr: float, workers: int, start_epoch: int,
                 end_epoch: int) -> None:
        self.policy = policy
        self.base_lr = float(base_lr)
        self.workers = int(workers)
        self.start_epoch = int(start_epoch)
        self.end_epoch = int(end_epoch)
        self.scale = 1.0

    @property
    def total_epochs(self) -> int:
        return self.end_epoch - self.start_epoch

    @property
    def target(self) -> float:
        return target_lr(self.policy, self.base_lr, self.workers)

    def __call__(self, keras_epoch: float) -> float:
        """The learning rate at an absolute (Keras) fractional epoch."""
        return self.scale * lr_at(keras_epoch - self.start_epoch, self.policy, self.base_lr,
                                  self.workers, self.total_epochs)

    def __repr__(self) -> str:
        return (f"LRSchedule({LRPolicyName(self.policy.name).value}, base={self.base_lr:g}, "
                f"workers={self.workers}, target={self.target:g}, "
                f"epochs={self.start_epoch}..{self.end_epoch})")


def make_lr_callback(schedule: LRSchedule, steps_per_epoch: int | None = None) -> Any:
    """A Keras callback that sets the optimizer's learning rate before every training step
    and adds ``lr`` (the value used during the epoch's last step) to the epoch logs.

    ``steps_per_epoch`` defaults to what ``fit`` reports in ``self.params["steps"]``.
    """
    import tensorflow as tf

    class LearningRateSchedule(tf.keras.callbacks.Callback):
        """Per-step learning rate from an autocnnp :class:`LRSchedule`."""

        def __init__(self) -> None:
            super().__init__()
            self.schedule = schedule
            self.steps_per_epoch = steps_per_epoch
            self._epoch = 0
            self.last_lr: float | None = None

        def _steps(self) -> int:
            steps = self.steps_per_epoch or (self.params or {}).get("steps") or 1
            return max(int(steps), 1)

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._epoch = epoch

        def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
            lr = self.schedule(self._epoch + batch / self._steps())
            if lr != self.last_lr:  # a variable assign per step costs; skip when unchanged
                tf.keras.backend.set_value(self.model.optimizer.lr, lr)
                self.last_lr = lr

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if logs is not None:
                logs["lr"] = float(tf.keras.backend.get_value(self.model.optimizer.lr))

    return LearningRateSchedule()
