"""Apply the trained model of a run to new images or NIfTI volumes.

RUN_DIR is a finished run of either engine (it holds model/, written at the end of training:
a Keras SavedModel, or the torch engine's model.pt rebuilt on the CPU), or a k-fold
group (<split folds="K">) or a group of repeats: then every member's model predicts and the
mean of their softmax outputs gives the labels (an ensemble). INPUT is one
file or a folder (a folder holding images/ uses it) of 2D images (.png, .npy) or NIfTI
volumes (.nii, .nii.gz). OUT is a folder that receives one mask per input, with the same
name, format and geometry:

* 2D image -> a mask of the same height and width (.png as 8-bit labels, .npy as uint8 or
  int32 labels);
* NIfTI volume -> a NIfTI label volume with the same shape (the first three axes) and the
  same affine, predicted slice by slice along the last spatial axis, as the data loader
  cuts volumes for training; a 4D volume gives the channels the model was trained on
  (every modality unless the config's <channels> chose some; --channels overrides).

INPUT may be a Medical Segmentation Decathlon task folder (imagesTr/, labelsTr/,
dataset.json): its unlabelled imagesTs/ cases are predicted (dataset.json's "test" list),
or, with --split NAME, the cases of that split of a case-level split run (RUN_DIR's
splits.json), read from imagesTr/; score those with
`autocnnp evaluate OUT TASK_DIR --splits RUN_DIR --split NAME`.

Images are prepared exactly as for training: intensities min-max normalised to [0, 1] per
image (per volume for NIfTI; float images already in [0, 1] kept), resized to the model's
input size, and the predicted labels resized back by nearest neighbour.

Examples:
  autocnnp predict runs/quickstart data/mni152/test/images preds/
  autocnnp predict runs/brats case_001.nii.gz preds/ --batch-size 16
  autocnnp predict runs/task90-cv Task90/imagesTs preds/   # the k fold models, averaged
  autocnnp predict runs/brats Task01_BrainTumour preds/    # imagesTs of the MSD folder
  autocnnp predict runs/brats Task01_BrainTumour preds/ --split test   # held-out cases
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from autocnnp.errors import AutocnnpError, DataError

HELP = "apply a trained model to images or NIfTI volumes"

IMAGE_SUFFIXES = (".png", ".npy")
NIFTI_SUFFIXES = (".nii.gz", ".nii")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare RUN_DIR, INPUT, OUT and the options."""
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path,
                        help="a finished run directory (holds model/), or a k-fold or repeats "
                             "group (its members' models are ensembled)")
    parser.add_argument("input", metavar="INPUT", type=Path,
                        help="an image or volume, or a folder of them")
    parser.add_argument("out", metavar="OUT", type=Path, help="folder for the predicted masks")
    parser.add_argument("--batch-size", type=int, default=8, metavar="N",
                        help="slices per forward pass (default 8)")
    parser.add_argument("--channels", "--channel", default=None, metavar="C[,C...]",
                        help="channels of 4D NIfTI volumes, by index or by the modality names "
                             "of the MSD dataset.json (default: those the model was trained "
                             "on)")
    parser.add_argument("--split", default=None, metavar="NAME",
                        help="with an MSD task folder as INPUT: predict the cases of this split "
                             "(train, valid, test) of RUN_DIR's splits.json, from imagesTr/, "
                             "instead of imagesTs/")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


# --- inputs ----------------------------------------------------------------------------------

def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(IMAGE_SUFFIXES):
        return "image"
    return None


def is_msd_task(path: Path) -> bool:
    """A Medical Segmentation Decathlon task folder: imagesTr/ beside dataset.json."""
    return (path / "imagesTr").is_dir() and (path / "dataset.json").is_file()


def msd_inputs(task: Path, cases: list[str] | None = None) -> list[Path]:
    """The volumes of an MSD task folder to predict: ``imagesTs/`` (dataset.json's ``test``
    list when it has one), or, given ``cases``, those cases from ``imagesTr/``."""
    from autocnnp.components.datasets import volume_stem

    if cases is not None:
        folder = task / "imagesTr"
        found = {volume_stem(p): p for p in folder.iterdir()
                 if p.is_file() and _kind(p) == "nifti"}
        missing = [case for case in cases if case not in found]
        if missing:
            raise DataError(f"{folder}: no volume for case(s) {', '.join(missing[:5])}",
                            remedy="predict with the task folder the run was trained on")
        return [found[case] for case in cases]
    folder = task / "imagesTs"
    try:
        listed = json.loads((task / "dataset.json").read_text()).get("test") or []
    except (OSError, ValueError, AttributeError):
        listed = []
    files = [(task / entry).resolve() for entry in listed if isinstance(entry, str)]
    if not files and folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.is_file() and _kind(p) == "nifti")
    if not files:
        raise DataError(f"{task}: an MSD task folder without test cases (no imagesTs/ volumes)",
                        remedy="predict held-out training cases with --split test, or give "
                               "a folder of volumes")
    for file in files:
        if not file.is_file():
            raise DataError(f"{file}: listed in {task / 'dataset.json'} but missing")
    return files


