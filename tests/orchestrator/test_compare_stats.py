"""compare's statistics against values worked out by hand, and its messages."""

from __future__ import annotations

import math

import pytest

from autocnnp.errors import AutocnnpError
from autocnnp.orchestrator.compare import Side, compare_metric, load_side, svg_plot, table

M = "mean_dice_foreground"


def _runs(values):
    return [{M: v} for v in values]


def test_repeats_without_cases_use_the_training_noise_only():
    a = Side("a", "repeats", _runs([0.90, 0.94, 0.98]))
    b = Side("b", "repeats", _runs([0.80, 0.84, 0.88]))
    r = compare_metric(a, b, M)
    # equal sd 0.04 and n 3: variance 2 * 0.04^2 / 3, Welch df = 2 (n - 1) = 4
    half = 2.7764451051977987 * math.sqrt(2 * 0.04 ** 2 / 3)
    assert r.difference == pytest.approx(0.10) and r.df == pytest.approx(4)
    assert (r.ci_low, r.ci_high) == (pytest.approx(0.10 - half), pytest.approx(0.10 + half))
    assert r.significant and r.training_sd_a == pytest.approx(0.04)
    assert not compare_metric(a, Side("c", "repeats", _runs([0.88, 0.93, 0.97])), M).significant


def test_cv_groups_are_paired_over_cases():
    cases_a = {"c1": {M: 0.9}, "c2": {M: 0.8}, "c3": {M: 0.7}}
    cases_b = {"c1": {M: 0.8}, "c2": {M: 0.6}, "c3": {M: 0.4}}  # deltas 0.1, 0.2, 0.3
    a = Side("a", "folds", _runs([0.8, 0.8, 0.8]), [cases_a])
    b = Side("b", "folds", _runs([0.6, 0.6, 0.6]), [cases_b])
    r = compare_metric(a, b, M)
    half = 4.302652729749464 * 0.1 / math.sqrt(3)  # t(0.975, 2) * sd(deltas) / sqrt(n)
    assert r.paired and r.cases == 3 and r.df == pytest.approx(2)
    assert (r.ci_low, r.ci_high) == (pytest.approx(0.2 - half), pytest.approx(0.2 + half))
    assert r.wilcoxon_p == pytest.approx(0.25)  # exact: 3 positive differences, 2 / 2^3
    assert r.training_sd_a is None and r.notes == []


def test_one_run_per_side_is_warned_about():
    a = Side("a", "run", _runs([0.9]), [{"c1": {M: 0.9}, "c2": {M: 0.8}}])
    b = Side("b", "run", _runs([0.8]), [{"c1": {M: 0.8}, "c2": {M: 0.75}}])
    r = compare_metric(a, b, M)
    assert r.notes[0] == ("one run per method cannot separate the methods from training noise; "
                          "the measured run-to-run sd here is unknown: neither side has repeated "
                          "runs (set <reproducibility><property name=\"repeats\">3</property> "
                          "or more)")
    c = Side("c", "repeats", _runs([0.80, 0.84, 0.88]), [{"c1": {M: 0.8}, "c2": {M: 0.75}}] * 3)
    r = compare_metric(a, c, M)
    assert r.notes[:2] == [
        "one run per method cannot separate the methods from training noise; the measured "
        "run-to-run sd here is 0.0400",
        "a has one run: its training noise is taken to be the other side's (sd 0.0400)"]
    text = table(a, c, [r])
    assert "note: one run per method cannot separate" in text
    assert svg_plot(a, c, [r]).startswith('<svg xmlns="http://www.w3.org/2000/svg"')


def test_load_side_names_what_is_missing(tmp_path):
    with pytest.raises(AutocnnpError) as err:
        load_side(tmp_path)
    assert err.value.message == f"{tmp_path}: neither a run directory nor a group of runs"
    assert err.value.remedy == "give two run directories, repeat groups or CV groups"
