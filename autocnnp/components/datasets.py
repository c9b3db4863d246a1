"""The one data loader used by training: folders of images and masks to in-memory arrays.

Three layouts are accepted (:func:`detect_format` tells them apart):

``pairs``
    ``images/`` and ``masks/`` subfolders holding ``.png`` or ``.npy`` files; an image and its
    mask share a file stem (``images/0001.npy`` <-> ``masks/0001.png`` is fine). This is what
    ``autocnnp demo-data`` and ``autocnnp preprocess`` write.
``msd``
    The Medical Segmentation Decathlon layout: ``imagesTr/``, ``labelsTr/`` and
    ``dataset.json`` (its ``training`` list pairs images with labels).
``nifti``
    ``images/`` and ``masks/`` subfolders holding ``.nii`` or ``.nii.gz`` volumes with matching
    names.

If ``path`` itself has none of these layouts but ``path/<split>`` has one (``data/mni152`` with
``split="train"``), that subfolder is used.

Conventions of the returned :class:`Split`:

* images are ``(N, H, W, C)`` float32. An image that is already float in ``[0, 1]`` is kept
  as it is; anything else is min-max normalised to ``[0, 1]`` *per image* (a 2D file) or *per
  volume* (a NIfTI/MSD volume, so the slices of one volume stay comparable). A constant image
  becomes all zeros.
* masks are ``(N, H, W)`` int32 class indices; float masks are accepted only when every value
  is an integer.
* volumes are cut into 2D slices along their last spatial axis (axial for RAS-like volumes).
  Every slice is kept, including slices whose image and mask are both empty: filtering is a
  preprocessing decision (``autocnnp preprocess --range``), not the loader's.
* 4D volumes (MSD BRATS: ``(H, W, D, modalities)``) give one channel, ``channel`` (0 by
  default).
* ``image_size`` resizes every slice to ``image_size x image_size``: images bilinearly, masks
  by nearest neighbour so labels stay labels.

Every problem is a :class:`~autocnnp.errors.DataError` naming the file, raised before training
starts. Only numpy is imported at module level; nibabel, Pillow and scikit-image are imported
when a loader needs them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from autocnnp.errors import DataError

__all__ = ["Split", "FORMATS", "detect_format", "load_split", "shard_indices", "check_split",
           "read_image_file", "read_mask_file", "resize_image", "resize_mask", "volume_stem"]

#: the layouts :func:`load_split` reads.
FORMATS = ("pairs", "msd", "nifti")
#: other names a config may use for a layout.
FORMAT_ALIASES = {"png": "pairs", "npy": "pairs", "nii": "nifti", "nii.gz": "nifti",
                  "decathlon": "msd"}

_PAIR_SUFFIXES = (".png", ".npy")
_NIFTI_SUFFIXES = (".nii", ".nii.gz")

_LAYOUTS = ("'pairs' (images/ and masks/ subfolders of .png/.npy files with matching names), "
            "'msd' (imagesTr/, labelsTr/ and dataset.json), "
            "'nifti' (images/ and masks/ subfolders of .nii/.nii.gz volumes with matching names)")


@dataclass
class Split:
    """One split (train, valid or test) in memory.

    Attributes:
        images: ``(N, H, W, C)`` float32 intensities in ``[0, 1]``.
        masks: ``(N, H, W)`` int32 class indices.
        names: one per sample: the source image file's path, with ``[z=k]`` appended for
            slice ``k`` of a volume.
        source: the folder the split was read from.
    """

    images: np.ndarray
    masks: np.ndarray
    names: list[str]
    source: Path

    def __len__(self) -> int:
        return int(self.images.shape[0])


# --- layout detection ------------------------------------------------------------------------

def volume_stem(path: Path) -> str:
    """The file name without its image suffix (``case_01.nii.gz`` -> ``case_01``)."""
    name = path.name
    for suffix in (".nii.gz", ".nii", ".png", ".npy", ".jpg", ".jpeg"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".")
                  and p.name.lower().endswith(suffixes))


def _layout(path: Path) -> str | None:
    if (path / "imagesTr").is_dir() and (path / "labelsTr").is_dir() \
            and (path / "dataset.json").is_file():
        return "msd"
    images, masks = path / "images", path / "masks"
    if images.is_dir() and masks.is_dir():
        if _files(images, _NIFTI_SUFFIXES):
            return "nifti"
        if _files(images, _PAIR_SUFFIXES):
            return "pairs"
        raise DataError(f"{images}: empty folder: no .png, .npy, .nii or .nii.gz images found",
                        remedy="point the data path at a folder that holds the images")
    return None


def detect_format(path: Path) -> str:
    """Which layout ``path`` has: ``"pairs"``, ``"msd"`` or ``"nifti"``.

    Raises DataError when ``path`` does not exist, has an empty ``images/`` folder or matches
    none of the accepted layouts (the message lists them).
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: no such data folder",
                        remedy="check the path in <data> or build the demo data with "
                               "'autocnnp demo-data DIR'")
    found = _layout(path)
    if found is None:
        raise DataError(f"{path}: unrecognised data layout; accepted layouts: {_LAYOUTS}")
    return found


