"""Case-level splits: which case goes to train, valid and test, or to which of k folds.

Pure: the functions take case ids (and, to stratify, one label per case) and return lists of
case ids. Reading the cases from a folder is :func:`autocnnp.components.datasets.list_cases`;
writing ``splits.json`` is the orchestrator's.

The drawing. Cases are sorted, then shuffled with ``numpy.random.default_rng(seed)``; to
stratify, each stratum (the cases with one value of the field) is shuffled on its own, strata
in sorted order of their values. Then:

* fractions: ``round(n * test)`` cases go to test and ``round(n * valid)`` to valid (at least
  one each when the fraction is not 0), the rest to train; each stratum gives a split its
  share of that count (largest remainders), its first shuffled cases first;
* k folds: the shuffled cases, stratum after stratum, are dealt to folds 1, 2, ..., k, 1, ...
  (fold sizes differ by at most one, and so does each stratum's count per fold); fold ``i``'s
  training takes the held-out fold as its test split and, with ``valid``, a stratified
  ``round(m * valid)`` of the other ``m`` cases as its validation split.

A case is one unit: all slices of a volume (or all files with the same case id) follow it, so
no case is ever on two sides of a split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

SPLITS_VERSION = 1
SPLIT_NAMES = ("train", "valid", "test")


class SplitError(ValueError):
    """Cases that cannot be split as asked (too few cases for the folds or the fractions)."""


def shuffled_groups(cases: Sequence[str], seed: int,
                    strata: Mapping[str, str] | None = None) -> list[list[str]]:
    """The cases shuffled, one list per stratum (strata in sorted order; one list without)."""
    import numpy as np

    ids = sorted(set(cases))
    if len(ids) != len(cases):
        raise SplitError("case ids must be unique")
    rng = np.random.default_rng(int(seed))
    groups: dict[str, list[str]] = {}
    for case in ids:
        groups.setdefault(str(strata[case]) if strata else "", []).append(case)
    return [[groups[label][i] for i in rng.permutation(len(groups[label]))]
            for label in sorted(groups)]


def allocate(sizes: Sequence[int], total: int) -> list[int]:
    """``total`` shared among groups of ``sizes`` in proportion (largest remainders, earlier
    groups first on ties); no group gets more than its size."""
    n = sum(sizes)
    if n == 0 or total == 0:
        return [0] * len(sizes)
    exact = [size * total / n for size in sizes]
    shares = [int(x) for x in exact]
    by_remainder = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return [min(share, size) for share, size in zip(shares, sizes)]


def _count(n: int, fraction: float) -> int:
    return max(1, round(n * fraction)) if fraction > 0 else 0


def _take(groups: list[list[str]], count: int) -> tuple[list[str], list[list[str]]]:
    """``count`` cases taken from the front of the groups in proportion, and what is left."""
    shares = allocate([len(g) for g in groups], count)
    taken = [case for g, k in zip(groups, shares) for case in g[:k]]
    return taken, [g[k:] for g, k in zip(groups, shares)]


def fraction_split(cases: Sequence[str], *, valid: float, test: float, seed: int,
                   strata: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """``{"train": [...], "valid": [...], "test": [...]}`` (each sorted) by fractions."""
    if valid < 0 or test < 0 or valid + test >= 1:
        raise SplitError(f"valid ({valid:g}) + test ({test:g}) must be below 1, each at least 0")
    n = len(cases)
    n_test, n_valid = _count(n, test), _count(n, valid)
    if n_test + n_valid >= n:
        raise SplitError(f"{n} case(s) cannot be split into test {test:g}, valid "
                         f"{valid:g} and a non-empty train split")
    groups = shuffled_groups(cases, seed, strata)
    test_cases, groups = _take(groups, n_test)
    valid_cases, groups = _take(groups, n_valid)
    return {"train": sorted(c for g in groups for c in g), "valid": sorted(valid_cases),
            "test": sorted(test_cases)}


def make_folds(cases: Sequence[str], k: int, *, seed: int,
               strata: Mapping[str, str] | None = None) -> list[list[str]]:
    """The ``k`` folds (each sorted): disjoint, covering every case, sizes within one."""
    if k < 2:
        raise SplitError(f"folds must be at least 2, got {k}")
    if len(cases) < k:
        raise SplitError(f"{len(cases)} case(s) cannot fill {k} folds")
    dealt = [case for group in shuffled_groups(cases, seed, strata) for case in group]
    return [sorted(dealt[i::k]) for i in range(k)]


def fold_split(folds: Sequence[Sequence[str]], fold: int, *, valid: float, seed: int,
               strata: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """The train/valid/test split of fold ``fold`` (0-based): the held-out fold is test."""
    rest = [case for i, members in enumerate(folds) if i != fold for case in members]
    n_valid = _count(len(rest), valid)
    if n_valid >= len(rest):
        raise SplitError(f"fold {fold + 1}: {len(rest)} training case(s) leave none to train "
                         f"on after taking valid {valid:g}")
    valid_cases, groups = _take(shuffled_groups(rest, seed, strata), n_valid)
    return {"train": sorted(c for g in groups for c in g), "valid": sorted(valid_cases),
            "test": sorted(folds[fold])}


def overlaps(splits: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Cases found in more than one of ``splits`` (name -> cases): ``{case: [names]}``."""
    seen: dict[str, list[str]] = {}
    for name, members in splits.items():
        for case in members:
            seen.setdefault(case, []).append(name)
    return {case: names for case, names in sorted(seen.items()) if len(names) > 1}
