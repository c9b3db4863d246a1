"""The case-level split of one config: ``<split>`` turned into the case lists of a run.

* :func:`draw_split` lists the folder's cases and draws the record written as
  ``RUN_DIR/splits.json`` (train/valid/test case ids, or k folds); ``<split file=...>`` reuses an
  earlier record. The record travels in ``spec.json`` too, so ``--resume`` uses the same split.
* :func:`apply_split` and :func:`with_cases` give the spec that reads those cases;
  :func:`fold_cases` the cases of one fold. What one training's ``splits.json`` holds is
  :func:`autocnnp.engine.rundir.split_record`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from autocnnp.engine import rundir
from autocnnp.engine import splits as S
from autocnnp.engine.spec import TrainingSpec
from autocnnp.errors import DataError


def _split_error(spec: TrainingSpec, exc: Exception) -> DataError:
    return DataError(f"{spec.source}:{spec.data.split.line}: <split>: {exc}")


def _read_split_file(spec: TrainingSpec, ids: list[str]) -> dict[str, Any]:
    split = spec.data.split
    record = rundir.read_json(split.file)
    listed = set(record.get("cases") or [])
    missing = sorted(listed - set(ids))
    if missing:
        raise DataError(f"{split.file}: case(s) {', '.join(missing[:5])} are not in "
                        f"{spec.data.train}", remedy="reuse a splits.json drawn from this "
                                                      "folder of cases")
    if bool(record.get("folds")) != bool(split.folds):
        raise _split_error(spec, f"{split.file} holds a "
                                 f"{'k-fold' if record.get('folds') else 'fraction'} split; the "
                                 f"config asks for {'folds' if split.folds else 'fractions'}")
    return record


def draw_split(spec: TrainingSpec) -> dict[str, Any]:
    """The ``splits.json`` record of ``spec``'s ``<split>``: every case id, and either
    ``splits`` (train/valid/test case ids) or ``folds`` (k lists of case ids)."""
    from autocnnp.components.datasets import list_cases

    split = spec.data.split
    assert split is not None
    ids, strata = list_cases(spec.data.train, format=spec.data.format, case_id=split.case_id,
                             stratify=split.stratify)
    if split.file is not None:
        return _read_split_file(spec, ids)
    record: dict[str, Any] = {
        "version": S.SPLITS_VERSION, "cases_folder": str(spec.data.train),
        "format": spec.data.format, "seed": split.seed, "stratify": split.stratify,
        "case_id": split.case_id, "valid": split.valid, "cases": ids}
    if strata:
        record["strata"] = strata
    try:
        if split.folds:
            record["folds"] = S.make_folds(ids, split.folds, seed=split.seed, strata=strata)
        else:
            record["test"] = split.test
            record["splits"] = S.fraction_split(ids, valid=split.valid, test=split.test,
                                                seed=split.seed, strata=strata)
    except S.SplitError as exc:
        raise _split_error(spec, exc) from None
    return record


def apply_split(spec: TrainingSpec, record: dict[str, Any]) -> TrainingSpec:
    """``spec`` with the split of ``record`` (:func:`draw_split`): a reused file's seed,
    stratification, case rule and valid fraction replace the config's (so that the folds'
    validation cases are the file's too), and a fraction split's cases are set."""
    split = spec.data.split
    if split is not None and split.file is not None:
        split = dataclasses.replace(split, seed=int(record.get("seed") or 0),
                                    stratify=record.get("stratify"),
                                    case_id=record.get("case_id"),
                                    valid=float(record.get("valid") or 0.0))
        spec = spec.replace(data=dataclasses.replace(spec.data, split=split))
    if record.get("splits"):
        spec = with_cases(spec, record["splits"])
    return spec


def with_cases(spec: TrainingSpec, cases: dict[str, list[str]], fold: int | None = None
               ) -> TrainingSpec:
    """``spec`` reading the cases of ``cases`` (train/valid/test) from the folder of cases;
    a split with no cases is left out (no validation split when ``valid`` is 0)."""
    folder = spec.data.train
    data = dataclasses.replace(
        spec.data, valid=folder if cases.get("valid") else None,
        test=folder if cases.get("test") else None,
        cases={name: tuple(cases[name]) for name in S.SPLIT_NAMES if cases.get(name)},
        fold=fold)
    return spec.replace(data=data)


def fold_cases(spec: TrainingSpec, record: dict[str, Any], fold: int) -> dict[str, list[str]]:
    """The train/valid/test cases of fold ``fold`` (1-based) of a k-fold record."""
    split = spec.data.split
    try:
        return S.fold_split(record["folds"], fold - 1, valid=split.valid, seed=split.seed,
                            strata=record.get("strata"))
    except S.SplitError as exc:
        raise _split_error(spec, exc) from None
