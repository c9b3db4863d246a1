"""Choosing and cutting 2D slices of a 3D volume."""

from __future__ import annotations

import numpy as np

from autocnnp.errors import DataError

__all__ = ["select_slices", "take_slice", "parse_range"]


def parse_range(text: str) -> tuple[int, int]:
    """``"A:B"`` -> ``(A, B)`` (slices A..B-1); DataError for anything else."""
    try:
        a, b = (int(x) for x in text.split(":"))
    except ValueError:
        raise DataError(f"slice range {text!r} is not of the form A:B (e.g. 40:110)") from None
    if not 0 <= a < b:
        raise DataError(f"slice range {text!r} is empty or negative: need 0 <= A < B")
    return a, b


def select_slices(depth: int, *, count: int | None = None,
                  slice_range: tuple[int, int] | None = None, name: str = "volume") -> np.ndarray:
    """Indices of the slices to cut from ``depth`` slices.

    ``slice_range=(A, B)`` takes A..B-1 (DataError when B > depth). ``count=n`` takes the n
    consecutive slices centred on the middle slice (the thesis took 70 per volume), all of
    them when the volume has fewer. Neither: every slice.
    """
    if count is not None and slice_range is not None:
        raise DataError("give a slice count or a slice range, not both")
    if slice_range is not None:
        a, b = slice_range
        if not 0 <= a < b:
            raise DataError(f"slice range {a}:{b} is empty or negative: need 0 <= A < B")
        if b > depth:
            raise DataError(f"{name}: slice range {a}:{b} goes past the last slice "
                            f"(the volume has {depth} slices along this axis)")
        return np.arange(a, b)
    if count is None or count >= depth:
        if count is not None and count < 1:
            raise DataError(f"slice count must be at least 1, got {count}")
        return np.arange(depth)
    if count < 1:
        raise DataError(f"slice count must be at least 1, got {count}")
    start = (depth - count) // 2
    return np.arange(start, start + count)


def take_slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """Slice ``index`` of a 3D ``volume`` along ``axis`` (a 2D view, no copy)."""
    # Basic indexing, not np.take: take copies through a gather that is ~100x slower here.
    return volume[(slice(None),) * axis + (index,)]
