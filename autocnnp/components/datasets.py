"""The one data loader used by training: folders of images and masks, listed once and read
sample by sample (:func:`list_split`, what training streams from), or read whole into
in-memory arrays (:func:`load_split`, ``<data cache="memory">`` and the tools).

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
* 4D volumes (MSD BRATS: ``(H, W, D, modalities)``) give every modality as a channel
  (``(H, W, 4)`` slices for BRATS) unless ``channels`` selects some, by index or by the
  ``modality`` names of ``dataset.json`` (:func:`resolve_channels`); each channel is
  normalised on its own over the volume. Every volume of a split needs the same channels.
* ``image_size`` resizes every slice to ``image_size x image_size``: images bilinearly, masks
  by nearest neighbour so labels stay labels.

Streaming: :func:`epoch_batches` deals each epoch's permutation (a function of the seed and
the epoch) to the ranks, so every rank reads only its own shard, and the steps per epoch are
the same on every rank (:func:`steps_per_epoch` states the rule for the remainder).

Every problem is a :class:`~autocnnp.errors.DataError` naming the file: the listing's problems
before training starts, a file that turns out unreadable when it is read. Only numpy is
imported at module level; nibabel, Pillow and scikit-image are imported when a loader needs
them.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autocnnp.errors import DataError

__all__ = ["Split", "FORMATS", "detect_format", "load_split", "shard_indices", "check_split",
           "SampleRef", "SampleList", "list_split", "steps_per_epoch", "epoch_order",
           "epoch_batches", "InMemorySamples", "choose_cache", "array_bytes", "check_splits",
           "scan_split", "case_of", "list_cases", "open_data_split",
           "read_image_file", "read_mask_file", "resize_image", "resize_mask", "volume_stem",
           "resolve_channels", "modality_names", "load_channels", "volume_header_shape",
           "channel_count", "geometry_problems"]

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


def unit_scale(array: np.ndarray, path: Path | str) -> tuple[float, float] | None:
    """How :func:`normalize_unit` maps ``array`` to ``[0, 1]``: ``(lo, hi)`` of a min-max
    scaling, or None when it is float already within ``[0, 1]`` (kept). Computed once per
    volume, it scales that volume's slices one at a time exactly as the whole volume.
    Raises DataError naming ``path`` for non-numbers, NaN or infinite values."""
    data = np.asarray(array)
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise DataError(f"{path}: image has dtype {data.dtype}; expected numbers")
    # float32 rounding is monotonic: the float32 of the extremes are the float32 extremes,
    # and a NaN or an infinity shows in them
    lo, hi = float(np.float32(data.min())), float(np.float32(data.max()))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise DataError(f"{path}: image holds NaN or infinite values")
    if np.issubdtype(data.dtype, np.floating) and lo >= 0.0 and hi <= 1.0:
        return None
    return lo, hi


def apply_scale(array: np.ndarray, scale: tuple[float, float] | None) -> np.ndarray:
    """``array`` as float32 scaled by ``scale`` (see :func:`unit_scale`)."""
    data = np.asarray(array).astype(np.float32, copy=False)
    if scale is None:
        return data
    lo, hi = scale
    if hi <= lo:
        return np.zeros_like(data, dtype=np.float32)
    return ((data - lo) / (hi - lo)).astype(np.float32)


def normalize_unit(array: np.ndarray, path: Path | str) -> np.ndarray:
    """``array`` as float32 in ``[0, 1]``: kept if already float in range, else min-max scaled."""
    return apply_scale(array, unit_scale(array, path))


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


# --- listing and reading one sample ----------------------------------------------------------

@dataclass(frozen=True)
class SampleRef:
    """One sample on disk: an image file and its mask, and the slice ``z`` of a volume pair."""

    image: Path
    mask: Path
    z: int | None = None

    @property
    def name(self) -> str:
        return str(self.image) if self.z is None else f"{self.image}[z={self.z}]"


def _bad_labels(mask: np.ndarray, where: str, num_classes: int) -> DataError | None:
    if mask.size == 0 or (mask.min() >= 0 and mask.max() < num_classes):
        return None
    bad = [int(v) for v in np.unique(mask) if v < 0 or v >= num_classes]
    return DataError(
        f"{where}: labels {bad} outside the declared classes 0..{num_classes - 1}",
        remedy=f"declare {max(bad) + 1} classes in <data><classes> or fix the mask"
        if max(bad) >= num_classes else "class indices must not be negative")


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


def _open_nifti(path: Path, what: str) -> Any:
    """The nibabel image of ``path`` (header read, pixels not yet); DataError when unreadable."""
    import nibabel as nib
    try:
        return nib.load(str(path))
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such file") from exc
    except Exception as exc:
        raise DataError(f"{path}: cannot read NIfTI {what}: {exc}",
                        remedy="check that the file is a complete .nii or .nii.gz") from exc


def _volume_shape(path: Path, channel: int | None, what: str) -> tuple[int, int, int]:
    """The 3D shape of a volume (channel ``channel`` of a 4D one) from its header alone."""
    shape = tuple(int(s) for s in _open_nifti(path, what).shape)
    if len(shape) == 4:
        channel = 0 if channel is None else channel
        if not 0 <= channel < shape[3]:
            raise _no_channel(path, channel, shape[3])
        shape = shape[:3]
    if len(shape) != 3:
        raise DataError(f"{path}: expected a 3D or 4D volume, got shape {shape}")
    return shape  # type: ignore[return-value]


def load_volume(path: Path, *, channel: int | None = 0, what: str = "image") -> tuple[
        np.ndarray, tuple[float, ...]]:
    """Read a NIfTI volume as a 3D array (channel ``channel`` of a 4D one) and its voxel size.

    Raises DataError naming the file when it is missing, corrupt, or not 3D/4D.
    """
    path = Path(path)
    img = _open_nifti(path, what)
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise DataError(f"{path}: cannot read NIfTI {what}: {exc}",
                        remedy="check that the file is a complete .nii or .nii.gz") from exc
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    if data.ndim == 4:
        if channel is None:
            channel = 0
        if not 0 <= channel < data.shape[3]:
            raise _no_channel(path, channel, data.shape[3])
        data = data[..., channel]
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 3D or 4D volume, got shape {tuple(data.shape)}")
    return data, zooms


def load_channels(path: Path, channels: tuple[int, ...] | None) -> np.ndarray:
    """Read an image volume as ``(H, W, D, C)`` float32, each channel min-max normalised to
    ``[0, 1]`` over the volume on its own (modalities have unrelated scales): the channels
    ``channels`` of a 4D volume (every one when None), or the one channel of a 3D volume.

    Raises DataError naming the file when it is unreadable, not 3D/4D, or lacks a channel.
    """
    path = Path(path)
    img = _open_nifti(path, "image")
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise DataError(f"{path}: cannot read NIfTI image: {exc}",
                        remedy="check that the file is a complete .nii or .nii.gz") from exc
    if data.ndim == 3:
        data = data[..., None]
    if data.ndim != 4:
        raise DataError(f"{path}: expected a 3D or 4D volume, got shape {tuple(data.shape)}")
    wanted = tuple(range(data.shape[3])) if channels is None else tuple(channels)
    for channel in wanted:
        if not 0 <= channel < data.shape[3]:
            raise _no_channel(path, channel, data.shape[3])
    return np.stack([normalize_unit(data[..., c], path) for c in wanted], axis=-1)


def volume_header_shape(path: Path, what: str = "image") -> tuple[int, ...]:
    """The shape of a NIfTI volume from its header alone; DataError when unreadable."""
    return tuple(int(s) for s in _open_nifti(Path(path), what).shape)


def channel_count(shape: tuple[int, ...]) -> int:
    """The channels of a volume of ``shape``: its 4th axis, or 1 for a 3D volume."""
    return int(shape[3]) if len(shape) == 4 else 1


def _uncompressed(path: Path) -> bool:
    """A ``.nii`` file: nibabel maps it, so one slice is read without decoding the volume."""
    return path.name.lower().endswith(".nii")


def _no_channel(path: Path, channel: int, count: int) -> DataError:
    return DataError(f"{path}: channel {channel} does not exist; the volume has {count} "
                     f"channel{'s' if count != 1 else ''} (0..{count - 1})")


def modality_names(root: Path) -> list[str]:
    """The channel names of ``root/dataset.json``'s ``modality`` map (``{"0": "FLAIR", ...}``),
    by index; empty when there is no such file or map."""
    try:
        meta = json.loads((Path(root) / "dataset.json").read_text())
        modality = meta.get("modality") or meta.get("channel_names") or {}
        count = max(int(k) for k in modality) + 1 if modality else 0
        return [str(modality.get(str(i), "")) for i in range(count)]
    except (OSError, ValueError, TypeError, AttributeError):
        return []


def _channel_list(count: int | None, names: list[str]) -> str:
    if names:
        return ", ".join(f"{i} {name}" for i, name in enumerate(names))
    return f"0..{count - 1}" if count else "none"


def resolve_channels(wanted: Any, count: int | None, names: list[str],
                     where: str) -> tuple[int, ...]:
    """Channel indices of ``wanted`` (indices or modality names, case-insensitive) for volumes
    of ``count`` channels named ``names`` (see :func:`modality_names`; ``count`` None: not
    known yet, indices are checked when read). Raises DataError prefixed with ``where`` for a
    name that is not a modality or an index out of range, listing the channels there are."""
    lower = [name.lower() for name in names]
    out: list[int] = []
    for token in wanted:
        text = str(token).strip()
        if text.isdigit():
            index = int(text)
            if count is not None and index >= count:
                raise DataError(f"{where}: channel {index} is out of range; the volumes have "
                                f"{count} channel{'s' if count != 1 else ''}: "
                                f"{_channel_list(count, names)}")
        elif text.lower() in lower:
            index = lower.index(text.lower())
        else:
            import difflib

            close = difflib.get_close_matches(text, names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            known = (f"the modalities of dataset.json are {_channel_list(count, names)}"
                     if names else "there is no dataset.json 'modality' map here: select "
                                   f"channels by index ({_channel_list(count, names)})")
            raise DataError(f"{where}: no channel named {text!r}; {hint}{known}")
        if index in out:
            raise DataError(f"{where}: channel {text!r} is selected twice")
        out.append(index)
    return tuple(out)


def _msd_pairs(root: Path) -> list[tuple[Path, Path]]:
    meta_file = root / "dataset.json"
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{meta_file}: cannot read dataset.json: {exc}") from exc
    entries = meta.get("training") if isinstance(meta, dict) else None
    if not entries:
        return _matched(root / "imagesTr", root / "labelsTr", _NIFTI_SUFFIXES)
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
    return pairs


def _volume_refs(root: Path, pairs: list[tuple[Path, Path]],
                 wanted: Any) -> tuple[list[SampleRef], tuple[int, ...] | None]:
    """One reference per slice, from the volumes' headers (no pixels are read), and the
    channel indices ``wanted`` stands for (every channel when None)."""
    refs = []
    first: tuple[Path, int] | None = None
    channels: tuple[int, ...] | None = None
    for image_file, mask_file in pairs:
        full = volume_header_shape(image_file)
        count = channel_count(full)
        if first is None:
            first = (image_file, count)
            channels = tuple(range(count)) if wanted is None else resolve_channels(
                wanted, count, modality_names(root), str(image_file))
        elif count != first[1]:
            raise DataError(f"{image_file} has {count} channel(s) but {first[0]} has "
                            f"{first[1]}; every volume of a split needs the same channels")
        shape = full[:3]
        if len(full) not in (3, 4):
            raise DataError(f"{image_file}: expected a 3D or 4D volume, got shape {full}")
        mask_shape = _volume_shape(mask_file, 0, "mask")
        if shape != mask_shape:
            raise _shape_mismatch(image_file, mask_file, shape, mask_shape, what="volume")
        refs += [SampleRef(image_file, mask_file, k) for k in range(shape[2])]
    return refs, channels


def _list_refs(root: Path, fmt: str, wanted: Any, only: set[str] | None = None,
               case_id: str | None = None) -> tuple[list[SampleRef], tuple[int, ...] | None]:
    """Every sample of the folder, or those of the cases ``only`` (volumes of other cases
    are not even opened), and the channel indices to read (None: a 2D image's own)."""
    if fmt == "pairs":
        refs = [SampleRef(i, m) for i, m in _matched(root / "images", root / "masks",
                                                     _PAIR_SUFFIXES)]
        channels = None if wanted is None else resolve_channels(
            wanted, None, modality_names(root), str(root))
        return (refs if only is None else [r for r in refs if case_of(r, case_id) in only],
                channels)
    pairs = _matched(root / "images", root / "masks", _NIFTI_SUFFIXES) if fmt == "nifti" \
        else _msd_pairs(root)
    if only is not None:
        pairs = [(i, m) for i, m in pairs if volume_stem(i) in only]
    return _volume_refs(root, pairs, wanted)


class SampleList:
    """A split's samples listed once (file pairs, or (volume, slice) pairs from the headers),
    read one at a time on demand: memory follows what is read, not the split.

    Made by :func:`list_split`. :meth:`read` returns what :func:`load_split` would hold for
    that sample, with the same checks and messages. Volumes are normalised per volume: the
    last volume pair read is kept (one volume's memory), so reading a volume's slices in order
    decodes it once; random access decodes a volume per slice.
    """

    #: the exception a read raised inside a tf.data pipeline (see training.reading_errors)
    failure: BaseException | None = None

    def __init__(self, root: Path, fmt: str, refs: list[SampleRef], *, num_classes: int,
                 image_size: int | None, channels: tuple[int, ...] | None, split: str,
                 cases: tuple[str, ...] | None = None, case_id: str | None = None) -> None:
        self.root, self.format, self.refs = root, fmt, refs
        self.num_classes, self.image_size = num_classes, image_size
        #: channel indices read (volumes: resolved when listed; 2D files: None, all of them)
        self.channels, self.split = channels, split
        self.cases, self.case_id = cases, case_id
        self._volume: tuple[Path, np.ndarray, np.ndarray] | None = None
        #: per image volume, each channel's scale (see unit_scale), computed once
        self._scales: dict[Path, list[tuple[float, float] | None]] = {}
        self._first_shape: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.refs)

    @property
    def names(self) -> list[str]:
        return [ref.name for ref in self.refs]

    @property
    def case_ids(self) -> list[str]:
        """The case of each sample (see :func:`case_of`)."""
        return [case_of(ref, self.case_id) for ref in self.refs]

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of every image, from the first sample (the only one read for it)."""
        if self._first_shape is None:
            self._first_shape = tuple(int(s) for s in self.read(0)[0].shape)
        return self._first_shape  # type: ignore[return-value]

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``index`` as an ``(H, W, C)`` float32 image in [0, 1] and an ``(H, W)``
        int32 mask; DataError naming the file for anything :func:`load_split` refuses."""
        ref = self.refs[index]
        if ref.z is None:
            image, mask = self._read_pair(ref)
        elif _uncompressed(ref.image) and _uncompressed(ref.mask):
            image, mask = self._read_slice(ref)
        else:
            volume, labels = self._read_volume(ref)
            image, mask = volume[:, :, ref.z], labels[:, :, ref.z]
        if image.ndim == 2:
            image = image[..., None]
        if ref.z is None and self.channels is not None:
            for channel in self.channels:
                if channel >= image.shape[-1]:
                    raise _no_channel(ref.image, channel, image.shape[-1])
            image = image[..., list(self.channels)]
        if self.image_size is not None:
            image = resize_image(image, self.image_size)
            mask = resize_mask(mask, self.image_size)
        return image.astype(np.float32, copy=False), mask.astype(np.int32, copy=False)

    def read_batch(self, indices: Any) -> tuple[np.ndarray, np.ndarray]:
        """Samples ``indices`` stacked; every one must have the first sample's shape."""
        images, masks = [], []
        for i in indices:
            image, mask = self.read(int(i))
            if image.shape != self.sample_shape:
                raise _not_uniform(self.root, self.refs[int(i)].name, image.shape,
                                   self.refs[0].name, self.sample_shape)
            images.append(image)
            masks.append(mask)
        return np.stack(images), np.stack(masks)

    def _read_pair(self, ref: SampleRef) -> tuple[np.ndarray, np.ndarray]:
        image = read_image_file(ref.image)
        mask = read_mask_file(ref.mask)
        if image.shape[:2] != mask.shape:
            raise _shape_mismatch(ref.image, ref.mask, image.shape[:2], mask.shape)
        problem = _bad_labels(mask, str(ref.mask), self.num_classes)
        if problem is not None:
            raise problem
        return normalize_unit(image, ref.image), mask

    def _read_slice(self, ref: SampleRef) -> tuple[np.ndarray, np.ndarray]:
        """Slice ``ref.z`` of uncompressed volumes, read alone (memory-mapped); the image's
        scales come from the whole volume once. Labels are checked slice by slice."""
        image_proxy = _open_nifti(ref.image, "image").dataobj
        mask_proxy = _open_nifti(ref.mask, "mask").dataobj
        if tuple(image_proxy.shape[:3]) != tuple(mask_proxy.shape[:3]):
            raise _shape_mismatch(ref.image, ref.mask, image_proxy.shape[:3],
                                  mask_proxy.shape[:3], what="volume")
        channels = self.channels if len(image_proxy.shape) == 4 else (0,)
        try:
            if ref.image not in self._scales:
                whole = np.asanyarray(image_proxy)
                whole = whole[..., None] if whole.ndim == 3 else whole
                self._scales[ref.image] = [unit_scale(whole[..., c], ref.image)
                                           if c < whole.shape[3] else None
                                           for c in range(whole.shape[3])]
                del whole
            plane = np.asarray(image_proxy[:, :, ref.z])
            mask = np.asarray(mask_proxy[:, :, ref.z] if len(mask_proxy.shape) == 3
                              else mask_proxy[:, :, ref.z, 0])
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"{ref.image}: cannot read NIfTI slice {ref.z}: {exc}",
                            remedy="check that the file is complete") from exc
        plane = plane[..., None] if plane.ndim == 2 else plane
        scales = self._scales[ref.image]
        for channel in channels:
            if channel >= plane.shape[-1]:
                raise _no_channel(ref.image, channel, plane.shape[-1])
        image = np.stack([apply_scale(plane[..., c], scales[c]) for c in channels], axis=-1)
        mask = to_labels(mask, ref.mask)
        problem = _bad_labels(mask, str(ref.mask), self.num_classes)
        if problem is not None:
            raise problem
        return image, mask

    def _read_volume(self, ref: SampleRef) -> tuple[np.ndarray, np.ndarray]:
        if self._volume is not None and self._volume[0] == ref.image:
            return self._volume[1], self._volume[2]
        self._volume = None  # never hold two volumes
        volume = load_channels(ref.image, self.channels)
        labels, _ = load_volume(ref.mask, channel=0, what="mask")
        if volume.shape[:3] != labels.shape:
            raise _shape_mismatch(ref.image, ref.mask, volume.shape[:3], labels.shape,
                                  what="volume")
        labels = to_labels(labels, ref.mask)
        problem = _bad_labels(labels, str(ref.mask), self.num_classes)
        if problem is not None:
            raise problem
        self._volume = (ref.image, volume, labels)
        return volume, labels

    def check_headers(self) -> None:
        """Check what the file headers tell without reading pixels: for 2D pairs, that image
        and mask have the same size and, without ``image_size``, that every sample has the
        first one's size; for volumes (shapes and channels were checked when listed), that
        image and mask have the same spacing and affine (:func:`geometry_problems`); then
        read the first sample."""
        problems = geometry_problems(self)
        if problems:
            raise problems[0]
        first: tuple[tuple[int, ...], str] | None = None
        for ref in self.refs if self.format == "pairs" else ():
            image_shape = _header_shape(ref.image, "image")
            mask_shape = _header_shape(ref.mask, "mask")
            if image_shape is None or mask_shape is None:
                continue
            if image_shape[:2] != mask_shape[:2]:
                raise _shape_mismatch(ref.image, ref.mask, image_shape[:2], mask_shape[:2])
            if self.image_size is None:
                if first is None:
                    first = (image_shape[:2], ref.name)
                elif image_shape[:2] != first[0]:
                    raise _not_uniform(self.root, ref.name, image_shape[:2], first[1],
                                       first[0], what="size")
        self.read(0)


