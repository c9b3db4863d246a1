"""Case-level splits: the pure drawing of splits and folds, and the <split> element's errors."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from autocnnp.engine import splits as S
from autocnnp.engine.validate import load_spec
from autocnnp.errors import ConfigError

CASES = [f"case_{i:02d}" for i in range(20)]
STRATA = {case: ("A" if i < 14 else "B") for i, case in enumerate(CASES)}


def test_fraction_split_is_disjoint_covering_and_sized():
    split = S.fraction_split(CASES, valid=0.1, test=0.2, seed=3)
    assert [len(split[n]) for n in ("train", "valid", "test")] == [14, 2, 4]
    assert sorted(split["train"] + split["valid"] + split["test"]) == CASES
    assert S.overlaps(split) == {}
    assert split == S.fraction_split(list(reversed(CASES)), valid=0.1, test=0.2, seed=3)
    assert split != S.fraction_split(CASES, valid=0.1, test=0.2, seed=4)


def test_folds_are_disjoint_cover_and_balanced():
    folds = S.make_folds(CASES[:11], 3, seed=0)
    assert sorted(c for f in folds for c in f) == CASES[:11]
    assert sorted(len(f) for f in folds) == [3, 4, 4]
    assert S.overlaps({str(i): f for i, f in enumerate(folds)}) == {}
    one = S.fold_split(folds, 1, valid=0.25, seed=0)
    assert one["test"] == folds[1] and len(one["valid"]) == 2
    assert sorted(one["train"] + one["valid"]) == sorted(folds[0] + folds[2])


def test_stratified_folds_hold_the_strata_in_proportion():
    folds = S.make_folds(CASES, 2, seed=5, strata=STRATA)
    assert [Counter(STRATA[c] for c in f) for f in folds] == [Counter(A=7, B=3)] * 2
    split = S.fraction_split(CASES, valid=0.0, test=0.5, seed=5, strata=STRATA)
    assert Counter(STRATA[c] for c in split["test"]) == Counter(A=7, B=3)


def test_too_few_cases_are_refused():
    with pytest.raises(S.SplitError, match=r"^2 case\(s\) cannot fill 3 folds$"):
        S.make_folds(CASES[:2], 3, seed=0)
    with pytest.raises(S.SplitError, match=r"^2 case\(s\) cannot be split into test 0.2, valid "
                                           r"0.2 and a non-empty train split$"):
        S.fraction_split(CASES[:2], valid=0.2, test=0.2, seed=0)


DATA = """<system_config>
  <task name="imaging_segmentation">
    <CNN_archi><name>unet</name></CNN_archi>
    <data format="msd">
      {body}
    </data>
    <hyperparameters><property name="lr">1e-3</property></hyperparameters>
  </task>
</system_config>
"""


def _problems(tmp_path: Path, body: str) -> list[str]:
    (tmp_path / "cases").mkdir(exist_ok=True)
    config = tmp_path / "c.xml"
    config.write_text(DATA.format(body=body))
    with pytest.raises(ConfigError) as err:
        load_spec(config)
    return [str(p).replace(str(tmp_path) + "/", "") for p in err.value.problems]


def test_split_errors_name_file_and_line(tmp_path):
    assert _problems(tmp_path, '<cases><path>cases</path></cases>\n      '
                               '<split folds="1" test="0.3" seed="-1" case_id="(x"/>') == [
        "c.xml:6: <split>: folds and test exclude each other: with folds, each held-out fold is "
        "the test split of its training",
        'c.xml:6: <split seed="-1">: must be at least 0, got -1',
        'c.xml:6: <split folds="1">: must be at least 2, got 1',
        'c.xml:6: <split case_id="(x">: not a regular expression: missing ), unterminated '
        'subpattern at position 0',
    ]
    assert _problems(tmp_path, '<train><path>cases</path></train><cases><path>cases</path>'
                               '</cases>\n      <split valid="0.5" test="0.5" file="no.json"/>') == [
        "c.xml:5: <train>: <train> and <split> exclude each other: <split> cuts the <cases> "
        "folder into train, valid and test itself",
        'c.xml:6: <split file="no.json">: no such splits file (resolved to no.json)',
        "c.xml:6: <split>: valid (0.5) + test (0.5) must be below 1: the rest of the cases is "
        "the train split",
    ]
    assert _problems(tmp_path, '<split folds="3" test="0.2"/>') == [
        "c.xml:5: <split>: <split> needs <cases><path>: the folder holding every case (MSD "
        "imagesTr/labelsTr, NIfTI volumes or 2D pairs)",
        "c.xml:5: <split>: folds and test exclude each other: with folds, each held-out fold is "
        "the test split of its training",
    ]
    assert _problems(tmp_path, '<cases><path>cases</path></cases>') == [
        'c.xml:5: <cases>: <cases> needs a <split> saying how to cut them (<split test="0.2"/> '
        'or <split folds="5"/>)']


def test_a_valid_split_config(tmp_path):
    (tmp_path / "cases").mkdir()
    config = tmp_path / "c.xml"
    config.write_text(DATA.format(body='<cases><path>cases</path></cases>'
                                       '<split folds="5" valid="0.1" seed="2" stratify="site"/>'))
    spec = load_spec(config)
    assert spec.data.train == tmp_path / "cases" and spec.data.test is None
    split = spec.data.split
    assert (split.folds, split.valid, split.test, split.seed, split.stratify) == (5, 0.1, 0.0, 2, "site")
