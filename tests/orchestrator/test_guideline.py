"""The GreScale guideline (thesis Figure 6.3) as a state machine, driven by synthetic metrics."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from autocnnp.orchestrator.guideline import ACTIONS, Guideline, score_of
from autocnnp.engine.spec import (ArchitectureSpec, DataSpec, Hyperparameters, LRPolicyName,
                                  LRPolicySpec, TrainingSpec)


def make_spec(workers: int = 14, optimizer: str = "sgd", epochs: int = 20,
              policy: LRPolicySpec | None = None) -> TrainingSpec:
    return TrainingSpec(source=Path("cfg.xml"), task="imaging_segmentation",
                        parallelism_degree=workers, architecture=ArchitectureSpec(),
                        data=DataSpec(train=Path("data/train")),
                        hyperparameters=Hyperparameters(lr=1e-3, optimizer=optimizer, end_epoch=epochs),
                        lr_policy=policy or LRPolicySpec(name=LRPolicyName.LINEAR_SCALING))


def m(dice: float, acc: float = 0.5, iou: float = 0.5) -> dict:
    return {"means": {"mean_dice_foreground": dice, "mean_accuracy": acc, "mean_iou": iou,
                      "pixel_accuracy": 0.99}}


def drive(g: Guideline, scores: list) -> list[str]:
    """Feed ``scores`` (dice values or metric dicts) in order; return the trial names run."""
    names = []
    for s in scores:
        trial = g.next_trial()
        assert trial is not None, f"guideline stopped early after {names}"
        names.append(trial.name)
        g.record(trial, s if isinstance(s, dict) or s is None else m(s))
    return names


def test_baseline_then_grescale_specs():
    spec = make_spec(workers=14)
    g = Guideline(spec)
    base = g.next_trial()
    assert base.name == "baseline"
    assert base.spec.parallelism_degree == 1
    assert base.spec.lr_policy.name is LRPolicyName.CONSTANT
    assert base.spec.hyperparameters.lr == 1e-3
    assert g.next_trial() is base  # the same trial until it is recorded
    g.record(base, m(0.8))
    gs = g.next_trial()
    assert gs.name == "grescale"
    assert gs.spec.parallelism_degree == 14
    assert gs.spec.lr_policy == LRPolicySpec(name=LRPolicyName.GRESCALE)  # GreScale defaults
    assert gs.spec.hyperparameters == spec.hyperparameters


def test_existing_grescale_parameters_are_kept():
    policy = LRPolicySpec(name=LRPolicyName.GRESCALE, warmup_epochs=3, decay_coefficient=0.3)
    g = Guideline(make_spec(policy=policy))
    g.record(g.next_trial(), m(0.8))
    assert g.next_trial().spec.lr_policy == policy


def test_below_threshold_skips_tuning():
    g = Guideline(make_spec(workers=8), threshold=12)
    assert drive(g, [0.8, 0.5]) == ["baseline", "grescale"]
    assert g.next_trial() is None and g.done
    s = g.summary()
    assert s["tuning"] is False and s["best"]["name"] == "grescale"
    assert s["baseline_reached"] is False and "threshold" in s["stop_reason"]


def test_actions_in_order_each_tried_once_without_improvement():
    g = Guideline(make_spec(workers=12, optimizer="sgd"), threshold=12, max_trials=20)
    names = drive(g, [0.8, 0.5, 0.4, 0.4, 0.4, 0.4, 0.4, 0.45])
    assert names == ["baseline", "grescale", "decrease-lr-1", "increase-decay-1",
                     "increase-warmup-1", "increase-decay-period-1", "change-optimizer-1", "confirm"]
    assert g.next_trial() is None
    s = g.summary()
    assert s["best"]["name"] == "grescale" and s["baseline_reached"] is False
    assert s["confirmed"] is False and "all tuning actions" in s["stop_reason"]
    # each step was applied to the best spec (the GreScale one), one knob at a time
    by = {r.trial.name: r.trial.spec for r in g.history}
    gs = by["grescale"]
    assert by["decrease-lr-1"].hyperparameters.lr == pytest.approx(0.5e-3)
    assert by["increase-decay-1"].lr_policy.decay_coefficient == pytest.approx(0.2)
    assert by["increase-decay-1"].hyperparameters.lr == gs.hyperparameters.lr
    assert by["increase-warmup-1"].lr_policy.warmup_epochs == 7
    dp = by["increase-decay-period-1"].lr_policy
    assert dp.decay_fraction == pytest.approx(3 / 7 + 0.1)
    assert dp.stabilization_fraction + dp.decay_fraction <= 1 + 1e-9
    assert by["change-optimizer-1"].hyperparameters.optimizer == "adam"
    assert by["confirm"] is gs


def test_repeat_while_improving_then_move_on():
    g = Guideline(make_spec(optimizer="adam"), max_trials=20)
    names = drive(g, [0.9, 0.5, 0.6, 0.7, 0.65, 0.75, 0.72])
    assert names == ["baseline", "grescale", "decrease-lr-1", "decrease-lr-2", "decrease-lr-3",
                     "increase-decay-1", "increase-decay-2"]
    by = {r.trial.name: r.trial.spec for r in g.history}
    # lr halves twice (improving), the third halving is worse, so decay tuning starts from lr/4
    assert by["decrease-lr-3"].hyperparameters.lr == pytest.approx(1e-3 / 8)
    assert by["increase-decay-1"].hyperparameters.lr == pytest.approx(1e-3 / 4)
    assert by["increase-decay-2"].lr_policy.decay_coefficient == pytest.approx(0.4)
    assert g.next_trial().name == "increase-warmup-1"
    assert g.next_trial().spec.lr_policy.decay_coefficient == pytest.approx(0.2)
    assert g.best.trial.name == "increase-decay-1"
    assert [r.improved for r in g.history[2:]] == [True, True, False, True, False]


def test_stops_at_baseline_and_confirms():
    """The thesis's 14-GPU example: lr down, down, worse, then decay up reaches the baseline."""
    g = Guideline(make_spec(workers=14), max_trials=20)
    names = drive(g, [0.8, 0.5, 0.6, 0.7, 0.65, m(0.8, 0.6), m(0.81)])
    assert names == ["baseline", "grescale", "decrease-lr-1", "decrease-lr-2", "decrease-lr-3",
                     "increase-decay-1", "confirm"]
    assert g.next_trial() is None and g.done
    s = g.summary()
    assert s["baseline_reached"] is True and s["confirmed"] is True
    assert s["best"]["name"] == "increase-decay-1" and s["stop_reason"] == "baseline reached"
    assert g.history[-1].trial.spec is g.history[-2].trial.spec