def _resolve(path: Path, split: str) -> Path:
    """``path`` itself, or ``path/<split>`` when only the subfolder has a known layout."""
    path = Path(path)
    if path.is_dir() and _layout(path) is None and (path / split).is_dir():
        return path / split
    return path


# --- reading single files --------------------------------------------------------------------

def _read_array(path: Path, what: str, *, palette_to_rgb: bool) -> np.ndarray:
    """The pixels of a ``.npy`` or image file; DataError naming the file when unreadable."""
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        from PIL import Image
        with Image.open(path) as img:
            img.load()
            if palette_to_rgb and img.mode == "P":
                img = img.convert("RGB")
            return np.asarray(img)
    except Exception as exc:  # any decoder error means the same thing to the user
        raise DataError(f"{path}: cannot read {what}: {exc}",
                        remedy="re-export the file or remove it from the folder") from exc


def read_image_file(path: Path) -> np.ndarray:
    """Read a 2D image (``.npy`` or ``.png``/``.jpg``) as an ``(H, W)`` or ``(H, W, C)`` array.

    Raises DataError naming the file when it cannot be read or is not 2D.
    """
    path = Path(path)
    array = _read_array(path, "image", palette_to_rgb=True)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or array.size == 0:
        raise DataError(f"{path}: expected a 2D image (H, W) or (H, W, C), got shape "
                        f"{tuple(array.shape)}")
    return array


def read_mask_file(path: Path) -> np.ndarray:
    """Read a 2D mask (``.npy`` or ``.png``) as an ``(H, W)`` int32 array of class indices.

    Raises DataError naming the file when it cannot be read, has several channels or holds
    non-integer values.
    """
    path = Path(path)
    array = _read_array(path, "mask", palette_to_rgb=False)  # palette indices are the labels
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise DataError(f"{path}: a mask must be a single-channel 2D array of class indices, got "
                        f"shape {tuple(array.shape)}")
    return to_labels(array, path)


def to_labels(array: np.ndarray, path: Path | str) -> np.ndarray:
    """``array`` as int32 class indices; DataError naming ``path`` if a value is not an integer."""
    if array.dtype == np.bool_:
        return array.astype(np.int32)
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int32, copy=False)
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"{path}: mask has dtype {array.dtype}; expected integer class indices")
    if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
        raise DataError(f"{path}: mask holds non-integer values; expected integer class indices",
                        remedy="save masks as integer labels (uint8 .png or integer .npy)")
    return array.astype(np.int32)


def normalize_unit(array: np.ndarray, path: Path | str) -> np.ndarray:
    """``array`` as float32 in ``[0, 1]``: kept if already float in range, else min-max scaled."""
    data = np.asarray(array)
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise DataError(f"{path}: image has dtype {data.dtype}; expected numbers")
    data = data.astype(np.float32, copy=False)
    if not np.all(np.isfinite(data)):
        raise DataError(f"{path}: image holds NaN or infinite values")
    if np.issubdtype(np.asarray(array).dtype, np.floating) and data.min() >= 0.0 \
            and data.max() <= 1.0:
        return data
    lo, hi = float(data.min()), float(data.max())
    if hi <= lo:
        return np.zeros_like(data, dtype=np.float32)
    return ((data - lo) / (hi - lo)).astype(np.float32)