def find_inputs(path: Path, cases: list[str] | None = None) -> list[Path]:
    """The files to predict: ``path`` itself, the volumes of an MSD task folder (see
    :func:`msd_inputs`), or the images in a folder (or its images/)."""
    if path.is_dir() and is_msd_task(path):
        return msd_inputs(path, cases)
    if cases is not None:
        raise DataError(f"{path}: --split needs an MSD task folder (imagesTr/ and dataset.json)")
    if path.is_file():
        if _kind(path) is None:
            raise DataError(f"{path}: not a .png, .npy, .nii or .nii.gz file")
        return [path]
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    folder = path / "images" if (path / "images").is_dir() else path
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and _kind(p) is not None)
    if not files:
        raise DataError(f"{folder}: no .png, .npy, .nii or .nii.gz files to predict")
    return files


def output_path(source: Path, out_dir: Path) -> Path:
    """Same file name as the input, in ``out_dir``."""
    return out_dir / source.name


# --- the model -------------------------------------------------------------------------------

def load_run_model(run_dir: Path) -> tuple[Any, dict[str, Any]]:
    """The run's trained model and its ``autocnnp.json`` (input shape, classes): the Keras
    SavedModel of the Horovod engine, or the torch engine's ``model.pt`` in its rebuilt
    architecture (:func:`autocnnp.components.torch_training.load_model`); for a k-fold group
    (or a group of repeats), the :class:`Ensemble` of its members' models."""
    from autocnnp.run_manage.jobs import is_group

    if is_group(run_dir):
        return load_ensemble(run_dir)
    from autocnnp.components.training import MODEL_META

    model_dir = run_dir / "model"
    meta_file = model_dir / MODEL_META
    if not meta_file.is_file():
        raise AutocnnpError(f"{model_dir}: no trained model in this run directory",
                            remedy="predict from a run that finished training "
                                   "(`autocnnp status RUN_DIR`)")
    meta = json.loads(meta_file.read_text())
    if meta.get("engine") == "torch":
        from autocnnp.components.torch_training import load_model

        return load_model(model_dir, meta), meta
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    model = tf.keras.models.load_model(str(model_dir), compile=False)
    return model, meta


class Ensemble:
    """Several models of the same task as one: the mean of their softmax outputs."""

    def __init__(self, models: list[Any], names: list[str]) -> None:
        self.models, self.names = models, names

    def predict(self, images: np.ndarray, batch_size: int = 8, verbose: int = 0) -> np.ndarray:
        total = None
        for model in self.models:
            probs = np.asarray(model.predict(images, batch_size=batch_size, verbose=verbose))
            total = probs if total is None else total + probs
        return total / len(self.models)


def load_ensemble(group: Path) -> tuple[Ensemble, dict[str, Any]]:
    """The models of every member of a group (``group.json``), as one :class:`Ensemble`;
    every member must have finished and share the input shape and the classes."""
    info = json.loads((group / "group.json").read_text())
    models, metas = [], []
    for name in info["members"]:
        model, meta = load_run_model(group / name)
        models.append(model)
        metas.append(meta)
    for name, meta in zip(info["members"][1:], metas[1:]):
        for key in ("input_shape", "num_classes"):
            if meta.get(key) != metas[0].get(key):
                raise AutocnnpError(f"{group / name}: its model has {key} {meta.get(key)}, "
                                    f"{info['members'][0]}'s has {metas[0].get(key)}; the "
                                    f"models of a group cannot be averaged")
    return Ensemble(models, list(info["members"])), metas[0]


def _prepare(image: np.ndarray, shape: tuple[int, int, int], where: Path) -> np.ndarray:
    """``(H, W)``/``(H, W, C)`` in [0, 1] -> the model's ``(h, w, c)``."""
    from autocnnp.components.datasets import resize_image

    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] != shape[2]:
        raise DataError(f"{where}: has {image.shape[-1]} channel(s) but the model was trained "
                        f"on {shape[2]}")
    return resize_image(image.astype(np.float32), (shape[0], shape[1]))


