"""The cheap data checks that ``validate`` runs (and ``run`` before it launches anything).

They look at the folders' roles and at a sample of masks, not at every file: the full scan is
the dataset check of ``run`` (``datasets.load_split``). What they find:

- two splits that are the same folder (a model scored on the data it trained on);
- a split folder of images without labels (the Medical Segmentation Decathlon's
  ``imagesTs``); a folder with no data in it yet is only noted (``run`` refuses it);
- mask labels beyond the declared ``<classes>``, in a sample of each split's masks;
- ``<channels>`` the volumes do not have: an unknown modality name, an index out of range
  (from the first volume's header and ``dataset.json``).

Every finding is a :class:`~autocnnp.errors.ConfigProblem` at the config line of the
element to change; :func:`run_cheap_checks` also says what it sampled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from autocnnp.engine.spec import TrainingSpec
from autocnnp.errors import ConfigProblem, DataError

SPLITS = ("train", "valid", "test")
#: masks read per split: 2D masks are small, label volumes are not
SAMPLE_MASKS = 8
SAMPLE_VOLUMES = 2
_IMAGE_SUFFIXES = (".png", ".npy", ".nii", ".nii.gz")


@dataclass
class DataCheckReport:
    """What the cheap checks found and what they looked at."""

    problems: list[ConfigProblem] = field(default_factory=list)
    sampled: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return "data checks (sampled; run reads every file): " + "; ".join(self.sampled)


def _lines(source: Path) -> dict[str, int | None]:
    """Config lines of ``<data>``, ``<classes>`` and each split's ``<path>``."""
    from autocnnp.engine.xml_loader import load_xml

    lines: dict[str, int | None] = {}
    try:
        task = load_xml(source).getroot().find("task")
    except Exception:  # the config was validated already; lines are a courtesy
        return lines
    data = task.find("data") if task is not None else None
    if data is None:
        return lines
    lines["data"] = data.sourceline
    for name in ("classes", "channels"):
        element = data.find(name)
        lines[name] = element.sourceline if element is not None else data.sourceline
    for split in SPLITS:
        path = data.find(f"{split}/path")
        lines[split] = path.sourceline if path is not None else None
    return lines


def _images_only(folder: Path) -> bool:
    """A folder of image files with no mask folder beside them (MSD's imagesTs)."""
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    return any(p.name.lower().endswith(_IMAGE_SUFFIXES) for p in files)


def _spread(items: list[Path], count: int) -> list[Path]:
    """Up to ``count`` of ``items``, evenly spread (first and last included)."""
    if len(items) <= count:
        return list(items)
    step = (len(items) - 1) / (count - 1)
    return [items[round(i * step)] for i in range(count)]


def _files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.name.lower().endswith(suffixes))


def _split_root(path: Path, split: str) -> Path:
    """``path``, or ``path/<split>`` when only that holds data (as the loader resolves it)."""
    from autocnnp.components import datasets

    try:
        datasets.detect_format(path)
        return path
    except DataError:
        return path / split if (path / split).is_dir() else path


def _mask_files(root: Path, layout: str) -> list[Path]:
    import json

    if layout == "pairs":
        return _files(root / "masks", (".png", ".npy"))
    if layout == "nifti":
        return _files(root / "masks", (".nii", ".nii.gz"))
    try:  # msd: dataset.json's training list, else labelsTr/
        entries = json.loads((root / "dataset.json").read_text()).get("training") or []
        listed = [(root / e["label"]).resolve() for e in entries]
        return [p for p in listed if p.is_file()]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return _files(root / "labelsTr", (".nii", ".nii.gz"))


def _labels(path: Path, layout: str):
    from autocnnp.components import datasets

    if layout == "pairs":
        return datasets.read_mask_file(path)
    volume, _ = datasets.load_volume(path, channel=0, what="mask")
    return datasets.to_labels(volume, path)


