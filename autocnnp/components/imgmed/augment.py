"""Seeded geometric augmentation applied identically to an image and its mask.

Ranges are the thesis's (Table 2.1): rotation up to +-45 degrees, zoom 0.8-1.2, translation
up to 25.6 pixels along x and y. The image is interpolated bilinearly, the mask by nearest
neighbour (labels stay labels); pixels moved in from outside are 0 (background).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["AugmentRanges", "AffineParams", "sample_params", "apply_affine", "augment_pair"]


@dataclass(frozen=True)
class AugmentRanges:
    """Sampling ranges: rotation (degrees, +-), zoom (min, max), translation (pixels, +-)."""

    rotation: float = 45.0
    zoom: tuple[float, float] = (0.8, 1.2)
    translation: float = 25.6


@dataclass(frozen=True)
class AffineParams:
    """One sampled transform: rotation in degrees, zoom factor, shifts in pixels."""

    rotation: float
    zoom: float
    tx: float
    ty: float

    def to_dict(self) -> dict[str, Any]:
        return {k: round(float(v), 6) for k, v in asdict(self).items()}


def sample_params(rng: np.random.Generator, ranges: AugmentRanges = AugmentRanges()
                  ) -> AffineParams:
    """Draw one transform uniformly within ``ranges``."""
    return AffineParams(rotation=float(rng.uniform(-ranges.rotation, ranges.rotation)),
                        zoom=float(rng.uniform(*ranges.zoom)),
                        tx=float(rng.uniform(-ranges.translation, ranges.translation)),
                        ty=float(rng.uniform(-ranges.translation, ranges.translation)))


def _matrix(params: AffineParams, shape: tuple[int, int]) -> np.ndarray:
    """Output->input coordinate map (for ``warp``) of rotate+zoom about the centre, then shift."""
    from skimage.transform import AffineTransform
    cy, cx = (shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0
    centre = AffineTransform(translation=(-cx, -cy))
    forward = AffineTransform(scale=params.zoom, rotation=np.deg2rad(params.rotation))
    back = AffineTransform(translation=(cx + params.tx, cy + params.ty))
    return np.linalg.inv(back.params @ forward.params @ centre.params)


def apply_affine(array: np.ndarray, params: AffineParams, *, order: int) -> np.ndarray:
    """Apply ``params`` to a 2D array: ``order=1`` for images, ``order=0`` for masks."""
    from skimage.transform import warp
    inverse = _matrix(params, array.shape[:2])
    out = warp(np.asarray(array, dtype=np.float64), inverse, order=order, mode="constant",
               cval=0.0, preserve_range=True)
    if order == 0:
        return np.rint(out).astype(array.dtype)
    return out.astype(np.float32)


def augment_pair(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator,
                 ranges: AugmentRanges = AugmentRanges()
                 ) -> tuple[np.ndarray, np.ndarray | None, AffineParams]:
    """One random transform applied to ``image`` and (identically) to ``mask``."""
    params = sample_params(rng, ranges)
    image_out = apply_affine(image, params, order=1)
    mask_out = None if mask is None else apply_affine(mask, params, order=0)
    return image_out, mask_out, params