def geometry_problems(samples: "SampleList") -> list[DataError]:
    """Every volume pair of ``samples`` whose image and mask headers disagree on where the
    voxels are: the voxel spacing, else the affine (origin, orientation). Headers only, no
    pixels; an unreadable header is left for the read to name."""
    problems: list[DataError] = []
    seen: set[Path] = set()
    for ref in samples.refs:
        if ref.z is None or ref.image in seen:
            continue
        seen.add(ref.image)
        try:
            image, mask = _open_nifti(ref.image, "image"), _open_nifti(ref.mask, "mask")
        except DataError:
            continue
        image_zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
        mask_zooms = tuple(float(z) for z in mask.header.get_zooms()[:3])
        if not np.allclose(image_zooms, mask_zooms, rtol=1e-3, atol=1e-5):
            problems.append(DataError(
                f"{ref.image} and {ref.mask}: image voxel spacing "
                f"{_mm(image_zooms)} does not match mask spacing {_mm(mask_zooms)}",
                remedy="resample the mask onto the image grid, or fix the header that is "
                       "wrong"))
        elif not np.allclose(image.affine, mask.affine, rtol=1e-3, atol=1e-3):
            moved = float(np.abs(image.affine[:3, 3] - mask.affine[:3, 3]).max())
            how = f"origins {moved:.3g} mm apart" if moved > 1e-3 else "orientations differ"
            problems.append(DataError(
                f"{ref.image} and {ref.mask}: image and mask affines differ (same spacing, "
                f"{how})",
                remedy="the mask must be on the image's grid: resample it, or fix the header "
                       "that is wrong"))
    return problems


