"""SegEval: segmentation metrics from the confusion matrix, plus HD95 (thesis 3.3.2).

Definitions (``n_ij``: pixels of ground-truth class ``i`` predicted as ``j``; ``t_i = sum_j
n_ij``; ``TP_i = n_ii``, ``FN_i = t_i - n_ii``, ``FP_i = sum_j n_ji - n_ii``, ``TN_i`` the
rest):

* Dice_i = 2 n_ii / (2 n_ii + sum_{j!=i} n_ij + sum_{j!=i} n_ji)   (= F1 of class i)
* IoU_i = n_ii / (t_i + sum_j n_ji - n_ii)                        (= Jaccard of class i)
* accuracy_i = n_ii / t_i                                          (= sensitivity, recall)
* sensitivity_i = TP / (TP + FN); specificity_i = TN / (TN + FP)
* pixel accuracy PA = sum_i n_ii / sum_i t_i
* mean accuracy MA, mean Dice, mean IoU = the average of the per-class values
* frequency-weighted IoU = (sum_k t_k)^-1 sum_i t_i IoU_i
* HD95_i: the 95th percentile of the symmetric surface distances between the class-i regions
  of prediction and ground truth: surfaces are the voxels removed by one binary erosion
  (connectivity 1), distances come from ``scipy.ndimage.distance_transform_edt`` with the
  voxel spacing, so HD95 is in physical units (mm for NIfTI, pixels for 2D files). This is the
  definition of ``medpy.metric.binary.hd95``.

Empty classes (a class that occurs neither in the ground truth nor in the prediction):
every per-class value is NaN (undefined, not 0 or 1), and the class is left out of the class
means (means are ``nanmean`` over the classes). A class that occurs in only one of them scores
Dice = IoU = 0 and counts in the means. ``accuracy_i``/``sensitivity_i`` need ``t_i > 0``:
for a class absent from the ground truth they are NaN and MA leaves the class out.

HD95 when one side is empty: HD95 of one item (a slice or a volume) is ``inf`` when exactly
one of prediction and ground truth holds the class, and NaN when neither does.

Accumulating many items (slices or volumes): the overlap metrics come from the *sum* of the
confusion matrices (each pixel weighs the same, as in the thesis); HD95 is computed per item
and per class, then averaged over the items where both sides hold the class. Items where only
one side holds it (HD95 = inf) are left out of that average and counted in
``per_class[c]["hd95_missing"]`` (their failure shows in Dice). The mean HD95 is averaged over
the foreground classes 1..n-1 (background's "surface" is the union of all others).

:meth:`SegEvalResult.to_dict` is JSON-ready: NaN becomes ``null`` and infinity ``"inf"``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from autocnnp.components.datasets import read_mask_file, to_labels, volume_stem
from autocnnp.engine.rundir import atomic_write
from autocnnp.errors import DataError

__all__ = ["confusion_matrix", "metrics_from_confusion", "hausdorff_distance",
           "SegEvalResult", "SegEvaluator", "evaluate_arrays", "evaluate_paths",
           "iter_mask_pairs", "write_overlays", "write_json", "write_csv", "PER_CLASS_METRICS",
           "SELECTABLE_METRICS", "columns_for", "per_case_results", "write_per_case_csv"]

#: per-class metrics, in table order.
PER_CLASS_METRICS = ("dice", "iou", "accuracy", "sensitivity", "specificity", "hd95")
#: summary metrics, in table order.
MEAN_METRICS = ("pixel_accuracy", "mean_accuracy", "mean_dice", "mean_dice_foreground",
                "mean_iou", "fw_iou", "mean_sensitivity", "mean_specificity", "mean_hd95")
#: the names of ``<evaluation><property name="metrics">``, each with the per-class columns
#: and the summary values it stands for in :meth:`SegEvalResult.table`.
SELECTABLE_METRICS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "dice": (("dice",), ("mean_dice", "mean_dice_foreground")),
    "pixel_accuracy": ((), ("pixel_accuracy",)),
    "mean_accuracy": (("accuracy",), ("mean_accuracy",)),
    "mean_iou": (("iou",), ("mean_iou",)),
    "fw_iou": ((), ("fw_iou",)),
    "sensitivity": (("sensitivity",), ("mean_sensitivity",)),
    "specificity": (("specificity",), ("mean_specificity",)),
    "hd95": (("hd95",), ("mean_hd95",)),
}


def columns_for(metrics: Sequence[str] | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The per-class columns and summary keys that the selected metric names stand for, in
    table order (:data:`PER_CLASS_METRICS`, :data:`MEAN_METRICS`); ``None`` selects all.

    Raises ValueError for a name not in :data:`SELECTABLE_METRICS`.
    """
    if metrics is None:
        return PER_CLASS_METRICS, MEAN_METRICS
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    unknown = [m for m in metrics if m not in SELECTABLE_METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(map(repr, unknown))}; choose from "
                         f"{', '.join(SELECTABLE_METRICS)}")
    per = {c for m in metrics for c in SELECTABLE_METRICS[m][0]}
    means = {k for m in metrics for k in SELECTABLE_METRICS[m][1]}
    return (tuple(c for c in PER_CLASS_METRICS if c in per),
            tuple(k for k in MEAN_METRICS if k in means))