def predict_slices(model: Any, slices: np.ndarray, batch_size: int) -> np.ndarray:
    """Labels ``(N, h, w)`` for prepared slices ``(N, h, w, c)``."""
    probs = model.predict(slices, batch_size=batch_size, verbose=0)
    return np.argmax(probs, axis=-1).astype(np.int32)


def _labels_dtype(num_classes: int) -> type:
    return np.uint8 if num_classes <= 256 else np.int32


# --- one file --------------------------------------------------------------------------------

def predict_image(model: Any, meta: dict[str, Any], source: Path, target: Path,
                  batch_size: int) -> tuple[int, ...]:
    """Predict a 2D image file into ``target``; returns the mask's shape."""
    from autocnnp.components.datasets import normalize_unit, read_image_file, resize_mask

    shape = tuple(meta["input_shape"])
    image = normalize_unit(read_image_file(source), source)
    height, width = image.shape[:2]
    labels = predict_slices(model, _prepare(image, shape, source)[None], batch_size)[0]
    mask = resize_mask(labels, (height, width)).astype(_labels_dtype(meta["num_classes"]))
    if target.suffix.lower() == ".npy":
        np.save(target, mask)
    else:
        from PIL import Image
        Image.fromarray(mask.astype(np.uint8)).save(target)
    return mask.shape


def volume_channels(meta: dict[str, Any], source: Path, wanted: str | None
                    ) -> tuple[int, ...] | None:
    """The channels of ``source`` to feed the model: ``wanted`` (``--channels``: indices or
    the modality names of the MSD dataset.json above the file), else those the model was
    trained on (its ``autocnnp.json``), else, for a model of one channel from before that
    was recorded, channel 0."""
    from autocnnp.components import datasets

    if wanted is not None:
        names = datasets.modality_names(source.parent.parent)
        count = datasets.channel_count(datasets.volume_header_shape(source))
        return datasets.resolve_channels(wanted.replace(",", " ").split(), count, names,
                                         str(source))
    if meta.get("channels") is not None:
        return tuple(int(c) for c in meta["channels"])
    return (0,) if int(meta["input_shape"][-1]) == 1 else None


def predict_volume(model: Any, meta: dict[str, Any], source: Path, target: Path,
                   batch_size: int, channels: str | None = None) -> tuple[int, ...]:
    """Predict a NIfTI volume slice by slice (last spatial axis) into a NIfTI label volume
    with the input's affine, its channels read and normalised as in training (see
    :func:`volume_channels`); returns the volume's shape."""
    import nibabel as nib

    from autocnnp.components.datasets import load_channels, resize_mask

    shape = tuple(meta["input_shape"])
    volume = load_channels(source, volume_channels(meta, source, channels))
    depth = volume.shape[2]
    labels = np.zeros(volume.shape[:3], dtype=_labels_dtype(meta["num_classes"]))
    for start in range(0, depth, batch_size):
        ks = range(start, min(start + batch_size, depth))
        batch = np.stack([_prepare(volume[:, :, k], shape, source) for k in ks])
        for k, pred in zip(ks, predict_slices(model, batch, batch_size)):
            labels[:, :, k] = resize_mask(pred, volume.shape[:2])
    original = nib.load(str(source))
    out = nib.Nifti1Image(labels, original.affine)
    out.header.set_xyzt_units(*original.header.get_xyzt_units())
    nib.save(out, str(target))
    return labels.shape


def _progress(enabled: bool) -> Any:
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), disable=not enabled, transient=False)


def run(args: argparse.Namespace) -> int:
    """Predict every input; prints where the masks went."""
    if args.batch_size < 1:
        raise AutocnnpError(f"--batch-size must be at least 1, got {args.batch_size}")
    from autocnnp.engine.rundir import read_split_cases

    cases = read_split_cases(args.run_dir, args.split) if args.split else None
    inputs = find_inputs(args.input, cases)
    model, meta = load_run_model(args.run_dir)
    if isinstance(model, Ensemble):
        print(f"ensemble of {len(model.models)} models ({', '.join(model.names)}): the mean "
              f"of their softmax outputs")
    args.out.mkdir(parents=True, exist_ok=True)
    with _progress(not args.no_progress) as progress:
        task = progress.add_task("predicting", total=len(inputs))
        for source in inputs:
            target = output_path(source, args.out)
            progress.update(task, description=f"predicting {source.name}")
            if _kind(source) == "nifti":
                predict_volume(model, meta, source, target, args.batch_size, args.channels)
            else:
                predict_image(model, meta, source, target, args.batch_size)
            progress.advance(task)
    print(f"{len(inputs)} mask(s) written to {args.out}")
    return 0