def test_grescale_reaching_baseline_goes_straight_to_confirmation():
    g = Guideline(make_spec(workers=16))
    assert drive(g, [0.8, m(0.8, 0.5, 0.6), 0.79]) == ["baseline", "grescale", "confirm"]
    assert g.next_trial() is None
    assert g.summary()["baseline_reached"] is True and g.summary()["confirmed"] is False


def test_lexicographic_comparison():
    assert score_of(m(0.8, 0.1, 0.1)) > score_of(m(0.79, 0.9, 0.9))
    assert score_of(m(0.8, 0.6, 0.1)) > score_of(m(0.8, 0.5, 0.9))
    assert score_of(m(0.8, 0.5, 0.6)) > score_of(m(0.8, 0.5, 0.5))
    assert score_of(None) == (-math.inf,) * 3
    assert score_of(m(float("nan"))) < score_of(m(0.0))
    # ties on dice are broken by mean accuracy when deciding to repeat an action
    g = Guideline(make_spec(), max_trials=20)
    names = drive(g, [m(0.9), m(0.5, 0.5), m(0.5, 0.6), m(0.5, 0.6)])
    assert names[2:] == ["decrease-lr-1", "decrease-lr-2"]
    assert g.next_trial().name == "increase-decay-1"


def test_failed_run_counts_as_worst():
    g = Guideline(make_spec(), max_trials=20)
    drive(g, [0.9, 0.5, None])
    assert g.history[-1].improved is False
    assert g.next_trial().name == "increase-decay-1"


def test_max_trials_keeps_a_slot_for_confirmation():
    g = Guideline(make_spec(), max_trials=5)
    names = drive(g, [0.9, 0.5, 0.6, 0.7, 0.75])
    assert names == ["baseline", "grescale", "decrease-lr-1", "decrease-lr-2", "confirm"]
    assert g.next_trial() is None
    s = g.summary()
    assert len(s["history"]) == 5 and "max_trials" in s["stop_reason"]
    assert s["best"]["name"] == "decrease-lr-2"


def test_max_trials_two_stops_after_grescale():
    g = Guideline(make_spec(), max_trials=2)
    assert drive(g, [0.9, 0.5]) == ["baseline", "grescale"]
    assert g.next_trial() is None


def test_impossible_steps_are_skipped_and_optimizer_changes_once():
    # warmup already covers all 4 epochs; decay fraction already 1
    policy = LRPolicySpec(name=LRPolicyName.GRESCALE, warmup_epochs=5, stabilization_fraction=0.0,
                          decay_fraction=1.0)
    g = Guideline(make_spec(epochs=4, policy=policy), max_trials=20)
    names = drive(g, [0.9, 0.5, 0.4, 0.4, 0.6])
    assert names == ["baseline", "grescale", "decrease-lr-1", "increase-decay-1", "change-optimizer-1"]
    # the optimizer change improved, but it is applied only once: confirmation comes next
    assert g.next_trial().name == "confirm"


def test_record_rejects_a_stale_trial():
    g = Guideline(make_spec())
    t = g.next_trial()
    g.record(t, m(0.5))
    with pytest.raises(ValueError):
        g.record(t, m(0.5))


def test_actions_order_is_the_thesis_order():
    assert ACTIONS == ("decrease_lr", "increase_decay", "increase_warmup", "increase_decay_period",
                       "change_optimizer")


def test_summary_is_json_ready():
    import json

    g = Guideline(make_spec(), max_trials=4)
    drive(g, [0.9, None, 0.5, 0.6])
    json.dumps(g.summary(), allow_nan=False)
