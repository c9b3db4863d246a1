"""Intensity normalisation and resizing of 2D slices."""

from __future__ import annotations

import numpy as np

from autocnnp.components.datasets import resize_image as _resize_image
from autocnnp.components.datasets import resize_mask
from autocnnp.errors import DataError

__all__ = ["NORMALIZATIONS", "normalize", "intensity_stats", "resize_image", "resize_mask"]

#: intensity normalisations: min-max to [0, 1], zero mean / unit variance, none.
NORMALIZATIONS = ("minmax", "zscore", "none")


def intensity_stats(volume: np.ndarray, method: str) -> tuple[float, float]:
    """``(offset, scale)`` so that ``(x - offset) / scale`` normalises ``volume`` by ``method``.

    Statistics come from the whole volume so every slice of it is scaled the same way.
    """
    if method not in NORMALIZATIONS:
        raise DataError(f"unknown normalisation {method!r}; choose one of "
                        f"{', '.join(NORMALIZATIONS)}")
    data = np.asarray(volume, dtype=np.float64)
    if method == "none":
        return 0.0, 1.0
    if method == "minmax":
        lo, hi = float(data.min()), float(data.max())
        return lo, (hi - lo) if hi > lo else 1.0
    mean, std = float(data.mean()), float(data.std())
    return mean, std if std > 0 else 1.0


def normalize(image: np.ndarray, method: str = "minmax",
              stats: tuple[float, float] | None = None) -> np.ndarray:
    """Normalise ``image`` (float32 out) with ``method`` or precomputed ``stats``."""
    offset, scale = stats if stats is not None else intensity_stats(image, method)
    return ((np.asarray(image, dtype=np.float64) - offset) / scale).astype(np.float32)


def resize_image(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float image to ``size`` (square when an int)."""
    return _resize_image(np.asarray(image, dtype=np.float32), size)