def _mm(zooms: tuple[float, ...]) -> str:
    return "x".join(f"{z:g}" for z in zooms) + " mm"


def _header_shape(path: Path, what: str) -> tuple[int, ...] | None:
    """``(H, W, ...)`` from a ``.npy`` or image header (None where the header cannot tell:
    a bad header is left for the full read to name)."""
    try:
        if path.suffix.lower() == ".npy":
            with open(path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                shape = np.lib.format._read_array_header(fh, version)[0]
            shape = tuple(int(s) for s in shape)
            return shape[:2] if len(shape) in (2, 3) else None
        from PIL import Image
        with Image.open(path) as img:  # lazy: reads the header only
            return (img.size[1], img.size[0])
    except Exception as exc:
        raise DataError(f"{path}: cannot read {what}: {exc}",
                        remedy="re-export the file or remove it from the folder") from exc


def _not_uniform(root: Path, name: str, shape: tuple, first_name: str, first_shape: tuple,
                 what: str | None = None) -> DataError:
    if what is None:
        what = "channels" if tuple(shape[:2]) == tuple(first_shape[:2]) else "size"
    return DataError(f"{root}: {name} has shape {tuple(shape)} but {first_name} has "
                     f"{tuple(first_shape)}; every sample needs the same {what}",
                     remedy="set image_size in <data> to resize every slice"
                     if what == "size" else None)


def list_split(path: Path, *, format: str = "auto", num_classes: int,
               image_size: int | None = None, split: str = "train",
               channels: Any = None, cases: Any = None,
               case_id: str | None = None) -> SampleList:
    """List one split's samples without reading their pixels (volumes: headers only).

    Arguments as for :func:`load_split`; ``cases`` (case ids, see :func:`case_of` with the
    rule ``case_id``) keeps only the samples of those cases, in the folder's order (a
    case-level split of one folder of cases). Raises DataError for what the listing shows: a
    missing folder, an unknown layout, an image without a mask, an unreadable volume header,
    image and mask volumes of different shapes, a channel that does not exist, an empty
    split, a case of ``cases`` the folder does not hold, a channel of ``channels`` the
    volumes do not have (or volumes with different channel counts).
    """
    root = _resolve(Path(path), split)
    fmt = detect_format(root) if format == "auto" else FORMAT_ALIASES.get(format, format)
    if fmt not in FORMATS:
        raise DataError(f"{root}: unknown data format {format!r}; known: auto, "
                        f"{', '.join(FORMATS)}")
    if image_size is not None and image_size < 1:
        raise DataError(f"{root}: image_size must be a positive integer, got {image_size}")
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder")
    if num_classes < 1:
        raise DataError(f"{root}: num_classes must be >= 1, got {num_classes}")
    if cases is not None:
        refs, resolved = _list_refs(root, fmt, channels, only=set(cases), case_id=case_id)
        found = {case_of(ref, case_id) for ref in refs}
        missing = sorted(set(cases) - found)
        if missing:
            raise DataError(f"{root}: the {split} split names case(s) {', '.join(missing[:5])}"
                            f"{' ...' if len(missing) > 5 else ''} that this folder does not "
                            f"hold", remedy="the split (splits.json) was drawn from another "
                                            "folder of cases; draw it again or restore the cases")
        cases = tuple(cases)
    else:
        refs, resolved = _list_refs(root, fmt, channels)
    if not refs:
        raise DataError(f"{root}: the {split} split is empty")
    return SampleList(root, fmt, refs, num_classes=num_classes, image_size=image_size,
                      channels=resolved, split=split, cases=cases, case_id=case_id)


# --- cases -----------------------------------------------------------------------------------

def case_of(ref: SampleRef, case_id: str | None = None) -> str:
    """The case a sample belongs to: a volume's file name without suffix; for a 2D file, the
    first group (or the whole match) of the regular expression ``case_id`` searched in its
    name without suffix, or that name itself without a rule (each file its own case).
    Raises DataError naming the file when the rule does not match it."""
    stem = volume_stem(ref.image)
    if ref.z is not None or not case_id:
        return stem
    match = re.search(case_id, stem)
    if match is None:
        raise DataError(f"{ref.image}: the case_id rule {case_id!r} does not match "
                        f"{stem!r}", remedy="write a rule that matches every file name, e.g. "
                                            r"'^(.+)_\d+$' for CASE_SLICE.npy")
    return match.group(1) if match.groups() else match.group(0)


def list_cases(path: Path, *, format: str = "auto", case_id: str | None = None,
               stratify: str | None = None) -> tuple[list[str], dict[str, str] | None]:
    """The case ids of a folder of cases (sorted) and, with ``stratify``, each case's value of
    that field in ``dataset.json`` (its ``training`` entries: the case is the stem of an
    entry's ``image``, or its ``case``). Only file names are listed, no header is read.
    Raises DataError naming the folder or dataset.json."""
    root = Path(path)
    fmt = detect_format(root) if format == "auto" else FORMAT_ALIASES.get(format, format)
    if fmt == "msd":
        pairs = _msd_pairs(root)
    else:
        suffixes = _PAIR_SUFFIXES if fmt == "pairs" else _NIFTI_SUFFIXES
        pairs = _matched(root / "images", root / "masks", suffixes)
    z = None if fmt == "pairs" else 0
    ids = sorted({case_of(SampleRef(image, mask, z), case_id) for image, mask in pairs})
    if not stratify:
        return ids, None
    return ids, _strata(root, ids, stratify)


def _strata(root: Path, ids: list[str], field: str) -> dict[str, str]:
    meta_file = root / "dataset.json"
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{meta_file}: cannot read the stratification field {field!r}: {exc}",
                        remedy="stratify needs a dataset.json whose 'training' entries hold "
                               "the field") from exc
    values: dict[str, str] = {}
    for entry in (meta.get("training") or []) if isinstance(meta, dict) else []:
        if not isinstance(entry, dict):
            continue
        case = entry.get("case") or (volume_stem(Path(entry["image"])) if entry.get("image")
                                     else None)
        if case is not None and field in entry:
            values[str(case)] = str(entry[field])
    missing = [case for case in ids if case not in values]
    if missing:
        raise DataError(f"{meta_file}: no {field!r} for case(s) {', '.join(missing[:5])}"
                        f"{' ...' if len(missing) > 5 else ''}",
                        remedy=f"give every 'training' entry a {field!r} field, or drop "
                               f"stratify")
    return values


