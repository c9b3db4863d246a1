"""The thesis's CNN-parallelism guideline (Figure 6.3) as a deterministic state machine.

The thesis ran the guideline by hand; :class:`Guideline` decides which training run comes next
from the test metrics of the runs before it, and ``autocnnp tune`` runs them. Pure: no
TensorFlow, no processes; every decision is unit-testable with synthetic metric dicts.

The steps, for a config with ``parallelism_degree = N``:

1. ``baseline``: the same spec on 1 worker with the ``constant`` lr policy (the base lr).
2. ``grescale``: N workers with GreScale. A config that already chose ``grescale`` keeps its
   parameters; any other policy is replaced by the GreScale defaults (warmup 5 epochs,
   stabilization 4/7 and decay 3/7 of the remaining epochs, factor 1, decay coefficient 0.1).
   The optimizer and base lr of the config are kept.
3. If ``N < threshold`` (default 12) the guideline ends here ("proceed to training").
4. Otherwise tuning, with five actions in this order, each a small fixed step applied to the
   best N-worker spec so far:

   ``decrease_lr``          base lr x 0.5
   ``increase_decay``       decay coefficient ``k`` x 2 (GreScale decays as ``exp(-k t)``)
   ``increase_warmup``      warmup period + 2 epochs
   ``increase_decay_period`` decay fraction + 0.1 (stabilization shrinks so the sum <= 1)
   ``change_optimizer``     sgd <-> adam (rmsprop -> sgd), applied at most once

   An action is repeated while it improves on the best run so far and left for the next one
   when it does not; an action that cannot change anything (warmup already covers all epochs,
   decay fraction already 1) is skipped. Tuning stops as soon as a run reaches the baseline
   (or all actions are spent, or the trial budget is), and the best spec is then re-run once
   to confirm (the ``confirm`` trial), against run-to-run variability.

Runs are compared lexicographically by (mean Dice of the foreground classes, mean accuracy,
mean IoU) of ``test_metrics["means"]`` (thesis 6.4: PA and f.w.IoU are skewed by large
background classes); a missing or NaN metric counts as worst. "Reaching the baseline" is a
score >= the baseline's score.

``max_trials`` (default 10) bounds all trials, baseline and confirmation included; when tuning
happens, the last slot is kept for the confirmation run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from autocnnp.engine.spec import LRPolicyName, LRPolicySpec, TrainingSpec

__all__ = ["ACTIONS", "SCORE_KEYS", "Trial", "TrialRecord", "Guideline", "score_of", "settings_of"]

#: the tuning actions of Figure 6.3, in the order the guideline applies them
ACTIONS: tuple[str, ...] = ("decrease_lr", "increase_decay", "increase_warmup",
                            "increase_decay_period", "change_optimizer")

#: metrics compared, in descending priority, from ``test_metrics["means"]``
SCORE_KEYS: tuple[str, ...] = ("mean_dice_foreground", "mean_accuracy", "mean_iou")

LR_FACTOR = 0.5
DECAY_COEFFICIENT_FACTOR = 2.0
WARMUP_STEP_EPOCHS = 2.0
DECAY_FRACTION_STEP = 0.1
OTHER_OPTIMIZER = {"sgd": "adam", "adam": "sgd", "rmsprop": "sgd"}

_REASONS = {
    "decrease_lr": "decrease the initial learning rate (lr x {f})",
    "increase_decay": "increase the lr decay coefficient (k x {f})",
    "increase_warmup": "increase the warmup period (+{f} epochs)",
    "increase_decay_period": "increase the decay period (decay fraction +{f})",
    "change_optimizer": "change the optimizer",
}


@dataclass(frozen=True)
class Trial:
    """One training run the guideline asks for."""

    name: str
    reason: str
    spec: TrainingSpec
    action: str | None = None  # the tuning action, for tuning trials

    @property
    def settings(self) -> dict[str, Any]:
        return settings_of(self.spec)


@dataclass(frozen=True)
class TrialRecord:
    """A finished trial, its score and what the guideline concluded from it."""

    trial: Trial
    metrics: Mapping[str, Any] | None
    score: tuple[float, float, float]
    improved: bool
    reached_baseline: bool
    run_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        means = dict((self.metrics or {}).get("means") or {})
        return {"name": self.trial.name, "reason": self.trial.reason, "action": self.trial.action,
                "settings": self.trial.settings, "score": dict(zip(SCORE_KEYS, map(_json_float, self.score))),
                "means": {k: _json_float(v) for k, v in means.items()},
                "improved": self.improved, "reached_baseline": self.reached_baseline,
                "run_dir": self.run_dir}


def _json_float(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def score_of(metrics: Mapping[str, Any] | None) -> tuple[float, float, float]:
    """(foreground Dice, mean accuracy, mean IoU); missing or NaN values are ``-inf``."""
    means = (metrics or {}).get("means") or {}
    out = []
    for key in SCORE_KEYS:
        value = means.get(key)
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = -math.inf
        out.append(value if math.isfinite(value) else -math.inf)
    return tuple(out)  # type: ignore[return-value]


def settings_of(spec: TrainingSpec) -> dict[str, Any]:
    """The knobs the guideline turns, as plain JSON values."""
    p, h = spec.lr_policy, spec.hyperparameters
    return {"workers": spec.parallelism_degree, "lr_policy": LRPolicyName(p.name).value,
            "lr": h.lr, "optimizer": h.optimizer, "warmup_epochs": p.warmup_epochs,
            "stabilization_fraction": round(p.stabilization_fraction, 6),
            "decay_fraction": round(p.decay_fraction, 6),
            "stabilization_factor": p.stabilization_factor, "decay_coefficient": p.decay_coefficient}


def _apply(action: str, spec: TrainingSpec) -> TrainingSpec | None:
    """``spec`` with one tuning step of ``action``; None when the step cannot change anything."""
    p, h = spec.lr_policy, spec.hyperparameters
    if action == "decrease_lr":
        return spec.replace(hyperparameters=dataclasses.replace(h, lr=h.lr * LR_FACTOR))
    if action == "increase_decay":
        return spec.replace(lr_policy=dataclasses.replace(
            p, decay_coefficient=p.decay_coefficient * DECAY_COEFFICIENT_FACTOR))
    if action == "increase_warmup":
        if p.warmup_epochs >= h.epochs:  # the warmup already spans the whole training
            return None
        return spec.replace(lr_policy=dataclasses.replace(
            p, warmup_epochs=p.warmup_epochs + WARMUP_STEP_EPOCHS))
    if action == "increase_decay_period":
        decay = round(min(1.0, p.decay_fraction + DECAY_FRACTION_STEP), 10)
        if decay <= p.decay_fraction:
            return None
        stab = round(max(0.0, min(p.stabilization_fraction, 1.0 - decay)), 10)
        return spec.replace(lr_policy=dataclasses.replace(
            p, decay_fraction=decay, stabilization_fraction=stab))
    if action == "change_optimizer":
        other = OTHER_OPTIMIZER.get(h.optimizer, "sgd")
        if other == h.optimizer:
            return None
        return spec.replace(hyperparameters=dataclasses.replace(h, optimizer=other))
    raise ValueError(f"unknown guideline action {action!r}")


def _reason(action: str, spec: TrainingSpec, new: TrainingSpec) -> str:
    if action == "change_optimizer":
        return (f"change the optimizer ({spec.hyperparameters.optimizer} -> "
                f"{new.hyperparameters.optimizer})")
    step = {"decrease_lr": LR_FACTOR, "increase_decay": DECAY_COEFFICIENT_FACTOR,
            "increase_warmup": WARMUP_STEP_EPOCHS, "increase_decay_period": DECAY_FRACTION_STEP}
    return _REASONS[action].format(f=f"{step[action]:g}")


class Guideline:
    """Drive Figure 6.3: ``next_trial()`` -> train -> ``record(trial, metrics)`` -> repeat.

    ``next_trial()`` returns None when the guideline is finished; :meth:`summary` then says
    which trial was best and whether the baseline was reached.
    """

    def __init__(self, spec: TrainingSpec, threshold: int = 12, max_trials: int = 10) -> None:
        if max_trials < 2:
            raise ValueError("max_trials must be at least 2 (the baseline and the GreScale run)")
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self.spec = spec
        self.workers = int(spec.parallelism_degree)
        self.threshold = int(threshold)
        self.max_trials = int(max_trials)
        self.history: list[TrialRecord] = []
        self.stop_reason: str | None = None
        self._pending: Trial | None = None
        self._phase = "baseline"  # baseline, grescale, tune, confirm, done
        self._action_index = 0
        self._action_count: dict[str, int] = {}
        self._baseline: TrialRecord | None = None
        self._best: TrialRecord | None = None  # best N-worker run so far (the incumbent)

    # -- the specs of the fixed steps ---------------------------------------------------------
    def baseline_spec(self) -> TrainingSpec:
        return self.spec.replace(parallelism_degree=1, lr_policy=dataclasses.replace(
            self.spec.lr_policy, name=LRPolicyName.CONSTANT))

    def grescale_spec(self) -> TrainingSpec:
        policy = self.spec.lr_policy
        if LRPolicyName(policy.name) is not LRPolicyName.GRESCALE:
            policy = LRPolicySpec(name=LRPolicyName.GRESCALE)
        return self.spec.replace(parallelism_degree=self.workers, lr_policy=policy)

    # -- the state machine ---------------------------------------------------------------------
    @property
    def tuning(self) -> bool:
        """Whether N reaches the threshold, so that the tuning stage applies."""
        return self.workers >= self.threshold

    @property
    def done(self) -> bool:
        return self._phase == "done"

    @property
    def baseline(self) -> TrialRecord | None:
        return self._baseline

    @property
    def best(self) -> TrialRecord | None:
        return self._best

    def next_trial(self) -> Trial | None:
        """The next run to train (the same one again until it is recorded); None when done."""
        if self._pending is not None:
            return self._pending
        if self._phase == "baseline":
            trial = Trial("baseline", "1-worker baseline at the base learning rate (constant policy)",
                          self.baseline_spec())
        elif self._phase == "grescale":
            trial = Trial("grescale", f"{self.workers} workers, GreScale default parameters",
                          self.grescale_spec())
        elif self._phase == "tune":
            trial = self._next_tuning_trial()
        elif self._phase == "confirm":
            assert self._best is not None
            trial = Trial("confirm", f"re-run the best trial ({self._best.trial.name}) to confirm",
                          self._best.trial.spec)
        else:
            trial = None
        self._pending = trial
        return trial

    def _next_tuning_trial(self) -> Trial | None:
        assert self._best is not None
        if len(self.history) >= self.max_trials - 1:
            return self._finish_tuning("trial budget spent (max_trials)")
        while self._action_index < len(ACTIONS):
            action = ACTIONS[self._action_index]
            if action == "change_optimizer" and self._action_count.get(action):
                self._action_index += 1
                continue
            new = _apply(action, self._best.trial.spec)
            if new is None:
                self._action_index += 1
                continue
            n = self._action_count.get(action, 0) + 1
            return Trial(f"{action.replace('_', '-')}-{n}", _reason(action, self._best.trial.spec, new),
                         new, action=action)
        return self._finish_tuning("all tuning actions tried without reaching the baseline")

    def _finish_tuning(self, why: str) -> Trial | None:
        self.stop_reason = why
        self._phase = "confirm"
        if len(self.history) >= self.max_trials:
            self._phase = "done"
            return None
        self._pending = None
        return self.next_trial()

    def record(self, trial: Trial, metrics: Mapping[str, Any] | None,
               run_dir: str | None = None) -> TrialRecord:
        """Record the test metrics of ``trial`` (None for a run that produced none)."""
        if self._pending is None or trial is not self._pending:
            raise ValueError(f"trial {trial.name!r} is not the one the guideline is waiting for")
        self._pending = None
        score = score_of(metrics)
        base = self._baseline.score if self._baseline is not None else None
        reached = base is not None and trial.name != "baseline" and score >= base
        improved = self._best is None or score > self._best.score
        rec = TrialRecord(trial, dict(metrics) if metrics is not None else None, score,
                          improved=improved and trial.action is not None,
                          reached_baseline=reached, run_dir=run_dir)
        self.history.append(rec)

        if self._phase == "baseline":
            self._baseline = rec
            self._phase = "grescale"
        elif self._phase == "grescale":
            self._best = rec
            if not self.tuning:
                self.stop_reason = (f"{self.workers} workers < threshold {self.threshold}: "
                                    f"GreScale defaults, no tuning")
                self._phase = "done"
            elif reached:
                self._finish_after_reaching()
            else:
                self._phase = "tune"
        elif self._phase == "tune":
            action = trial.action
            assert action is not None
            self._action_count[action] = self._action_count.get(action, 0) + 1
            if rec.improved:
                self._best = rec  # repeat the same action from the improved spec
            else:
                self._action_index += 1  # no improvement: move on to the next action
            if reached:
                self._finish_after_reaching()
            elif action == "change_optimizer":
                self._action_index = max(self._action_index, ACTIONS.index(action) + 1)
        elif self._phase == "confirm":
            self._phase = "done"
        return rec

    def _finish_after_reaching(self) -> None:
        self.stop_reason = "baseline reached"
        self._phase = "confirm" if len(self.history) < self.max_trials else "done"

    # -- results -------------------------------------------------------------------------------
    @property
    def baseline_reached(self) -> bool:
        return self._best is not None and self._best.reached_baseline

    @property
    def confirmation(self) -> TrialRecord | None:
        return next((r for r in self.history if r.trial.name == "confirm"), None)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready account: settings, every trial, the best one, the stop reason."""
        confirm = self.confirmation
        return {
            "workers": self.workers, "threshold": self.threshold, "max_trials": self.max_trials,
            "tuning": self.tuning, "done": self.done, "stop_reason": self.stop_reason,
            "score_keys": list(SCORE_KEYS),
            "baseline": self._baseline.to_dict() if self._baseline else None,
            "best": self._best.to_dict() if self._best else None,
            "baseline_reached": self.baseline_reached,
            "confirmed": confirm.reached_baseline if confirm is not None else None,
            "history": [r.to_dict() for r in self.history],
        }