def _channels_problem(root: Path, layout: str, wanted: tuple[str, ...]) -> str | None:
    """What is wrong with ``<channels>`` for the volumes of ``root`` (None: nothing), from
    the first image volume's header and dataset.json's modality names."""
    from autocnnp.components import datasets

    images = _files(root / ("imagesTr" if layout == "msd" else "images"), (".nii", ".nii.gz"))
    if not images:
        return None
    try:
        count = datasets.channel_count(datasets.volume_header_shape(images[0]))
        datasets.resolve_channels(wanted, count, datasets.modality_names(root),
                                  str(images[0]))
    except DataError as exc:
        return exc.message
    return None


def run_cheap_checks(spec: TrainingSpec) -> DataCheckReport:
    """Check the roles of the data folders and a sample of masks of every split."""
    import numpy as np

    from autocnnp.components import datasets

    report = DataCheckReport()
    data = spec.data
    lines = _lines(spec.source)
    n = data.num_classes

    def problem(key: str, element: str, message: str) -> None:
        report.problems.append(ConfigProblem(spec.source, lines.get(key) or lines.get("data"),
                                             element, message))

    roots: dict[str, Path] = {}
    for split in SPLITS:
        path = getattr(data, split)
        if path is None or not Path(path).is_dir():
            continue  # validate reports a missing path; demo/preprocessed data comes later
        roots[split] = _split_root(Path(path), split).resolve()
    # a case-level split reads every split from the one folder of cases, by case
    shared = data.cases is not None
    for i, first in enumerate(SPLITS):
        for second in SPLITS[i + 1:]:
            if not shared and first in roots and roots.get(second) == roots[first]:
                problem(second, f"{second}/path",
                        f"the {second} split is the same folder as the {first} split "
                        f"({roots[first]}): the model would be scored on data it "
                        f"{'trained on' if first == 'train' else 'was validated on'}; "
                        f"give each split its own folder")
    sampled_roots: set[Path] = set()
    for split, root in roots.items():
        try:
            found_layout = datasets.detect_format(root)
        except DataError:
            if _images_only(root):
                problem(split, f"{split}/path",
                        f"{root} holds images but no masks: every split needs labels (a test "
                        f"split is scored against them); the Medical Segmentation "
                        f"Decathlon's imagesTs has none, so hold out cases of "
                        f"imagesTr/labelsTr instead")
            else:  # no data there yet (a config shipped without its data): run reports it
                report.sampled.append(f"{split}: no readable data layout yet, not sampled")
            continue
        layout = (found_layout if data.format == "auto"
                  else datasets.FORMAT_ALIASES.get(data.format, data.format))
        if layout not in datasets.FORMATS or root in sampled_roots:
            continue  # the schema reports an unknown format; a repeated folder is reported
        sampled_roots.add(root)
        try:
            masks = _mask_files(root, layout)
        except (OSError, DataError):
            masks = []
        take = _spread(masks, SAMPLE_MASKS if layout == "pairs" else SAMPLE_VOLUMES)
        what = "masks" if layout == "pairs" else "label volumes"
        beyond: dict[int, list[Path]] = {}
        unreadable = 0
        for mask_file in take:
            try:
                labels = _labels(mask_file, layout)
            except DataError as exc:
                problem(split, f"{split}/path", exc.message)
                unreadable += 1
                continue
            for value in np.unique(labels):
                if value < 0 or value >= n:
                    beyond.setdefault(int(value), []).append(mask_file)
        if beyond:
            files = sorted({f for fs in beyond.values() for f in fs})
            labels_found = sorted(beyond)
            remedy = (f"declare {max(labels_found) + 1} classes in <classes> or fix the masks"
                      if max(labels_found) >= n else "class indices must not be negative")
            problem("classes", "classes",
                    f"{split}: {len(files)} of {len(take)} sampled {what} hold labels "
                    f"{labels_found} outside the {n} declared classes 0..{n - 1} "
                    f"({' '.join(data.classes)}), e.g. {files[0]}; {remedy}")
        if data.channels and layout != "pairs" and split in ("train", "valid"):
            channel_problem = _channels_problem(root, layout, data.channels)
            if channel_problem is not None:
                problem("channels", "channels", channel_problem)
        report.sampled.append(f"{split}: {len(take)} of {len(masks)} {what}"
                              + (", with problems" if beyond or unreadable else
                                 f", labels within 0..{n - 1}"))
    return report