def load_split(path: Path, *, format: str = "auto", num_classes: int,
               image_size: int | None = None, split: str = "train", channels: Any = None,
               cases: Any = None, case_id: str | None = None) -> Split:
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
        channels: which channels to use (indices, or modality names of dataset.json; see
            :func:`resolve_channels`); None: every channel of 4D volumes and 2D images.

    Raises DataError for anything that would make training fail or lie. Training streams
    instead (:func:`list_split`) unless ``<data cache="memory">``.
    """
    samples = list_split(path, format=format, num_classes=num_classes, image_size=image_size,
                         split=split, channels=channels, cases=cases, case_id=case_id)
    images, masks = [], []
    for i in range(len(samples)):
        image, mask = samples.read(i)
        images.append(image)
        masks.append(mask)
    names = samples.names
    for image, name in zip(images, names):
        if image.shape != images[0].shape:
            raise _not_uniform(samples.root, name, image.shape, names[0], images[0].shape)
    result = Split(images=np.stack(images), masks=np.stack(masks), names=names,
                   source=samples.root)
    check_split(result, num_classes)
    return result


# --- the order of an epoch -------------------------------------------------------------------

def steps_per_epoch(n: int, size: int, batch_size: int) -> int:
    """Training steps per epoch, the same on every rank (computed from the global count).

    The rule: each epoch's permutation is dealt round-robin to the ranks (shards of
    ``n // size`` or ``n // size + 1`` samples), and every rank cuts its shard into this many
    batches of near-equal size, at most ``batch_size``: ``ceil(ceil(n / size) / batch_size)``.
    Every sample is used exactly once per epoch. The one exception is a batch size of 1 with
    ``n`` not a multiple of ``size``: then a rank cannot make one more batch than another,
    and the ``n % size`` samples dealt last are left out of that epoch (other ones each epoch,
    since the order is reshuffled).
    """
    if size < 1 or batch_size < 1:
        raise ValueError(f"size and batch_size must be >= 1, got {size}, {batch_size}")
    if n < size:
        raise ValueError(f"{n} samples for {size} ranks: every rank needs at least one")
    return min(math.ceil(math.ceil(n / size) / batch_size), n // size)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of ``range(n)`` for ``epoch``: a function of the seed and the epoch
    only, so every rank computes the same one and a resumed run repeats it."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


def epoch_batches(n: int, rank: int, size: int, batch_size: int, seed: int,
                  epoch: int) -> list[np.ndarray]:
    """The sample indices of each batch rank ``rank`` trains on in ``epoch``
    (see :func:`steps_per_epoch` for the rule)."""
    steps = steps_per_epoch(n, size, batch_size)
    shard = epoch_order(n, seed, epoch)[rank::size][: steps * batch_size]
    return np.array_split(shard, steps)

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


# --- holding a split in memory ---------------------------------------------------------------

#: ``<data cache="auto">`` holds the training and validation arrays in memory up to this size
AUTO_MEMORY_BYTES = 256 * 2**20


class InMemorySamples:
    """A whole split read into memory once, with :class:`SampleList`'s reading interface
    (``<data cache="memory">``)."""

    failure: BaseException | None = None

    def __init__(self, split: Split, channels: tuple[int, ...] | None = None) -> None:
        self.split = split
        self.root = split.source
        self.channels = channels

    @classmethod
    def read_all(cls, samples: SampleList) -> "InMemorySamples":
        split = load_split(samples.root, format=samples.format,
                           num_classes=samples.num_classes, image_size=samples.image_size,
                           split=samples.split, channels=samples.channels,
                           cases=samples.cases, case_id=samples.case_id)
        return cls(split, samples.channels)

    def __len__(self) -> int:
        return len(self.split)

    @property
    def names(self) -> list[str]:
        return self.split.names

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.split.images.shape[1:])  # type: ignore[return-value]

    def read_batch(self, indices: Any) -> tuple[np.ndarray, np.ndarray]:
        indices = np.asarray(indices, dtype=np.int64)
        return self.split.images[indices], self.split.masks[indices]


def array_bytes(samples: int, shape: tuple[int, ...]) -> int:
    """Bytes of ``samples`` float32 images of ``shape`` (H, W, C) and their int32 masks."""
    h, w, c = (tuple(shape) + (1,))[:3]
    return int(samples) * h * w * (4 * c + 4)


def choose_cache(requested: str, samples: int, shape: tuple[int, ...]) -> tuple[str, str]:
    """``(cache, why)``: ``memory`` or ``none`` for ``<data cache=requested>``, and the reason
    to log. ``auto`` takes memory when the arrays fit in :data:`AUTO_MEMORY_BYTES`."""
    size = array_bytes(samples, shape)
    mib = f"{size / 2**20:.1f} MiB for {samples} samples of {tuple(shape)}"
    if requested in ("memory", "none"):
        return requested, f'<data cache="{requested}"> in the config; the arrays would take {mib}'
    if size <= AUTO_MEMORY_BYTES:
        return "memory", (f"auto: the arrays take {mib}, within "
                          f"{AUTO_MEMORY_BYTES // 2**20} MiB per rank")
    return "none", (f"auto: the arrays would take {mib}, more than "
                    f"{AUTO_MEMORY_BYTES // 2**20} MiB per rank: each rank streams its shard")


def check_splits(data: Any) -> None:
    """What ``autocnnp run`` checks before launching, without reading whole splits: every
    configured split of ``data`` (a :class:`~autocnnp.engine.spec.DataSpec`) is listed
    (image/mask pairing, volume headers), 2D headers are compared
    (:meth:`SampleList.check_headers`) and the first sample is read. Memory stays flat
    whatever the size of the data; raises DataError naming the file."""
    for split in ("train", "valid", "test"):
        samples = open_data_split(data, split)
        if samples is not None:
            samples.check_headers()


def open_data_split(data: Any, split: str) -> SampleList | None:
    """:func:`list_split` of one split of a :class:`~autocnnp.engine.spec.DataSpec` (None when
    the config has none): its folder, or, after a case-level split was drawn, the cases of
    that split in the folder of cases."""
    path = getattr(data, split)
    if path is None:
        return None
    cases = (data.cases or {}).get(split) if getattr(data, "cases", None) is not None else None
    if getattr(data, "cases", None) is not None and cases is None:
        return None
    rule = data.split.case_id if getattr(data, "split", None) is not None else None
    return list_split(path, format=data.format, num_classes=data.num_classes,
                      image_size=data.image_size, split=split, cases=cases, case_id=rule,
                      channels=getattr(data, "channels", None))


def scan_split(samples: SampleList, progress: Any = None) -> tuple[list[DataError], list[str]]:
    """Check the volumes' headers (:func:`geometry_problems`), read every sample of
    ``samples`` once, one at a time (memory stays flat), and return every problem (not only
    the first) as DataErrors naming their file, and notes: masks
    holding only background. A volume that fails is reported once, not once per slice.
    ``progress(done, total)`` is called along the way."""
    problems: list[DataError] = geometry_problems(samples)
    notes: list[str] = []
    seen: set[str] = set()
    first: tuple[tuple[int, ...], str] | None = None
    for i, ref in enumerate(samples.refs):
        if progress is not None:
            progress(i, len(samples))
        try:
            image, mask = samples.read(i)
        except DataError as exc:
            if exc.message not in seen:
                seen.add(exc.message)
                problems.append(exc)
            continue
        if first is None:
            first = (image.shape, ref.name)
        elif image.shape != first[0]:
            problems.append(_not_uniform(samples.root, ref.name, image.shape, first[1],
                                         first[0]))
        if not mask.any():
            notes.append(f"{ref.mask if ref.z is None else ref.name}: empty mask "
                         f"(background only)")
    if progress is not None:
        progress(len(samples), len(samples))
    return problems, notes
