"""Reading NIfTI volumes and writing 2D slices (atomically: temp file, then rename)."""

from __future__ import annotations

import io as _io
from pathlib import Path

import numpy as np

from autocnnp.components.datasets import load_volume, volume_stem
from autocnnp.engine.rundir import atomic_write
from autocnnp.errors import DataError

__all__ = ["IMAGE_FORMATS", "MASK_FORMATS", "NIFTI_SUFFIXES", "is_nifti", "list_volumes",
           "read_volume", "encode_image", "encode_mask", "atomic_write", "load_volume",
           "volume_stem"]

#: formats an image slice may be written in.
IMAGE_FORMATS = ("npy", "png", "jpg")
#: formats a mask slice may be written in: never lossy.
MASK_FORMATS = ("npy", "png")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    """Whether ``path`` is named like a NIfTI file (.nii or .nii.gz)."""
    return Path(path).name.lower().endswith(NIFTI_SUFFIXES)


def list_volumes(path: Path) -> list[Path]:
    """The NIfTI files at ``path``: the file itself, or a folder's .nii/.nii.gz files (sorted).

    Raises DataError for a missing path, a non-NIfTI file or a folder without volumes.
    """
    path = Path(path)
    if path.is_file():
        if not is_nifti(path):
            raise DataError(f"{path}: not a NIfTI file (.nii or .nii.gz)")
        return [path]
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    files = sorted(p for p in path.iterdir()
                   if p.is_file() and is_nifti(p) and not p.name.startswith("."))
    if not files:
        raise DataError(f"{path}: empty folder: no .nii or .nii.gz volumes found")
    return files


def read_volume(path: Path, *, channel: int | None = None,
                what: str = "image") -> tuple[np.ndarray, tuple[float, ...]]:
    """A 3D volume (channel ``channel`` of a 4D one, 0 when None) and its voxel spacing.

    Raises DataError naming the file when it is corrupt, not 3D/4D or lacks the channel.
    """
    data, zooms = load_volume(path, channel=0 if channel is None else channel, what=what)
    return np.asarray(data), zooms


def _to_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    lo, hi = float(image.min()), float(image.max())
    if 0.0 <= lo and hi <= 1.0:
        scaled = image * 255.0
    elif hi > lo:
        scaled = (image - lo) / (hi - lo) * 255.0  # png/jpg need 0-255: rescale what is there
    else:
        scaled = np.zeros_like(image)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def encode_image(image: np.ndarray, fmt: str) -> bytes:
    """The bytes of a 2D image file: ``npy`` keeps float32, ``png``/``jpg`` are 8-bit."""
    if fmt == "npy":
        buf = _io.BytesIO()
        np.save(buf, np.asarray(image, dtype=np.float32))
        return buf.getvalue()
    if fmt not in ("png", "jpg"):
        raise DataError(f"unknown image format {fmt!r}; choose one of {', '.join(IMAGE_FORMATS)}")
    from PIL import Image
    buf = _io.BytesIO()
    Image.fromarray(_to_uint8(image)).save(buf, format="PNG" if fmt == "png" else "JPEG",
                                           **({"quality": 95} if fmt == "jpg" else {}))
    return buf.getvalue()


def encode_mask(mask: np.ndarray, fmt: str) -> bytes:
    """The bytes of a 2D label mask: ``npy`` (uint8/uint16/int32) or ``png`` (8 or 16 bit).

    Raises DataError for ``jpg`` (lossy compression would invent labels) or unknown formats.
    """
    if fmt not in MASK_FORMATS:
        raise DataError(f"masks are never written lossy: format {fmt!r} is not allowed for masks; "
                        f"use png or npy", remedy="pass --mask-format png (or npy)")
    mask = np.asarray(mask)
    if mask.size and mask.min() < 0:
        raise DataError("masks with negative labels cannot be written")
    top = int(mask.max()) if mask.size else 0
    dtype = np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int32
    buf = _io.BytesIO()
    if fmt == "npy":
        np.save(buf, mask.astype(dtype))
        return buf.getvalue()
    if dtype is np.int32:
        raise DataError(f"mask label {top} does not fit a 16-bit png; use npy")
    from PIL import Image
    Image.fromarray(mask.astype(dtype)).save(buf, format="PNG")
    return buf.getvalue()


