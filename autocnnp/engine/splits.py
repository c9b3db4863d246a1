"""Case-level splits: which case goes to train, valid and test, or to which of k folds.

Pure: the functions take case ids (and, to stratify, one label per case) and return lists of
case ids. Reading the cases from a folder is :func:`autocnnp.components.datasets.list_cases`;
writing ``splits.json`` is the orchestrator's.

The order. Cases are sorted, then shuffled with ``numpy.random.default_rng(seed)``; to
stratify, each stratum is shuffled on its own and its cases are spread evenly over ``[0, 1)``
(case ``i`` of a stratum of ``n`` at ``(i + u) / n``, ``u`` one draw per stratum), and the
cases are sorted by that position. Consecutive cases of the order therefore hold the strata in
their proportions, and every cut of the order is stratified:

* fractions: the first ``round(n * test)`` cases are the test split, the next
  ``round(n * valid)`` the validation split, the rest train (a requested split of a non-zero
  fraction gets at least one case);
* k folds: case ``p`` of the order goes to fold ``p % k``; inside fold ``i`` the held-out fold
  is the test split and, with ``valid``, the first ``round(m * valid)`` of the other cases (in
  the same order) are the validation split.

A case is one unit: all slices of a volume (or all files with the same case id) follow it, so
no case is ever on two sides of a split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

SPLITS_VERSION = 1
SPLIT_NAMES = ("train", "valid", "test")


class SplitError(ValueError):
    """Cases that cannot be split as asked (too few cases for the folds or the fractions)."""


def case_order(cases: Sequence[str], seed: int,
               strata: Mapping[str, str] | None = None) -> list[str]:
    """The shuffled (and, with ``strata``, stratified) order of ``cases``; see the module."""
    import numpy as np

    ids = sorted(set(cases))
    if len(ids) != len(cases):
        raise SplitError("case ids must be unique")
    rng = np.random.default_rng(int(seed))
    if not strata:
        return [ids[i] for i in rng.permutation(len(ids))]
    groups: dict[str, list[str]] = {}
    for case in ids:
        groups.setdefault(str(strata[case]), []).append(case)
    placed: list[tuple[float, str]] = []
    for label in sorted(groups):
        members = [groups[label][i] for i in rng.permutation(len(groups[label]))]
        offset = float(rng.random())
        placed += [((i + offset) / len(members), case) for i, case in enumerate(members)]
    return [case for _, case in sorted(placed)]


def _count(n: int, fraction: float) -> int:
    return max(1, round(n * fraction)) if fraction > 0 else 0


def fraction_split(cases: Sequence[str], *, valid: float, test: float, seed: int,
                   strata: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """``{"train": [...], "valid": [...], "test": [...]}`` (each sorted) by fractions."""
    if valid < 0 or test < 0 or valid + test >= 1:
        raise SplitError(f"valid ({valid:g}) + test ({test:g}) must be below 1, each at least 0")
    order = case_order(cases, seed, strata)
    n_test, n_valid = _count(len(order), test), _count(len(order), valid)
    if n_test + n_valid >= len(order):
        raise SplitError(f"{len(order)} case(s) cannot be split into test {test:g}, valid "
                         f"{valid:g} and a non-empty train split")
    return {"train": sorted(order[n_test + n_valid:]), "valid": sorted(order[n_test:n_test + n_valid]),
            "test": sorted(order[:n_test])}


def make_folds(cases: Sequence[str], k: int, *, seed: int,
               strata: Mapping[str, str] | None = None) -> list[list[str]]:
    """The ``k`` folds (each sorted): disjoint, covering every case, sizes within one."""
    if k < 2:
        raise SplitError(f"folds must be at least 2, got {k}")
    order = case_order(cases, seed, strata)
    if len(order) < k:
        raise SplitError(f"{len(order)} case(s) cannot fill {k} folds")
    return [sorted(order[i::k]) for i in range(k)]


def fold_split(folds: Sequence[Sequence[str]], fold: int, *, valid: float, seed: int,
               strata: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """The train/valid/test split of fold ``fold`` (0-based): the held-out fold is test."""
    rest = [case for i, members in enumerate(folds) if i != fold for case in members]
    order = case_order(rest, seed, strata)
    n_valid = _count(len(order), valid)
    if n_valid >= len(order):
        raise SplitError(f"fold {fold + 1}: {len(order)} training case(s) leave none to train "
                         f"on after taking valid {valid:g}")
    return {"train": sorted(order[n_valid:]), "valid": sorted(order[:n_valid]),
            "test": sorted(folds[fold])}


def overlaps(splits: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Cases found in more than one of ``splits`` (name -> cases): ``{case: [names]}``."""
    seen: dict[str, list[str]] = {}
    for name, members in splits.items():
        for case in members:
            seen.setdefault(case, []).append(name)
    return {case: names for case, names in sorted(seen.items()) if len(names) > 1}
