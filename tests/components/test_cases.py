"""Cases: listing a folder of cases, reading only some cases, and metrics per case."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from autocnnp.components.datasets import SampleRef, case_of, list_cases, list_split
from autocnnp.components.segeval import (SegEvaluator, confusion_matrix, per_case_results,
                                         write_per_case_csv)
from autocnnp.errors import DataError


def test_msd_cases_and_their_strata(msd_cases: Path):
    ids, strata = list_cases(msd_cases, stratify="site")
    assert ids == [f"brain_{k:03d}" for k in range(9)]
    assert [strata[c] for c in ids] == list("ABABABABA")
    assert sorted(p.name for p in (msd_cases / "imagesTs").iterdir()) == [
        "brain_009.nii.gz", "brain_010.nii.gz"]
    with pytest.raises(DataError) as err:
        list_cases(msd_cases, stratify="scanner")
    assert err.value.message == (f"{msd_cases / 'dataset.json'}: no 'scanner' for case(s) "
                                 "brain_000, brain_001, brain_002, brain_003, brain_004 ...")


def test_listing_some_cases_keeps_whole_volumes(msd_cases: Path):
    samples = list_split(msd_cases, num_classes=3, cases=["brain_002", "brain_007"])
    assert len(samples) == 16
    assert sorted(set(samples.case_ids)) == ["brain_002", "brain_007"]
    with pytest.raises(DataError) as err:
        list_split(msd_cases, num_classes=3, split="test", cases=["brain_002", "brain_077"])
    assert err.value.message == (f"{msd_cases}: the test split names case(s) brain_077 that "
                                 "this folder does not hold")


def test_case_id_rule_for_2d_files(tmp_path: Path):
    assert case_of(SampleRef(Path("p07_s012.npy"), Path("m")), r"^(p\d+)_") == "p07"
    assert case_of(SampleRef(Path("p07_s012.npy"), Path("m"))) == "p07_s012"
    assert case_of(SampleRef(Path("vol.nii.gz"), Path("m"), 3), r"^(p\d+)_") == "vol"
    with pytest.raises(DataError) as err:
        case_of(SampleRef(Path("x.npy"), Path("m")), r"^(p\d+)_")
    assert err.value.message == "x.npy: the case_id rule '^(p\\\\d+)_' does not match 'x'"
    for kind in ("images", "masks"):
        (tmp_path / kind).mkdir()
        for name in ("p1_a", "p1_b", "p2_a", "p3_a"):
            np.save(tmp_path / kind / f"{name}.npy", np.zeros((4, 4), np.uint8))
    assert list_cases(tmp_path, case_id=r"^(p\d+)_") == (["p1", "p2", "p3"], None)
    assert len(list_split(tmp_path, num_classes=2, cases=["p1"], case_id=r"^(p\d+)_")) == 2


def test_per_case_metrics_equal_evaluating_each_case_alone(tmp_path: Path):
    rng = np.random.default_rng(0)
    gts = [rng.integers(0, 3, (16, 16)) for _ in range(5)]
    preds = [np.where(rng.random((16, 16)) < 0.7, g, rng.integers(0, 3, (16, 16))) for g in gts]
    cases = ["a", "a", "b", "b", "b"]
    whole = SegEvaluator(3, hd95=True)
    for g, p in zip(gts, preds):
        whole.add(g, p)
    results = per_case_results(cases, [confusion_matrix(g, p, 3) for g, p in zip(gts, preds)],
                               whole.item_hd, 3, hd95=True, class_names={0: "bg", 1: "x", 2: "y"})
    for case, items in (("a", [0, 1]), ("b", [2, 3, 4])):
        alone = SegEvaluator(3, hd95=True)
        for i in items:
            alone.add(gts[i], preds[i])
        expected = alone.result()
        assert results[case].means == pytest.approx(expected.means, nan_ok=True)
        assert results[case].items == len(items)
    write_per_case_csv(results, tmp_path / "per_case.csv", hd95=True)
    rows = list(csv.DictReader(open(tmp_path / "per_case.csv")))
    assert [r["case"] for r in rows] == ["a", "b"] and rows[1]["slices"] == "3"
    assert float(rows[0]["dice_y"]) == pytest.approx(results["a"].per_class[2]["dice"])
    assert float(rows[1]["hd95_x"]) == pytest.approx(results["b"].per_class[1]["hd95"])
