"""Seeded geometric augmentation applied identically to an image and its mask.

Ranges are the thesis's (Table 2.1): rotation up to +-45 degrees, zoom 0.8-1.2, translation
up to 25.6 pixels along x and y. The image is interpolated bilinearly, the mask by nearest
neighbour (labels stay labels); pixels moved in from outside are 0 (background).

:func:`augment_batch` is what training applies on the fly (``<data><augmentation>``): each
sample of a batch gets its own transform (and flips), drawn from a generator seeded by the
run's seed, the rank, the epoch and the step (:func:`batch_rng`), so a run repeats bit for
bit whatever order the parallel readers finish in, and every epoch draws new transforms.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["AugmentRanges", "AffineParams", "sample_params", "apply_affine", "augment_pair",
           "augment_batch", "batch_rng"]


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


def batch_rng(seed: int, rank: int, epoch: int, step: int) -> np.random.Generator:
    """The generator of the transforms of one training batch: a function of the run's seed,
    the rank, the epoch and the step only."""
    return np.random.default_rng([int(seed), int(rank), int(epoch), int(step), 0xA06])


def augment_batch(images: np.ndarray, masks: np.ndarray, rng: np.random.Generator,
                  ranges: AugmentRanges = AugmentRanges(), flips: tuple[str, ...] = ()
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Augment an ``(N, H, W, C)`` batch and its ``(N, H, W)`` masks: per sample, each flip of
    ``flips`` (``horizontal``: left-right, ``vertical``: up-down) with probability 1/2, then
    one transform of ``ranges`` applied to every channel (bilinear) and to the mask (nearest
    neighbour). Ranges of zero skip the interpolation (flips alone are exact)."""
    identity = ranges.rotation == 0 and tuple(ranges.zoom) == (1.0, 1.0) \
        and ranges.translation == 0
    out_images = np.empty_like(images, dtype=np.float32)
    out_masks = np.empty_like(masks)
    for i in range(images.shape[0]):
        image, mask = images[i], masks[i]
        for flip in flips:  # drawn even when not applied: the draws do not depend on data
            if rng.random() < 0.5:
                axis = 1 if flip == "horizontal" else 0
                image, mask = np.flip(image, axis=axis), np.flip(mask, axis=axis)
        if not identity:
            params = sample_params(rng, ranges)
            image = np.stack([apply_affine(image[..., c], params, order=1)
                              for c in range(image.shape[-1])], axis=-1)
            mask = apply_affine(mask, params, order=0)
        out_images[i], out_masks[i] = image, mask
    return out_images, out_masks
