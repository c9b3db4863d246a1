"""The demo dataset: a real brain-tissue segmentation task built without a download.

Source: the MNI ICBM152 2009 T1 template and its grey- and white-matter probability maps that
ship with nilearn (197 x 233 x 189 voxels, 1 mm). Labels: 0 background, 1 grey matter,
2 white matter, where a voxel takes the more probable tissue if that probability is at least
half of full scale, else background. (The maps are stored as 0-255 in the files; nilearn's
loaders rescale them to 0-1, and maps still above 1 are divided by 255 here.)

``n_slices`` axial slices centred on the middle of the brain's extent are cut, rotated so the
front of the head is up, zero-padded to a square and resized to ``size x size`` (image bilinear,
mask nearest neighbour). Intensities are min-max normalised over the volume to ``[0, 1]``.

Split (deterministic): slice position ``i`` (0-based among the cut slices) goes to test when
``i % 5 == seed % 5``, to valid when ``i % 5 == (seed + 2) % 5``, else to train. With the
default ``seed=0`` that is "every 5th slice to test, every 5th offset by 2 to valid"; seeds
0-4 give five disjoint test folds.

Layout written (the ``pairs`` layout of :mod:`autocnnp.components.datasets`)::

    OUT/train/images/NNNN.npy   float32 (size, size)   NNNN = axial index z in the template
    OUT/train/masks/NNNN.npy    uint8   (size, size)
    OUT/valid/... OUT/test/...
    OUT/dataset.json            source, labels, parameters, split sizes, sha256 of each file

The build goes to a temporary sibling folder that is renamed into place at the end, so an
interrupted build never leaves a half dataset; re-running into a complete dataset built with
the same parameters does nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from autocnnp.components.datasets import resize_image, resize_mask
from autocnnp.errors import DataError

__all__ = ["LABELS", "build_demo_dataset", "build_msd_demo", "demo_volumes", "verify_demo_dataset"]

#: class index -> name.
LABELS = {0: "background", 1: "grey matter", 2: "white matter"}
SPLITS = ("train", "valid", "test")
FORMAT_VERSION = 1


def demo_volumes() -> tuple[np.ndarray, np.ndarray]:
    """The MNI152 T1 volume (float32, ``[0, 1]``) and its tissue labels (uint8, 0/1/2)."""
    from nilearn import datasets

    t1 = np.asarray(datasets.load_mni152_template(resolution=1).get_fdata(), dtype=np.float32)
    maps = []
    for loader in (datasets.load_mni152_gm_template, datasets.load_mni152_wm_template):
        prob = np.asarray(loader(resolution=1).get_fdata(), dtype=np.float32)
        if prob.max() > 1.0:  # raw files hold 0-255
            prob = prob / 255.0
        maps.append(prob)
    gm, wm = maps
    labels = np.where(wm > gm, 2, 1).astype(np.uint8)
    labels[np.maximum(gm, wm) < 0.5] = 0
    lo, hi = float(t1.min()), float(t1.max())
    t1 = (t1 - lo) / (hi - lo) if hi > lo else np.zeros_like(t1)
    return t1.astype(np.float32), labels


def _square(plane: np.ndarray) -> np.ndarray:
    h, w = plane.shape
    n = max(h, w)
    top, left = (n - h) // 2, (n - w) // 2
    out = np.zeros((n, n), dtype=plane.dtype)
    out[top:top + h, left:left + w] = plane
    return out


def _slice_indices(labels: np.ndarray, n_slices: int) -> np.ndarray:
    depth = labels.shape[2]
    if not 1 <= n_slices <= depth:
        raise DataError(f"demo data: n_slices must be between 1 and {depth}, got {n_slices}")
    brain_z = np.flatnonzero(labels.any(axis=(0, 1)))
    centre = (int(brain_z[0]) + int(brain_z[-1])) // 2
    start = min(max(centre - n_slices // 2, 0), depth - n_slices)
    return np.arange(start, start + n_slices)


def split_of(position: int, seed: int = 0) -> str:
    """The split of the ``position``-th cut slice (see the module docstring)."""
    if position % 5 == seed % 5:
        return "test"
    if position % 5 == (seed + 2) % 5:
        return "valid"
    return "train"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _params(size: int, n_slices: int, seed: int) -> dict[str, int]:
    return {"size": size, "n_slices": n_slices, "seed": seed, "format_version": FORMAT_VERSION}


def verify_demo_dataset(out: Path) -> dict[str, Any]:
    """Read ``out/dataset.json`` and check every file it lists exists with its sha256.

    Returns the description; raises DataError naming the first missing or changed file.
    """
    out = Path(out)
    meta_file = out / "dataset.json"
    try:
        meta = json.loads(meta_file.read_text())
        files = meta["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{meta_file}: not a readable demo dataset description: {exc}",
                        remedy=f"remove {out} and run 'autocnnp demo-data {out}' again") from exc
    for rel, digest in files.items():
        path = out / rel
        if not path.is_file() or _sha256(path) != digest:
            state = "missing" if not path.is_file() else "changed since it was built"
            raise DataError(f"{path}: {state}; the demo dataset at {out} is damaged",
                            remedy=f"remove {out} and run 'autocnnp demo-data {out}' again")
    return meta


def build_demo_dataset(out: Path, *, size: int = 128, n_slices: int = 150,
                       seed: int = 0) -> dict[str, Any]:
    """Build the MNI152 brain-tissue dataset into ``out`` (see the module docstring).

    Args:
        out: the dataset folder to create (its parent is created if needed).
        size: the side of the square slices.
        n_slices: how many axial slices to cut around the middle of the brain (1..189).
        seed: selects the test/valid fold (``seed % 5``); the build is otherwise fixed.

    Returns the dataset description (``dataset.json``'s content) plus ``path`` and
    ``created`` (False when a complete dataset with the same parameters was already there).

    Raises DataError when ``out`` holds something else: a dataset built with other
    parameters, a damaged dataset, or unrelated files.
    """
    out = Path(out)
    if size < 8:
        raise DataError(f"demo data: size must be at least 8, got {size}")
    out.parent.mkdir(parents=True, exist_ok=True)
    # two runs that need the dataset at once: the second waits, then finds it complete
    with _build_lock(out):
        return _build_unlocked(out, size, n_slices, seed)


@contextmanager
def _build_lock(out: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``.OUT.lock`` next to ``out``, released when the builder
    ends however it ends."""
    import fcntl

    with open(out.parent / f".{out.name}.lock", "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


def _build_unlocked(out: Path, size: int, n_slices: int, seed: int) -> dict[str, Any]:
    params = _params(size, n_slices, seed)
    if out.exists():
        if not out.is_dir():
            raise DataError(f"{out}: exists and is not a folder",
                            remedy="choose another output folder")
        if (out / "dataset.json").is_file():
            meta = verify_demo_dataset(out)
            if meta.get("parameters") != params:
                raise DataError(f"{out}: holds a demo dataset built with {meta.get('parameters')}, "
                                f"not {params}",
                                remedy="remove it or choose another output folder")
            return {**meta, "path": str(out), "created": False}
        if any(out.iterdir()):
            raise DataError(f"{out}: exists, is not empty and holds no dataset.json; refusing to "
                            "write into it", remedy="choose an empty or new output folder")

    t1, labels = demo_volumes()
    zs = _slice_indices(labels, n_slices)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it 0700: the dataset is for everyone
    try:
        meta = _write(tmp, t1, labels, zs, size, seed, params)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**meta, "path": str(out), "created": True}


def _write(root: Path, t1: np.ndarray, labels: np.ndarray, zs: np.ndarray, size: int,
           seed: int, params: dict[str, int]) -> dict[str, Any]:
    import nilearn

    for split in SPLITS:
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
    slices: dict[str, list[int]] = {s: [] for s in SPLITS}
    files: dict[str, str] = {}
    for position, z in enumerate(zs):
        split = split_of(position, seed)
        image = resize_image(_square(np.rot90(t1[:, :, z])), size)
        image = np.clip(image, 0.0, 1.0).astype(np.float32)
        mask = resize_mask(_square(np.rot90(labels[:, :, z])), size).astype(np.uint8)
        for kind, array in (("images", image), ("masks", mask)):
            rel = f"{split}/{kind}/{int(z):04d}.npy"
            np.save(root / rel, array)
            files[rel] = _sha256(root / rel)
        slices[split].append(int(z))
    meta = {
        "name": "mni152-brain-tissue",
        "description": "Axial slices of the MNI ICBM152 2009 T1 template with grey/white-matter "
                       "labels from its tissue probability maps (argmax where >= 0.5).",
        "source": {"template": "MNI ICBM152 2009 T1, 1 mm (nilearn.datasets."
                               "load_mni152_template)",
                   "labels_from": ["nilearn.datasets.load_mni152_gm_template",
                                   "nilearn.datasets.load_mni152_wm_template"],
                   "volume_shape": list(t1.shape), "nilearn_version": nilearn.__version__},
        "labels": {str(k): v for k, v in LABELS.items()},
        "num_classes": len(LABELS),
        "layout": "pairs",
        "parameters": params,
        "image_shape": [size, size],
        "splits": {s: len(slices[s]) for s in SPLITS},
        "slices": slices,
        "files": files,
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


# --- the MSD-layout demo: several cases cut from the MNI152 volumes -------------------------

def _msd_case(t1: np.ndarray, labels: np.ndarray, rng: np.random.Generator, size: int,
              depth: int) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic case: a slab of the template at a random height, a random in-plane crop,
    an optional left-right flip, and a random intensity gain, gamma and noise."""
    from skimage.transform import resize

    brain = np.flatnonzero(labels.any(axis=(0, 1)))
    span = min(depth * 4, labels.shape[2])
    centre = (int(brain[0]) + int(brain[-1])) // 2 + int(rng.integers(-20, 21))
    z0 = int(np.clip(centre - span // 2, 0, labels.shape[2] - span))
    x_margin, y_margin = (int(rng.integers(0, 25)) for _ in range(2))
    xs = slice(x_margin, labels.shape[0] - int(rng.integers(0, 25)))
    ys = slice(y_margin, labels.shape[1] - int(rng.integers(0, 25)))
    image = t1[xs, ys, z0:z0 + span]
    mask = labels[xs, ys, z0:z0 + span]
    if rng.random() < 0.5:
        image, mask = image[::-1], mask[::-1]
    image = resize(image, (size, size, depth), order=1, preserve_range=True, anti_aliasing=False)
    mask = resize(mask, (size, size, depth), order=0, preserve_range=True,
                  anti_aliasing=False).astype(np.uint8)
    image = np.clip(image, 0.0, 1.0) ** float(rng.uniform(0.8, 1.25))
    image = image * float(rng.uniform(0.7, 1.0)) + rng.normal(0.0, 0.02, image.shape)
    return (np.clip(image, 0.0, 1.0) * 1000).astype(np.int16), mask


#: the modalities of MSD Task01 BrainTumour, in its order; ``modalities=4`` writes them all
BRATS_MODALITIES = ("FLAIR", "T1w", "t1gd", "T2w")


def _modality(image: np.ndarray, name: str, rng: np.random.Generator) -> np.ndarray:
    """A stand-in for an MR contrast made from the T1 slab (int16, 0..1000): the same anatomy
    (so the same labels), another intensity mapping and its own noise."""
    x = image.astype(np.float64) / 1000.0
    head = x > 0.05
    if name == "FLAIR":
        x = np.where(head, 1.0 - 0.8 * x, 0.0)
    elif name == "t1gd":
        x = x ** 0.7
    elif name == "T2w":
        x = np.where(head, (1.0 - x) ** 1.5, 0.0)
    x = x + rng.normal(0.0, 0.02, x.shape)
    return (np.clip(x, 0.0, 1.0) * 1000).astype(np.int16)


def build_msd_demo(out: Path, *, cases: int = 12, test_cases: int = 2, size: int = 32,
                   depth: int = 8, seed: int = 0, modalities: int = 1,
                   compress: bool = True) -> dict[str, Any]:
    """A Medical Segmentation Decathlon task folder cut from the MNI152 volumes: ``cases``
    labelled cases in ``imagesTr/``/``labelsTr/`` and ``test_cases`` unlabelled ones in
    ``imagesTs/``, each a ``size x size x depth`` NIfTI volume (a slab at a random height, a
    random crop, flip, intensity gain, gamma and noise: cases differ as scans of one brain
    would), and ``dataset.json`` whose ``training`` entries also carry ``site`` (A or B,
    alternating: a field to stratify by). Labels 0 background, 1 grey, 2 white matter.
    ``modalities`` 2..4 writes 4D ``size x size x depth x modalities`` volumes instead, named
    after the first of BRATS's (:data:`BRATS_MODALITIES`, in ``dataset.json``'s
    ``modality``), each another intensity mapping of the same T1 slab with its own noise.
    ``compress=False`` writes ``.nii`` files instead of ``.nii.gz`` (a slice of those is read
    without decoding its volume).
    Re-running with the same parameters into a complete folder does nothing."""
    import nibabel as nib

    out = Path(out)
    params = {"cases": cases, "test_cases": test_cases, "size": size, "depth": depth,
              "seed": seed, "format_version": FORMAT_VERSION}
    if modalities != 1:  # folders built before 4D volumes keep their parameters
        params["modalities"] = modalities
    if not compress:
        params["compress"] = False
    meta_file = out / "dataset.json"
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        if meta.get("parameters") == params:
            return {**meta, "created": False}
        raise DataError(f"{out}: holds an MSD demo built with {meta.get('parameters')}, not "
                        f"{params}", remedy="remove it or choose another output folder")
    if cases < 2 or test_cases < 0:
        raise DataError(f"MSD demo: need at least 2 cases, got {cases}")
    if not 1 <= modalities <= len(BRATS_MODALITIES):
        raise DataError(f"MSD demo: modalities must be 1..{len(BRATS_MODALITIES)}, got "
                        f"{modalities}")
    names = ("T1",) if modalities == 1 else BRATS_MODALITIES[:modalities]
    t1, labels = demo_volumes()
    rng = np.random.default_rng(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        for sub in ("imagesTr", "labelsTr", "imagesTs"):
            (tmp / sub).mkdir()
        affine = np.diag([197 / size, 233 / size, 4.0, 1.0])
        training, test = [], []
        for k in range(cases + test_cases):
            image, mask = _msd_case(t1, labels, rng, size, depth)
            if modalities > 1:
                image = np.stack([_modality(image, n, rng) for n in names], axis=-1)
            name = f"brain_{k:03d}.nii" + (".gz" if compress else "")
            if k < cases:
                nib.save(nib.Nifti1Image(image, affine), tmp / "imagesTr" / name)
                nib.save(nib.Nifti1Image(mask, affine), tmp / "labelsTr" / name)
                training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}",
                                 "site": "AB"[k % 2]})
            else:
                nib.save(nib.Nifti1Image(image, affine), tmp / "imagesTs" / name)
                test.append(f"./imagesTs/{name}")
        meta = {"name": "mni152-msd-demo",
                "description": "Cases cut from the MNI ICBM152 2009 T1 template (random slab, "
                               "crop, flip, gain, gamma, noise) with grey/white-matter labels.",
                "modality": {str(i): n for i, n in enumerate(names)},
                "labels": {str(k): v for k, v in LABELS.items()},
                "numTraining": cases, "numTest": test_cases, "training": training,
                "test": test, "parameters": params}
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**meta, "created": True}