# --- confusion matrix and overlap metrics ---------------------------------------------------

def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """The ``(num_classes, num_classes)`` int64 matrix ``n_ij`` (rows: truth, columns: prediction).

    Labels must be integers in ``[0, num_classes)``; ValueError otherwise (the path-level
    functions turn that into a DataError naming the file).
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth shape {gt.shape} != prediction shape {pred.shape}")
    g = gt.ravel().astype(np.int64, copy=False)
    p = pred.ravel().astype(np.int64, copy=False)
    if g.size and (min(g.min(), p.min()) < 0 or max(g.max(), p.max()) >= num_classes):
        bad = sorted({int(v) for v in np.unique(np.concatenate([g, p]))
                      if v < 0 or v >= num_classes})
        raise ValueError(f"labels {bad} outside 0..{num_classes - 1}")
    counts = np.bincount(g * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


def metrics_from_confusion(cm: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Per-class arrays and summary values of the overlap metrics (module docstring formulas)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    t = cm.sum(axis=1)          # t_i: ground-truth pixels of class i
    predicted = cm.sum(axis=0)  # sum_j n_ji
    fn, fp = t - tp, predicted - tp
    total = cm.sum()
    tn = total - tp - fn - fp
    iou = _div(tp, t + predicted - tp)
    per = {
        "dice": _div(2 * tp, 2 * tp + fn + fp),
        "iou": iou,
        "accuracy": _div(tp, t),
        "sensitivity": _div(tp, tp + fn),
        "specificity": _div(tn, tn + fp),
        "support": t,
    }
    fw = float(np.sum(t[t > 0] * iou[t > 0]) / total) if total > 0 else math.nan
    means = {
        "pixel_accuracy": float(tp.sum() / total) if total > 0 else math.nan,
        "mean_accuracy": _nanmean(per["accuracy"]),
        "mean_dice": _nanmean(per["dice"]),
        "mean_dice_foreground": _nanmean(per["dice"][1:]) if len(tp) > 1 else math.nan,
        "mean_iou": _nanmean(iou),
        "fw_iou": fw,
        "mean_sensitivity": _nanmean(per["sensitivity"]),
        "mean_specificity": _nanmean(per["specificity"]),
    }
    return per, means


# --- Hausdorff distance ----------------------------------------------------------------------

def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_erosion, generate_binary_structure
    footprint = generate_binary_structure(mask.ndim, 1)
    return mask ^ binary_erosion(mask, structure=footprint, iterations=1)


def _surface_distances(a: np.ndarray, b: np.ndarray,
                       spacing: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
    from scipy.ndimage import distance_transform_edt
    # Crop to the union's bounding box plus one voxel: erosion and the distance transform
    # give the same values there (every surface voxel is inside), at a fraction of the cost.
    union = np.argwhere(a | b)
    lo = np.maximum(union.min(axis=0) - 1, 0)
    hi = np.minimum(union.max(axis=0) + 2, a.shape)
    box = tuple(slice(int(l), int(h)) for l, h in zip(lo, hi))
    sa, sb = _surface(a[box]), _surface(b[box])
    sampling = None if spacing is None else np.asarray(spacing, dtype=np.float64)
    d_ab = distance_transform_edt(~sb, sampling=sampling)[sa]
    d_ba = distance_transform_edt(~sa, sampling=sampling)[sb]
    return d_ab, d_ba


def hausdorff_distance(a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None = None,
                       percentile: float = 95.0) -> float:
    """Symmetric surface Hausdorff distance between two binary masks at ``percentile``.

    ``percentile=95`` is HD95 (as ``medpy.metric.binary.hd95``), ``100`` the classic Hausdorff
    distance. ``spacing`` is the voxel size per axis (physical units); default 1. Returns NaN
    when both masks are empty and ``inf`` when exactly one is.
    """
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    if spacing is not None and len(spacing) != a.ndim:
        raise ValueError(f"spacing {tuple(spacing)} has {len(spacing)} values for a "
                         f"{a.ndim}D mask")
    has_a, has_b = bool(a.any()), bool(b.any())
    if not has_a and not has_b:
        return math.nan
    if has_a != has_b:
        return math.inf
    d_ab, d_ba = _surface_distances(a, b, spacing)
    return float(np.percentile(np.hstack((d_ab, d_ba)), percentile))


# --- results and accumulation ----------------------------------------------------------------

def _json_number(value: float) -> float | str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


@dataclass
class SegEvalResult:
    """Metrics of one evaluation.

    Attributes:
        num_classes: classes scored (0..num_classes-1).
        confusion: the summed confusion matrix ``n_ij``.
        per_class: class index -> {dice, iou, accuracy, sensitivity, specificity, hd95,
            hd95_missing, support}; NaN where undefined (see the module docstring).
        means: pixel_accuracy, mean_accuracy, mean_dice, mean_dice_foreground, mean_iou,
            fw_iou, mean_sensitivity, mean_specificity, mean_hd95.
        items: how many slices/volumes were accumulated.
        class_names: optional display names.
    """

    num_classes: int
    confusion: np.ndarray
    per_class: dict[int, dict[str, float]]
    means: dict[str, float]
    items: int = 1
    class_names: dict[int, str] = field(default_factory=dict)

    def name(self, c: int) -> str:
        """Display name of class ``c``."""
        return self.class_names.get(c, str(c))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN -> null, inf -> "inf")."""
        return {
            "num_classes": self.num_classes,
            "items": self.items,
            "means": {k: _json_number(v) for k, v in self.means.items()},
            "per_class": {str(c): {"name": self.name(c),
                                   **{k: _json_number(v) for k, v in vals.items()}}
                          for c, vals in self.per_class.items()},
            "confusion_matrix": self.confusion.astype(int).tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SegEvalResult":
        """Rebuild a result from :meth:`to_dict` output (e.g. a run's test_metrics.json)."""
        def number(v: Any) -> float:
            return float("nan") if v is None else float(v)

        per_class = {int(c): {k: number(v) for k, v in vals.items() if k != "name"}
                     for c, vals in data["per_class"].items()}
        names = {int(c): vals["name"] for c, vals in data["per_class"].items() if "name" in vals}
        return cls(num_classes=int(data["num_classes"]),
                   confusion=np.asarray(data.get("confusion_matrix", [[0]]), dtype=np.int64),
                   per_class=per_class, means={k: number(v) for k, v in data["means"].items()},
                   items=int(data.get("items", 1)), class_names=names)

    def table(self, metrics: Sequence[str] | None = None) -> str:
        """A plain-text table: one row per class, then the means.

        ``metrics``: the selected metric names (``<evaluation><property name="metrics">``,
        see :data:`SELECTABLE_METRICS`); only their per-class columns and means are shown,
        ``support`` always. ``None`` (default) shows everything. ValueError for an unknown
        name.
        """
        columns, mean_keys = columns_for(metrics)
        header = ["class", *columns, "support"]
        rows = [[self.name(c), *(_cell(v, m) for m in columns), str(int(v.get("support", 0)))]
                for c, v in self.per_class.items()]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
        lines += ["  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip() for r in rows]
        shown = [k for k in mean_keys if k in self.means]
        if metrics is None:  # everything, including keys this version does not know
            shown += [k for k in self.means if k not in shown]
        if shown:
            lines.append("")
            key_width = max(len(k) for k in shown)
            lines += [f"{k.ljust(key_width)}  {_fmt(self.means[k])}"
                      + (f"  ({MEAN_NOTES[k](self)})" if k in MEAN_NOTES else "")
                      for k in shown]
        return "\n".join(lines)


def _cell(values: dict[str, float], metric: str) -> str:
    """A per-class cell; HD95 also counts the items where it is infinite (one side empty)."""
    text = _fmt(values.get(metric))
    missing = int(values.get("hd95_missing", 0) or 0) if metric == "hd95" else 0
    return f"{text} ({missing} inf)" if missing else text


def _hd95_note(result: "SegEvalResult") -> str:
    missing = sum(int(v.get("hd95_missing", 0)) for c, v in result.per_class.items() if c > 0)
    return (f"foreground classes with a finite HD95; {missing} item(s) where one side lacked "
            f"the class are not averaged, see hd95_missing" if missing
            else "foreground classes with a finite HD95")


#: what a summary line of :meth:`SegEvalResult.table` averages, where it is easy to misread
MEAN_NOTES: dict[str, Callable[["SegEvalResult"], str]] = {
    "mean_dice": lambda r: "all classes, background included",
    "mean_dice_foreground": lambda r: "classes 1.., the headline test dice",
    "mean_iou": lambda r: "all classes, background included",
    "mean_hd95": _hd95_note,
}


def _fmt(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf"
    return f"{value:.4f}"


class SegEvaluator:
    """Accumulates slices or volumes and produces one :class:`SegEvalResult`.

    Args:
        num_classes: classes to score; ``None`` infers ``max label + 1`` over everything added.
        hd95: compute HD95 (the expensive part; off gives overlap metrics only).
        class_names: optional display names by class index.
    """

    def __init__(self, num_classes: int | None = None, *, hd95: bool = True,
                 class_names: dict[int, str] | None = None) -> None:
        self.num_classes = num_classes
        self.hd95 = hd95
        self.class_names = dict(class_names or {})
        self._cm = np.zeros((num_classes or 1,) * 2, dtype=np.int64)
        self._hd: dict[int, list[float]] = {}
        self._hd_missing: dict[int, int] = {}
        #: per item added, in order: {class: HD95} (inf where one side is empty); what
        #: :meth:`combined` needs to merge evaluators exactly
        self.item_hd: list[dict[int, float]] = []
        self.items = 0

    def add(self, gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float] | None = None,
            name: str | None = None) -> None:
        """Add one item (a 2D slice or a 3D volume) of integer labels.

        Raises DataError (naming ``name`` when given) for shape mismatches and labels outside
        ``[0, num_classes)``.
        """
        where = name or "prediction"
        gt, pred = np.asarray(gt), np.asarray(pred)
        if gt.shape != pred.shape:
            raise DataError(f"{where}: prediction shape {pred.shape} does not match ground "
                            f"truth shape {gt.shape}")
        gt, pred = to_labels(gt, where), to_labels(pred, where)
        if gt.size == 0:
            raise DataError(f"{where}: empty mask")
        top = int(max(gt.max(), pred.max()))
        low = int(min(gt.min(), pred.min()))
        if low < 0 or (self.num_classes is not None and top >= self.num_classes):
            limit = self.num_classes if self.num_classes is not None else top + 1
            bad = sorted({int(v) for v in np.union1d(np.unique(gt), np.unique(pred))
                          if v < 0 or v >= limit})
            raise DataError(f"{where}: labels {bad} outside the declared classes "
                            f"0..{limit - 1}",
                            remedy="pass --classes N with the right number of classes")
        n = self.num_classes if self.num_classes is not None else max(top + 1, self._cm.shape[0])
        if n > self._cm.shape[0]:
            grown = np.zeros((n, n), dtype=np.int64)
            grown[: self._cm.shape[0], : self._cm.shape[1]] = self._cm
            self._cm = grown
        self._cm += confusion_matrix(gt, pred, n)
        if self.hd95:
            self._add_hd({int(c): hausdorff_distance(gt == c, pred == c, spacing)
                          for c in np.union1d(np.unique(gt), np.unique(pred))})
        self.items += 1

    def _add_hd(self, distances: dict[int, float]) -> None:
        for c in sorted(distances):
            if math.isinf(distances[c]):
                self._hd_missing[c] = self._hd_missing.get(c, 0) + 1
            else:
                self._hd.setdefault(c, []).append(distances[c])
        self.item_hd.append(distances)

    @classmethod
    def combined(cls, num_classes: int, confusion: np.ndarray, item_hd: Sequence[dict[int, float]],
                 items: int, *, hd95: bool = True,
                 class_names: dict[int, str] | None = None) -> "SegEvaluator":
        """An evaluator holding the sum of several: ``confusion`` summed over them, and
        ``item_hd`` of all their items in the order a single evaluator would have added
        them, which makes the result equal to that evaluator's exactly (the means of HD95
        are summed in the same order)."""
        merged = cls(num_classes, hd95=hd95, class_names=class_names)
        merged._cm = np.asarray(confusion, dtype=np.int64).copy()
        for distances in item_hd if hd95 else ():
            merged._add_hd({int(c): float(d) for c, d in distances.items()})
        merged.items = int(items)
        return merged

    @property
    def confusion(self) -> np.ndarray:
        """The confusion matrix of everything added so far (``n_ij``, int64)."""
        return self._cm

    def result(self) -> SegEvalResult:
        """The metrics of everything added so far."""
        if self.items == 0:
            raise DataError("nothing to evaluate: no masks were added")
        n = self._cm.shape[0]
        per, means = metrics_from_confusion(self._cm)
        per_class: dict[int, dict[str, float]] = {}
        hd_means = np.full(n, math.nan)
        for c in range(n):
            values = self._hd.get(c, [])
            if values:
                hd_means[c] = float(np.mean(values))
            elif self._hd_missing.get(c):
                hd_means[c] = math.inf
            if not self.hd95:
                hd_means[c] = math.nan
            per_class[c] = {m: float(per[m][c]) for m in PER_CLASS_METRICS if m != "hd95"}
            per_class[c]["hd95"] = float(hd_means[c])
            per_class[c]["hd95_missing"] = int(self._hd_missing.get(c, 0))
            per_class[c]["support"] = int(per["support"][c])
        foreground = hd_means[1:] if n > 1 else hd_means
        finite = foreground[np.isfinite(foreground)]
        means["mean_hd95"] = float(finite.mean()) if finite.size else math.nan
        return SegEvalResult(num_classes=n, confusion=self._cm.copy(), per_class=per_class,
                             means={k: means[k] for k in MEAN_METRICS}, items=self.items,
                             class_names=self.class_names)


def evaluate_arrays(gt: np.ndarray, pred: np.ndarray, num_classes: int,
                    spacing: Sequence[float] | None = None, *, hd95: bool = True) -> SegEvalResult:
    """Score one prediction (a 2D slice or 3D volume of labels) against its ground truth.

    ``spacing`` is the voxel size per axis for HD95 (default 1 per axis).
    """
    evaluator = SegEvaluator(num_classes, hd95=hd95)
    evaluator.add(gt, pred, spacing)
    return evaluator.result()


def evaluate_batch(gts: Sequence[np.ndarray], preds: Sequence[np.ndarray], num_classes: int,
                   spacing: Sequence[float] | None = None, *,
                   hd95: bool = True) -> SegEvalResult:
    """Score many items (e.g. ``(N, H, W)`` stacks of slices) accumulated as one evaluation."""
    if len(gts) != len(preds):
        raise DataError(f"{len(preds)} predictions for {len(gts)} ground-truth masks")
    evaluator = SegEvaluator(num_classes, hd95=hd95)
    for i, (g, p) in enumerate(zip(gts, preds)):
        evaluator.add(g, p, spacing, name=f"item {i}")
    return evaluator.result()


# --- reading masks from disk -----------------------------------------------------------------

_MASK_2D = (".png", ".npy")
_NIFTI = (".nii", ".nii.gz")


def save_test_metrics(run_dir: Path, metrics: dict[str, Any], result: SegEvalResult
                      ) -> dict[str, Any]:
    """Write ``metrics`` (the test evaluation's record, ``result`` among it) to the run's
    ``test_metrics.json`` and print the one line a user reads at the end of a run."""
    from autocnnp.engine import rundir

    path = run_dir / rundir.TEST_METRICS
    rundir.write_json(path, metrics)
    fg = result.means.get("mean_dice_foreground", float("nan"))
    per_class = ", ".join(f"{result.name(c)} {result.per_class[c]['dice']:.3f}"
                          for c in range(1, len(result.per_class))
                          if not math.isnan(result.per_class[c]["dice"]))
    print(f"test dice {fg:.3f} (mean over foreground classes: {per_class})  mean IoU "
          f"{result.means['mean_iou']:.3f}  -> {path}", flush=True)
    return metrics


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(_NIFTI)


def _read_item(path: Path) -> tuple[np.ndarray, tuple[float, ...] | None]:
    if _is_nifti(path):
        from autocnnp.components.datasets import load_volume
        data, zooms = load_volume(path, channel=None, what="mask")
        if np.asarray(data).ndim == 4:
            raise DataError(f"{path}: a mask volume must be 3D")
        return to_labels(np.asarray(data), path), zooms
    if path.suffix.lower() == ".npy":
        try:
            data = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise DataError(f"{path}: cannot read mask: {exc}") from exc
        return to_labels(data, path), None
    return read_mask_file(path), None


def _mask_folder(folder: Path) -> Path:
    """The folder of masks: ``masks/`` of a data folder, ``labelsTr/`` of a Medical
    Segmentation Decathlon task folder (beside ``dataset.json``), else ``folder``."""
    if (folder / "labelsTr").is_dir() and (folder / "dataset.json").is_file():
        return folder / "labelsTr"
    return folder / "masks" if (folder / "masks").is_dir() else folder


def _mask_files(folder: Path) -> dict[str, Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.name.lower().endswith(_MASK_2D + _NIFTI))
    return {volume_stem(p): p for p in files}


def _check_labels(mask: np.ndarray, path: Path, num_classes: int | None) -> None:
    low, top = int(mask.min()), int(mask.max())
    if low >= 0 and (num_classes is None or top < num_classes):
        return
    limit = num_classes if num_classes is not None else top + 1
    bad = [int(v) for v in np.unique(mask) if v < 0 or v >= limit]
    raise DataError(f"{path}: labels {bad} outside the declared classes 0..{limit - 1}",
                    remedy="pass --classes N with the right number of classes"
                    if max(bad) >= limit else "class labels must not be negative")


def iter_mask_pairs(pred_path: Path, gt_path: Path, num_classes: int | None = None,
                    cases: list[str] | None = None
                    ) -> Iterator[tuple[str, np.ndarray, np.ndarray, tuple[float, ...] | None]]:
    """Yield ``(name, gt, pred, spacing)`` for every ground-truth mask and its prediction.

    Both paths are files (two 2D masks or two NIfTI volumes) or folders matched by file stem
    (a folder holding ``masks/`` uses that subfolder, an MSD task folder its ``labelsTr/``);
    ``cases`` keeps only the ground truth of those file stems (a split's cases: every one
    must be there). ``spacing`` comes from the NIfTI header
    (None for 2D files); ``name`` is the ground-truth file's path. Raises DataError naming the
    file for missing predictions, shape or spacing mismatches, unreadable files, non-integer
    masks and labels outside ``[0, num_classes)`` (negative labels even without it).
    """
    pred_path, gt_path = Path(pred_path), Path(gt_path)
    for p in (pred_path, gt_path):
        if not p.exists():
            raise DataError(f"{p}: no such file or folder")
    if pred_path.is_dir() != gt_path.is_dir():
        raise DataError(f"{pred_path} and {gt_path}: compare a file with a file or a folder with "
                        "a folder")
    if pred_path.is_dir():
        gt_files = _mask_files(_mask_folder(gt_path))
        pred_files = _mask_files(_mask_folder(pred_path))
        if not gt_files:
            raise DataError(f"{_mask_folder(gt_path)}: empty folder: no .png, .npy, .nii or "
                            ".nii.gz masks found")
        if cases is not None:
            missing = [case for case in cases if case not in gt_files]
            if missing:
                raise DataError(f"{_mask_folder(gt_path)}: no ground truth for case(s) "
                                f"{', '.join(missing[:5])}")
            gt_files = {case: gt_files[case] for case in cases}
        pairs = []
        for stem, gt_file in gt_files.items():
            pred_file = pred_files.get(stem)
            if pred_file is None:
                raise DataError(f"{gt_file}: no prediction named {stem}.* in "
                                f"{_mask_folder(pred_path)}",
                                remedy="predictions must have the ground-truth file names")
            pairs.append((pred_file, gt_file))
    else:
        pairs = [(pred_path, gt_path)]
    for pred_file, gt_file in pairs:
        gt, gt_spacing = _read_item(gt_file)
        pred, pred_spacing = _read_item(pred_file)
        if gt.size == 0 or pred.size == 0:
            raise DataError(f"{gt_file if gt.size == 0 else pred_file}: empty mask")
        _check_labels(gt, gt_file, num_classes)
        _check_labels(pred, pred_file, num_classes)
        if gt.shape != pred.shape:
            raise DataError(f"{pred_file}: prediction shape {pred.shape} does not match ground "
                            f"truth {gt_file} shape {gt.shape}")
        if gt_spacing and pred_spacing and not np.allclose(gt_spacing, pred_spacing,
                                                           rtol=1e-3, atol=1e-5):
            raise DataError(f"{pred_file}: voxel spacing {pred_spacing} does not match ground "
                            f"truth {gt_file} spacing {gt_spacing}",
                            remedy="resample the prediction onto the ground-truth grid")
        yield str(gt_file), gt, pred, gt_spacing or pred_spacing


def evaluate_paths(pred_path: Path, gt_path: Path, num_classes: int | None = None, *,
                   hd95: bool = True, class_names: dict[int, str] | None = None,
                   cases: list[str] | None = None) -> SegEvalResult:
    """Score predicted masks on disk against ground truth on disk (see :func:`iter_mask_pairs`).

    ``num_classes=None`` infers ``max label + 1``; given, a label ``>= num_classes`` is a
    DataError naming the file.
    """
    evaluator = SegEvaluator(num_classes, hd95=hd95, class_names=class_names)
    for name, gt, pred, spacing in iter_mask_pairs(pred_path, gt_path, num_classes, cases):
        evaluator.add(gt, pred, spacing, name=name)
    return evaluator.result()


# --- writing results -------------------------------------------------------------------------



def write_json(result: SegEvalResult, path: Path) -> None:
    """Write ``result.to_dict()`` as JSON, atomically (temp file then rename)."""
    atomic_write(Path(path), (json.dumps(result.to_dict(), indent=2) + "\n").encode())


def write_csv(result: SegEvalResult, path: Path) -> None:
    """Write one row per class plus a ``mean`` row, atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["class", "name", *PER_CLASS_METRICS, "support"])
    for c, vals in result.per_class.items():
        writer.writerow([c, result.name(c), *(_csv_number(vals[m]) for m in PER_CLASS_METRICS),
                         vals["support"]])
    m = result.means
    writer.writerow(["mean", "", _csv_number(m["mean_dice"]), _csv_number(m["mean_iou"]),
                     _csv_number(m["mean_accuracy"]), _csv_number(m["mean_sensitivity"]),
                     _csv_number(m["mean_specificity"]), _csv_number(m["mean_hd95"]),
                     int(result.confusion.sum())])
    atomic_write(Path(path), buf.getvalue().encode())


def _csv_number(value: float) -> str:
    if math.isnan(value):
        return ""
    return "inf" if math.isinf(value) else repr(float(value))


# --- overlays --------------------------------------------------------------------------------

#: overlay colours (RGB): correct foreground, false positive, false negative, wrong class.
OVERLAY_COLORS = {"tp": (0, 200, 0), "fp": (230, 30, 30), "fn": (40, 90, 255),
                  "wrong_class": (255, 210, 0)}


def write_overlays(pred: np.ndarray, gt: np.ndarray, image: np.ndarray | None, out_dir: Path,
                   max_slices: int = 8, *, axis: int = 0, prefix: str = "overlay") -> list[Path]:
    """Write PNG overlays of a prediction against its ground truth.

    Colours: green = foreground predicted with the right class (TP), red = foreground predicted
    on background (FP), blue = foreground predicted as background (FN), yellow = foreground
    predicted as another foreground class. Background is the image (grey) or black.

    Args:
        pred, gt: a 2D mask or a stack of 2D masks (3D), integer labels.
        image: the matching image (same shape, optionally with a trailing channel) or None.
        out_dir: folder to write ``{prefix}_{k:04d}.png`` into (created).
        max_slices: at most this many slices of a 3D input, evenly spaced over the slices that
            hold foreground in either mask.
        axis: the slice axis of 3D inputs (0 for ``(N, H, W)`` stacks, 2 for NIfTI volumes).

    Returns the written paths.
    """
    from PIL import Image

    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise DataError(f"overlay: prediction shape {pred.shape} does not match ground truth "
                        f"shape {gt.shape}")
    if gt.ndim == 2:
        gt, pred = gt[None], pred[None]
        image = None if image is None else np.asarray(image)[None]
        axis = 0
    gt, pred = np.moveaxis(gt, axis, 0), np.moveaxis(pred, axis, 0)
    if image is not None:
        image = np.asarray(image, dtype=np.float64)
        if image.ndim == gt.ndim + 1:
            image = image[..., 0]
        image = np.moveaxis(image, axis, 0)
    busy = np.flatnonzero((gt > 0).any(axis=(1, 2)) | (pred > 0).any(axis=(1, 2)))
    candidates = busy if busy.size else np.arange(gt.shape[0])
    picks = candidates[np.unique(np.linspace(0, candidates.size - 1,
                                             min(max_slices, candidates.size)).astype(int))]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for k in picks:
        g, p = gt[k], pred[k]
        if image is not None:
            im = image[k]
            lo, hi = float(im.min()), float(im.max())
            grey = ((im - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(im)).astype(np.uint8)
        else:
            grey = np.zeros(g.shape, dtype=np.uint8)
        rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float64)
        classes = {"tp": (g > 0) & (p == g), "fp": (g == 0) & (p > 0),
                   "fn": (g > 0) & (p == 0), "wrong_class": (g > 0) & (p > 0) & (p != g)}
        for key, where in classes.items():
            rgb[where] = 0.4 * rgb[where] + 0.6 * np.asarray(OVERLAY_COLORS[key], dtype=float)
        picture = Image.fromarray(rgb.clip(0, 255).astype(np.uint8), mode="RGB")
        if max(picture.size) < 256:  # small slices are unreadable at 1:1; keep pixels square
            factor = -(-256 // max(picture.size))
            picture = picture.resize((picture.width * factor, picture.height * factor), Image.NEAREST)
        buf = io.BytesIO()
        picture.save(buf, format="PNG")
        path = out_dir / f"{prefix}_{int(k):04d}.png"
        atomic_write(path, buf.getvalue())
        written.append(path)
    return written


# --- per case --------------------------------------------------------------------------------

def per_case_results(cases: Sequence[str], item_confusion: Sequence[np.ndarray],
                     item_hd: Sequence[dict[int, float]] | None, num_classes: int, *,
                     hd95: bool = False, class_names: dict[int, str] | None = None
                     ) -> dict[str, SegEvalResult]:
    """One :class:`SegEvalResult` per case: item ``i`` (a slice) belongs to ``cases[i]`` and
    has the confusion matrix ``item_confusion[i]`` (and HD95 values ``item_hd[i]``); a case's
    metrics are those of its items together, with the definitions of :class:`SegEvaluator`
    (confusion matrices summed, HD95 averaged over the items). Cases in first-seen order."""
    grouped: dict[str, list[int]] = {}
    for i, case in enumerate(cases):
        grouped.setdefault(case, []).append(i)
    results = {}
    for case, items in grouped.items():
        confusion = np.sum([np.asarray(item_confusion[i], dtype=np.int64) for i in items], axis=0)
        distances = [item_hd[i] for i in items] if hd95 and item_hd else []
        results[case] = SegEvaluator.combined(num_classes, confusion, distances, len(items),
                                              hd95=hd95 and bool(item_hd),
                                              class_names=class_names).result()
    return results


def per_case_columns(num_classes: int, class_names: dict[int, str] | None = None,
                     hd95: bool = False) -> list[str]:
    """The header of ``per_case.csv``."""
    names = [(class_names or {}).get(c, str(c)) for c in range(num_classes)]
    columns = ["case", "slices", *MEAN_METRICS, *(f"dice_{n}" for n in names)]
    return columns + [f"hd95_{n}" for n in names[1:]] if hd95 else columns


def write_per_case_csv(results: dict[str, SegEvalResult], path: Path, *,
                       hd95: bool = False) -> None:
    """``per_case.csv``: one row per case, the mean metrics and each class's Dice (and HD95
    of each foreground class with ``hd95``); an undefined value is an empty cell, an
    infinite HD95 is ``inf``."""
    if not results:
        return
    first = next(iter(results.values()))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(per_case_columns(first.num_classes, first.class_names, hd95))
    for case, result in results.items():
        row: list[Any] = [case, result.items]
        row += [_csv_number(result.means[m]) for m in MEAN_METRICS]
        row += [_csv_number(result.per_class[c]["dice"]) for c in range(result.num_classes)]
        if hd95:
            row += [_csv_number(result.per_class[c]["hd95"]) for c in range(1, result.num_classes)]
        writer.writerow(row)
    atomic_write(Path(path), buf.getvalue().encode())
