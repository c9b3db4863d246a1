"""The ImgMed pipeline: volumes in, a resumable folder of 2D slices out.

Output layout (the ``pairs`` layout training reads)::

    OUT/images/<stem>_z<k>.<fmt>            slice k of volume <stem> (z: the chosen axis)
    OUT/images/<stem>_z<k>_aug<j>.<fmt>     augmented copy j (with --augment N)
    OUT/masks/... the same names            when masks are given
    OUT/manifest.json                       settings and, for every output, its source

Resumable: every file is written atomically (temp + rename) and recorded in the manifest,
which is saved every few outputs. A re-run with the same settings skips outputs the manifest
lists whose files exist, and rewrites the rest under the same names, so nothing is ever
duplicated. A re-run with different settings into the same folder is refused.

Volumes are processed one at a time (one volume in memory), slice by slice. Intensity
statistics for normalisation are taken over the whole volume, so the slices of one volume are
scaled alike. Augmentation is seeded per output (seed, volume, slice, copy), so a resumed run
writes exactly what an uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from autocnnp.components.imgmed import augment as aug
from autocnnp.components.imgmed import io, slicing, transforms
from autocnnp.engine.spec import PreprocessingSpec, spec_to_dict
from autocnnp.errors import DataError

__all__ = ["run_preprocessing", "plan_volumes", "MANIFEST"]

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
_SAVE_EVERY = 25


def plan_volumes(spec: PreprocessingSpec) -> list[tuple[Path, Path | None]]:
    """``(image volume, mask volume or None)`` pairs for ``spec``.

    ``spec.source`` is a NIfTI file, a folder of them, or an MSD task folder (``imagesTr`` and
    ``labelsTr`` are used when ``spec.masks`` is not given). Masks are matched by file name.
    """
    source, masks = Path(spec.source), spec.masks
    if source.is_dir() and (source / "imagesTr").is_dir() and masks is None:
        masks = source / "labelsTr" if (source / "labelsTr").is_dir() else None
        source = source / "imagesTr"
    images = io.list_volumes(source)
    if masks is None:
        return [(image, None) for image in images]
    masks = Path(masks)
    if masks.is_file() or source.is_file():
        if not (masks.is_file() and source.is_file()):
            raise DataError(f"{source} and {masks}: give two files or two folders")
        return [(images[0], io.list_volumes(masks)[0])]
    by_stem = {io.volume_stem(m): m for m in io.list_volumes(masks)}
    pairs = []
    for image in images:
        mask = by_stem.get(io.volume_stem(image))
        if mask is None:
            raise DataError(f"{image}: no mask volume named {io.volume_stem(image)}.nii[.gz] in "
                            f"{masks}", remedy="every volume needs a mask with the same name")
        pairs.append((image, mask))
    return pairs


def _settings(spec: PreprocessingSpec, mask_format: str, augment: int, seed: int
              ) -> dict[str, Any]:
    data = spec_to_dict(spec)
    data.pop("output", None)
    return {**data, "mask_format": mask_format, "augment": augment, "seed": seed}


def _load_manifest(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    if not path.is_file():
        return {"version": MANIFEST_VERSION, "settings": settings, "outputs": {}}
    try:
        manifest = json.loads(path.read_text())
        manifest["outputs"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: unreadable manifest: {exc}",
                        remedy="remove the output folder and run again") from exc
    if manifest.get("settings") != settings:
        old = manifest.get("settings") or {}
        changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        raise DataError(f"{path}: the output folder was made with different settings "
                        f"({', '.join(changed)} changed)",
                        remedy="choose a new output folder or remove this one")
    return manifest


def _save_manifest(path: Path, manifest: dict[str, Any]) -> None:
    io.atomic_write(path, (json.dumps(manifest, indent=1) + "\n").encode())


@dataclasses.dataclass
class _Task:
    image_file: Path
    mask_file: Path | None
    slice_index: int
    copy: int  # 0: the slice itself; j >= 1: augmented copy j
    name: str


def _tasks(pairs: list[tuple[Path, Path | None]], spec: PreprocessingSpec, augment: int,
           depths: dict[Path, int]) -> list[_Task]:
    tasks = []
    for image_file, mask_file in pairs:
        stem = io.volume_stem(image_file)
        indices = slicing.select_slices(depths[image_file], count=spec.slices,
                                        slice_range=spec.slice_range, name=str(image_file))
        for k in indices:
            for j in range(augment + 1):
                suffix = f"_aug{j}" if j else ""
                tasks.append(_Task(image_file, mask_file, int(k), j, f"{stem}_z{int(k):03d}{suffix}"))
    return tasks


def _depth(path: Path, axis: int) -> int:
    import nibabel as nib
    try:
        shape = nib.load(str(path)).shape
    except Exception as exc:
        raise DataError(f"{path}: cannot read NIfTI header: {exc}",
                        remedy="check that the file is a complete .nii or .nii.gz") from exc
    if len(shape) not in (3, 4):
        raise DataError(f"{path}: expected a 3D or 4D volume, got shape {tuple(shape)}")
    if not 0 <= axis < 3:
        raise DataError(f"axis must be 0, 1 or 2, got {axis}")
    return int(shape[axis])


def _volumes(tasks: list[_Task], spec: PreprocessingSpec
             ) -> Iterator[tuple[Path, np.ndarray, np.ndarray | None, list[_Task]]]:
    """Group tasks per volume and load each volume once (one in memory at a time)."""
    order: dict[Path, list[_Task]] = {}
    for task in tasks:
        order.setdefault(task.image_file, []).append(task)
    for image_file, group in order.items():
        volume, _ = io.read_volume(image_file, channel=spec.channel)
        labels = None
        mask_file = group[0].mask_file
        if mask_file is not None:
            from autocnnp.components.datasets import to_labels
            raw, _ = io.read_volume(mask_file, channel=0, what="mask")
            if raw.shape != volume.shape:
                raise DataError(f"{image_file} and {mask_file}: volume shape {volume.shape} does "
                                f"not match mask shape {raw.shape}")
            labels = to_labels(raw, mask_file)
        yield image_file, volume, labels, group


def run_preprocessing(spec: PreprocessingSpec, progress: bool = True, *,
                      augment: int = 0, seed: int = 0,
                      mask_format: str | None = None) -> dict[str, Any]:
    """Run the ImgMed pipeline described by ``spec``; return a summary.

    Args:
        spec: source, output, masks, axis, slices (count) or slice_range, size, normalize,
            format (of images) and channel (of 4D volumes).
        progress: show a rich progress bar.
        augment: augmented copies per slice (0: none), with the thesis's ranges.
        seed: augmentation seed.
        mask_format: ``png`` or ``npy`` (default: ``npy`` for npy images, else ``png``);
            ``jpg`` is refused.

    Returns ``{"output", "manifest", "volumes", "written", "skipped", "total", "image_shape"}``.
    """
    if spec.format not in io.IMAGE_FORMATS:
        raise DataError(f"unknown image format {spec.format!r}; choose one of "
                        f"{', '.join(io.IMAGE_FORMATS)}")
    mask_format = mask_format or ("npy" if spec.format == "npy" else "png")
    if mask_format not in io.MASK_FORMATS:
        raise DataError(f"masks are never written lossy: format {mask_format!r} is not allowed "
                        "for masks; use png or npy", remedy="pass --mask-format png (or npy)")
    transforms.intensity_stats(np.zeros(1), spec.normalize)  # validates the name early
    if augment < 0:
        raise DataError(f"augment must be >= 0, got {augment}")
    if spec.size is not None and spec.size < 1:
        raise DataError(f"size must be a positive integer, got {spec.size}")

    pairs = plan_volumes(spec)
    depths = {image: _depth(image, spec.axis) for image, _ in pairs}
    tasks = _tasks(pairs, spec, augment, depths)
    out = Path(spec.output)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST
    settings = _settings(spec, mask_format, augment, seed)
    manifest = _load_manifest(manifest_path, settings)
    outputs: dict[str, Any] = manifest["outputs"]

    def done(task: _Task) -> bool:
        entry = outputs.get(f"images/{task.name}.{spec.format}")
        return bool(entry) and all((out / rel).is_file()
                                   for rel in (entry["image"], entry.get("mask")) if rel)

    todo = [t for t in tasks if not done(t)]
    summary = {"output": str(out), "manifest": str(manifest_path), "volumes": len(pairs),
               "total": len(tasks), "skipped": len(tasks) - len(todo), "written": 0,
               "image_shape": None}
    volume_index = {image: i for i, (image, _) in enumerate(pairs)}
    with _progress_bar(progress, len(todo)) as advance:
        unsaved = 0
        try:
            for _, volume, labels, group in _volumes(todo, spec):
                stats = transforms.intensity_stats(volume, spec.normalize)
                for task in group:
                    entry = _write_one(task, volume, labels, stats, spec, mask_format, seed,
                                       out, volume_index[task.image_file])
                    outputs[entry["image"]] = entry
                    summary["written"] += 1
                    unsaved += 1
                    if unsaved >= _SAVE_EVERY:
                        _save_manifest(manifest_path, manifest)
                        unsaved = 0
                    advance()
        finally:
            # Also on Ctrl-C or an error: record what is complete, so a re-run resumes there.
            _save_manifest(manifest_path, manifest)
    first = next(iter(outputs.values()), None)
    summary["image_shape"] = first["shape"] if first else None
    return summary


def _write_one(task: _Task, volume: np.ndarray, labels: np.ndarray | None,
               stats: tuple[float, float], spec: PreprocessingSpec, mask_format: str,
               seed: int, out: Path, volume_index: int) -> dict[str, Any]:
    image = transforms.normalize(slicing.take_slice(volume, spec.axis, task.slice_index),
                                 stats=stats)
    mask = None if labels is None else slicing.take_slice(labels, spec.axis, task.slice_index)
    if spec.size is not None:
        image = transforms.resize_image(image, spec.size)
        mask = None if mask is None else transforms.resize_mask(mask, spec.size)
    transform: dict[str, Any] = {"normalize": spec.normalize, "stats": [round(s, 6) for s in stats],
                                 "resize": spec.size}
    if task.copy:
        rng = np.random.default_rng([seed, volume_index, task.slice_index, task.copy])
        image, mask, params = aug.augment_pair(image, mask, rng)
        transform["augment"] = params.to_dict()
    image_rel = f"images/{task.name}.{spec.format}"
    io.atomic_write(out / image_rel, io.encode_image(image, spec.format))
    entry: dict[str, Any] = {"image": image_rel, "source": str(task.image_file),
                             "slice": task.slice_index, "axis": spec.axis,
                             "channel": spec.channel, "shape": list(image.shape),
                             "transform": transform}
    if mask is not None:
        mask_rel = f"masks/{task.name}.{mask_format}"
        io.atomic_write(out / mask_rel, io.encode_mask(mask, mask_format))
        entry.update(mask=mask_rel, mask_source=str(task.mask_file),
                     labels=[int(v) for v in np.unique(mask)])
    return entry


class _progress_bar:
    """A rich progress bar (or nothing) used as ``with _progress_bar(on, total) as advance``."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total
        self._progress = None

    def __enter__(self):  # type: ignore[no-untyped-def]
        if not self.enabled:
            return lambda: None
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn)
        self._progress = Progress(TextColumn("imgmed"), BarColumn(), MofNCompleteColumn(),
                                  TimeRemainingColumn(), transient=False)
        self._progress.__enter__()
        task = self._progress.add_task("slices", total=self.total)
        return lambda: self._progress.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