# --- resizing --------------------------------------------------------------------------------

def resize_image(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an ``(H, W)`` or ``(H, W, C)`` float image to ``size`` (keeps range)."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if image.shape[:2] == hw:
        return image
    from skimage.transform import resize
    out = resize(image, hw + image.shape[2:], order=1, mode="edge", preserve_range=True,
                 anti_aliasing=False)
    return out.astype(image.dtype if np.issubdtype(image.dtype, np.floating) else np.float32)


def resize_mask(mask: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an ``(H, W)`` label mask: output values are input labels."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if mask.shape[:2] == hw:
        return mask
    h, w = mask.shape[:2]
    # Index arithmetic instead of an interpolator: exact, fast, and cannot invent labels.
    rows = np.minimum(((np.arange(hw[0]) + 0.5) * h / hw[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(hw[1]) + 0.5) * w / hw[1]).astype(np.int64), w - 1)
    return mask[rows[:, None], cols[None, :]]


# --- loaders ---------------------------------------------------------------------------------

@dataclass
class _Samples:
    images: list[np.ndarray]
    masks: list[np.ndarray]
    names: list[str]


def _bad_labels(mask: np.ndarray, where: str, num_classes: int) -> DataError | None:
    if mask.size == 0 or (mask.min() >= 0 and mask.max() < num_classes):
        return None
    bad = [int(v) for v in np.unique(mask) if v < 0 or v >= num_classes]
    return DataError(
        f"{where}: labels {bad} outside the declared classes 0..{num_classes - 1}",
        remedy=f"declare {max(bad) + 1} classes in <data><classes> or fix the mask"
        if max(bad) >= num_classes else "class indices must not be negative")


def _add(samples: _Samples, image: np.ndarray, mask: np.ndarray, name: str,
         image_size: int | None) -> None:
    if image.ndim == 2:
        image = image[..., None]
    if image_size is not None:
        image = resize_image(image, image_size)
        mask = resize_mask(mask, image_size)
    samples.images.append(image.astype(np.float32, copy=False))
    samples.masks.append(mask.astype(np.int32, copy=False))
    samples.names.append(name)


def _shape_mismatch(image_file: Path, mask_file: Path, image_shape: tuple, mask_shape: tuple,
                    what: str = "image") -> DataError:
    return DataError(f"{image_file} and {mask_file}: {what} shape {tuple(image_shape)} does not "
                     f"match mask shape {tuple(mask_shape)}",
                     remedy="an image and its mask must cover the same pixels")


def _matched(images_dir: Path, masks_dir: Path,
             suffixes: tuple[str, ...]) -> list[tuple[Path, Path]]:
    images = _files(images_dir, suffixes)
    if not images:
        raise DataError(f"{images_dir}: empty folder: no {'/'.join(suffixes)} images found")
    masks = {volume_stem(m): m for m in _files(masks_dir, suffixes)}
    pairs = []
    for image in images:
        mask = masks.get(volume_stem(image))
        if mask is None:
            raise DataError(f"{image}: no mask named {volume_stem(image)}"
                            f"{{{','.join(suffixes)}}} in {masks_dir}",
                            remedy="every image needs a mask with the same file name")
        pairs.append((image, mask))
    return pairs


def _load_pairs(root: Path, samples: _Samples, image_size: int | None, num_classes: int,
                **_: object) -> None:
    for image_file, mask_file in _matched(root / "images", root / "masks", _PAIR_SUFFIXES):
        image = read_image_file(image_file)
        mask = read_mask_file(mask_file)
        if image.shape[:2] != mask.shape:
            raise _shape_mismatch(image_file, mask_file, image.shape[:2], mask.shape)
        problem = _bad_labels(mask, str(mask_file), num_classes)
        if problem is not None:
            raise problem
        _add(samples, normalize_unit(image, image_file), mask, str(image_file), image_size)


def load_volume(path: Path, *, channel: int | None = 0, what: str = "image") -> tuple[
        np.ndarray, tuple[float, ...]]:
    """Read a NIfTI volume as a 3D array (channel ``channel`` of a 4D one) and its voxel size.

    Raises DataError naming the file when it is missing, corrupt, or not 3D/4D.
    """
    import nibabel as nib
    path = Path(path)
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such file") from exc
    except Exception as exc:
        raise DataError(f"{path}: cannot read NIfTI {what}: {exc}",
                        remedy="check that the file is a complete .nii or .nii.gz") from exc
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    if data.ndim == 4:
        if channel is None:
            channel = 0
        if not 0 <= channel < data.shape[3]:
            raise DataError(f"{path}: channel {channel} does not exist; the volume has "
                            f"{data.shape[3]} channels (0..{data.shape[3] - 1})")
        data = data[..., channel]
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 3D or 4D volume, got shape {tuple(data.shape)}")
    return data, zooms


def _load_volume_pairs(pairs: list[tuple[Path, Path]], samples: _Samples,
                       image_size: int | None, channel: int, num_classes: int) -> None:
    for image_file, mask_file in pairs:
        volume, _ = load_volume(image_file, channel=channel)
        labels, _ = load_volume(mask_file, channel=0, what="mask")
        if volume.shape != labels.shape:
            raise _shape_mismatch(image_file, mask_file, volume.shape, labels.shape,
                                  what="volume")
        volume = normalize_unit(volume, image_file)
        labels = to_labels(labels, mask_file)
        problem = _bad_labels(labels, str(mask_file), num_classes)
        if problem is not None:
            raise problem
        for k in range(volume.shape[2]):
            _add(samples, volume[:, :, k], labels[:, :, k], f"{image_file}[z={k}]",
                 image_size)


def _load_nifti(root: Path, samples: _Samples, image_size: int | None, channel: int,
                num_classes: int) -> None:
    pairs = _matched(root / "images", root / "masks", _NIFTI_SUFFIXES)
    _load_volume_pairs(pairs, samples, image_size, channel, num_classes)


def _load_msd(root: Path, samples: _Samples, image_size: int | None, channel: int,
              num_classes: int) -> None:
    meta_file = root / "dataset.json"
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{meta_file}: cannot read dataset.json: {exc}") from exc
    entries = meta.get("training") if isinstance(meta, dict) else None
    if entries:
        pairs = []
        for entry in entries:
            try:
                pairs.append(((root / entry["image"]).resolve(), (root / entry["label"]).resolve()))
            except (TypeError, KeyError) as exc:
                raise DataError(f"{meta_file}: a 'training' entry lacks 'image' or 'label': "
                                f"{entry!r}") from exc
        for image, label in pairs:
            for f in (image, label):
                if not f.is_file():
                    raise DataError(f"{f}: listed in {meta_file} but missing")
    else:
        pairs = _matched(root / "imagesTr", root / "labelsTr", _NIFTI_SUFFIXES)
    _load_volume_pairs(pairs, samples, image_size, channel, num_classes)


_LOADERS: dict[str, Callable[..., None]] = {"pairs": _load_pairs, "nifti": _load_nifti,
                                            "msd": _load_msd}


def load_split(path: Path, *, format: str = "auto", num_classes: int,
               image_size: int | None = None, split: str = "train", channel: int = 0) -> Split:
    """Read one split into memory and validate it with :func:`check_split`.

    Args:
        path: the split's folder (or a dataset root holding ``<split>/``).
        format: ``"auto"`` (see :func:`detect_format`), ``"pairs"``, ``"msd"`` or ``"nifti"``
            (aliases: ``png``/``npy`` for pairs, ``nii``/``nii.gz`` for nifti, ``decathlon``).
        num_classes: classes declared in the config; every mask label must be below it.
        image_size: resize every slice to this square size; ``None`` keeps the file's size
            (then every sample must have the same size).
        split: the split's name (``train``, ``valid``, ``test``); used to find ``path/<split>``
            and in messages. For MSD every case of the ``training`` list is read.
        channel: which channel of 4D volumes to use.

    Raises DataError for anything that would make training fail or lie.
    """
    root = _resolve(Path(path), split)
    fmt = detect_format(root) if format == "auto" else FORMAT_ALIASES.get(format, format)
    if fmt not in _LOADERS:
        raise DataError(f"{root}: unknown data format {format!r}; known: auto, "
                        f"{', '.join(FORMATS)}")
    if image_size is not None and image_size < 1:
        raise DataError(f"{root}: image_size must be a positive integer, got {image_size}")
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder")
    samples = _Samples([], [], [])
    if num_classes < 1:
        raise DataError(f"{root}: num_classes must be >= 1, got {num_classes}")
    _LOADERS[fmt](root, samples, image_size, channel=channel, num_classes=num_classes)
    if not samples.images:
        raise DataError(f"{root}: the {split} split is empty")
    _check_uniform(samples, root)
    result = Split(images=np.stack(samples.images), masks=np.stack(samples.masks),
                   names=samples.names, source=root)
    check_split(result, num_classes)
    return result


def _check_uniform(samples: _Samples, root: Path) -> None:
    first_shape, first_name = samples.images[0].shape, samples.names[0]
    for image, name in zip(samples.images, samples.names):
        if image.shape != first_shape:
            what = "channels" if image.shape[:2] == first_shape[:2] else "size"
            raise DataError(f"{root}: {name} has shape {image.shape} but {first_name} has "
                            f"{first_shape}; every sample needs the same {what}",
                            remedy="set image_size in <data> to resize every slice"
                            if what == "size" else None)


# --- sharding and validation -----------------------------------------------------------------

def shard_indices(n: int, rank: int, size: int) -> np.ndarray:
    """The sample indices rank ``rank`` of ``size`` trains on.

    Contiguous blocks: disjoint, covering ``range(n)``, with sizes differing by at most one
    (the first ``n % size`` ranks get one more).
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if not 0 <= rank < size:
        raise ValueError(f"rank must be in [0, {size}), got {rank}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    stop = start + base + (1 if rank < extra else 0)
    return np.arange(start, stop, dtype=np.int64)


def check_split(split: Split, num_classes: int) -> None:
    """Validate a split; raise DataError naming the offending file.

    Checks: not empty, images ``(N, H, W, C)`` finite float32 in ``[0, 1]``, masks ``(N, H, W)``
    integers matching the images, one name per sample, and every label in
    ``[0, num_classes)``.
    """
    if num_classes < 1:
        raise DataError(f"{split.source}: num_classes must be >= 1, got {num_classes}")
    images, masks, names = split.images, split.masks, split.names
    if images.ndim != 4 or images.shape[0] == 0:
        raise DataError(f"{split.source}: expected a non-empty (N, H, W, C) image array, got "
                        f"shape {tuple(images.shape)}")
    if masks.shape != images.shape[:3]:
        raise DataError(f"{split.source}: masks have shape {tuple(masks.shape)} but images have "
                        f"{tuple(images.shape)}; expected masks of shape {tuple(images.shape[:3])}")
    if len(names) != images.shape[0]:
        raise DataError(f"{split.source}: {len(names)} names for {images.shape[0]} samples")
    if not np.issubdtype(masks.dtype, np.integer):
        raise DataError(f"{split.source}: masks have dtype {masks.dtype}; expected integers")
    for i in range(images.shape[0]):
        image = images[i]
        if not np.all(np.isfinite(image)):
            raise DataError(f"{names[i]}: image holds NaN or infinite values")
        if image.min() < 0.0 or image.max() > 1.0:
            raise DataError(f"{names[i]}: image intensities outside [0, 1] "
                            f"({float(image.min()):g}..{float(image.max()):g})")
        problem = _bad_labels(masks[i], names[i], num_classes)
        if problem is not None:
            raise problem
