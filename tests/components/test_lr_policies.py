"""Learning-rate policies: exact values of every stage, and the Keras callback on a real fit."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from autocnnp.components.lr_policies import LRSchedule, grescale_stages, lr_at, target_lr
from autocnnp.engine.spec import LRPolicyName, LRPolicySpec

BASE = 1e-3


def policy(name: str, **kw: float) -> LRPolicySpec:
    return LRPolicySpec(name=LRPolicyName(name), **kw)


def test_module_does_not_import_tensorflow() -> None:
    code = ("import sys, autocnnp.components.lr_policies; "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("epoch", [0.0, 0.5, 3.0, 29.99])
def test_constant_is_the_base_lr_for_any_number_of_workers(epoch: float) -> None:
    assert lr_at(epoch, policy("constant"), BASE, 8, 30) == BASE


@pytest.mark.parametrize("workers", [1, 2, 14])
def test_linear_scaling_multiplies_by_workers(workers: int) -> None:
    assert lr_at(7.3, policy("linear_scaling"), BASE, workers, 30) == pytest.approx(BASE * workers)
    assert target_lr(policy("linear_scaling"), BASE, workers) == pytest.approx(BASE * workers)


@pytest.mark.parametrize("epoch, expected", [
    (0.0, 0.1),             # starts at the base lr
    (1.0, 0.1 + 0.3 / 5),   # linear ramp, per step
    (2.5, 0.25),            # half way: half of the distance base -> target
    (4.999, 0.1 + 0.3 * 4.999 / 5),
    (5.0, 0.4),             # target = base * workers reached after warmup_epochs
    (17.0, 0.4),
])
def test_warmup_ramps_from_base_to_target(epoch: float, expected: float) -> None:
    assert lr_at(epoch, policy("warmup", warmup_epochs=5.0), 0.1, 4, 30) == pytest.approx(expected)


def test_warmup_of_zero_epochs_is_linear_scaling() -> None:
    assert lr_at(0.0, policy("warmup", warmup_epochs=0.0), 0.1, 4, 30) == pytest.approx(0.4)


def test_grescale_stage_boundaries_use_the_thesis_fractions() -> None:
    # 40 epochs: 5 warmup, remaining 35 = 20 stabilization (4/7) + 15 decay (3/7)
    assert grescale_stages(policy("grescale"), 40) == pytest.approx((5.0, 25.0, 40.0))


@pytest.mark.parametrize("epoch, expected", [
    (0.0, 0.1),                                   # warmup from the base lr
    (2.5, 0.25),                                  # ... to t = 0.1 * 4 = 0.4
    (5.0, 0.2),                                   # stabilization at t * 0.5
    (24.999, 0.2),
    (25.0, 0.2),                                  # decay starts at the stabilization lr
    (30.0, 0.2 * math.exp(-0.2 * 5)),             # exp(-k * epochs into the decay)
    (40.0, 0.2 * math.exp(-0.2 * 15)),            # end of training
    (45.0, 0.2 * math.exp(-0.2 * 15)),            # clamped after the decay stage
])
def test_grescale_values(epoch: float, expected: float) -> None:
    p = policy("grescale", warmup_epochs=5.0, stabilization_factor=0.5, decay_coefficient=0.2)
    assert lr_at(epoch, p, 0.1, 4, 40) == pytest.approx(expected, rel=1e-12)


def test_grescale_larger_decay_coefficient_means_lower_final_lr() -> None:
    # the guideline's "increase the decay coefficient" must lower the late learning rate
    low = lr_at(40.0, policy("grescale", decay_coefficient=0.1), BASE, 4, 40)
    high = lr_at(40.0, policy("grescale", decay_coefficient=0.3), BASE, 4, 40)
    assert high < low


def test_grescale_fractions_below_one_hold_the_last_value() -> None:
    p = policy("grescale", warmup_epochs=0.0, stabilization_fraction=0.5, decay_fraction=0.25,
               decay_coefficient=1.0)
    assert grescale_stages(p, 40) == pytest.approx((0.0, 20.0, 30.0))
    assert lr_at(35.0, p, 0.1, 1, 40) == pytest.approx(0.1 * math.exp(-10.0))


def test_grescale_warmup_longer_than_training_is_all_warmup() -> None:
    p = policy("grescale", warmup_epochs=10.0)
    assert grescale_stages(p, 4) == (4.0, 4.0, 4.0)
    assert lr_at(2.0, p, 0.1, 3, 4) == pytest.approx(0.1 + 0.2 * 2 / 4)


def test_schedule_counts_from_the_start_epoch() -> None:
    s = LRSchedule(policy("warmup", warmup_epochs=4.0), 0.1, 3, start_epoch=10, end_epoch=20)
    assert s(10.0) == pytest.approx(0.1)
    assert s(12.0) == pytest.approx(0.2)
    assert s(14.0) == pytest.approx(0.3)
    assert s.total_epochs == 10
    assert s.target == pytest.approx(0.3)


@pytest.mark.slow
def test_callback_sets_the_lr_before_every_step_and_logs_it() -> None:
    import numpy as np
    import tensorflow as tf

    from autocnnp.components.lr_policies import make_lr_callback

    schedule = LRSchedule(policy("warmup", warmup_epochs=2.0), 0.01, 4, 0, 3)
    seen: list[float] = []

    class Record(tf.keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):  # runs after the schedule's hook
            seen.append(float(tf.keras.backend.get_value(self.model.optimizer.lr)))

    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
    model.compile(tf.keras.optimizers.legacy.SGD(1.0), loss="mse")
    x = np.zeros((8, 2), "float32")
    history = model.fit(x, x[:, :1], batch_size=2, epochs=3, verbose=0,
                        callbacks=[make_lr_callback(schedule), Record()])
    # 4 steps per epoch: epoch + batch / 4 -> 0, .25, .5, ..., 2.75
    expected = [schedule(e + b / 4) for e in range(3) for b in range(4)]
    assert seen == pytest.approx(expected, rel=1e-6)
    assert expected[0] == pytest.approx(0.01) and expected[-1] == pytest.approx(0.04)
    assert history.history["lr"] == pytest.approx([schedule(0.75), schedule(1.75),
                                                   schedule(2.75)], rel=1e-6)
