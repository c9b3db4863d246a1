"""ImgMed throughput: a 3D NIfTI volume (MNI152 T1 + tissue labels, 197x233x189) to 70 axial
slices of 256x256 .npy pairs, next to the same work written directly with nibabel +
scikit-image + numpy (load, min-max normalise, slice, bilinear/nearest resize, np.save).

autocnnp's number includes what the reference does not do: atomic writes, the manifest and
resumability bookkeeping.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def _volumes(root: Path) -> tuple[Path, Path]:
    import nibabel as nib

    from autocnnp.components.demo_data import demo_volumes
    t1, labels = demo_volumes()
    (root / "images").mkdir()
    (root / "masks").mkdir()
    nib.save(nib.Nifti1Image(t1, np.eye(4)), root / "images" / "mni152.nii.gz")
    nib.save(nib.Nifti1Image(labels, np.eye(4)), root / "masks" / "mni152.nii.gz")
    return root / "images" / "mni152.nii.gz", root / "masks" / "mni152.nii.gz"


def _ours(image: Path, mask: Path, out: Path, n: int, size: int) -> float:
    from autocnnp.components.imgmed.pipeline import run_preprocessing
    from autocnnp.engine.spec import PreprocessingSpec
    start = time.perf_counter()
    summary = run_preprocessing(PreprocessingSpec(source=image, output=out, masks=mask, slices=n,
                                                  size=size), progress=False)
    assert summary["written"] == n
    return n / (time.perf_counter() - start)


def _reference(image: Path, mask: Path, out: Path, n: int, size: int) -> float:
    import nibabel as nib
    from skimage.transform import resize
    start = time.perf_counter()
    out.mkdir()
    volume = np.asarray(nib.load(str(image)).get_fdata(), dtype=np.float32)
    labels = np.asarray(nib.load(str(mask)).dataobj)
    volume = (volume - volume.min()) / (volume.max() - volume.min())
    first = (volume.shape[2] - n) // 2
    for z in range(first, first + n):
        img = resize(volume[:, :, z], (size, size), order=1, preserve_range=True,
                     anti_aliasing=False).astype(np.float32)
        lab = resize(labels[:, :, z], (size, size), order=0, preserve_range=True,
                     anti_aliasing=False).astype(np.uint8)
        np.save(out / f"img_{z:03d}.npy", img)
        np.save(out / f"mask_{z:03d}.npy", lab)
    return n / (time.perf_counter() - start)


def run(quick: bool = False) -> list[dict]:
    """One row: slices per second for a whole volume, autocnnp vs the reference code."""
    n, size = (20, 256) if quick else (70, 256)
    root = Path(tempfile.mkdtemp(prefix="bench-imgmed-"))
    try:
        image, mask = _volumes(root)
        ours = _ours(image, mask, root / "ours", n, size)
        ref = _reference(image, mask, root / "ref", n, size)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return [{"benchmark": f"imgmed NIfTI 197x233x189 -> {n} slices {size}x{size}",
             "autocnnp": round(ours, 2), "reference": round(ref, 2), "unit": "slices/s",
             "reference_name": "nibabel+scikit-image"}]


if __name__ == "__main__":
    for row in run():
        print(row)
