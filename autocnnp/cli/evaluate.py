"""SegEval: score predicted segmentation masks against ground truth.

PRED and GT are two folders of 2D masks (.png/.npy, matched by file name; a folder holding
masks/ uses it), two NIfTI volumes, or two folders of NIfTI volumes (HD95 in mm from the
header's voxel spacing). Prints per-class Dice, IoU, accuracy (= sensitivity), specificity
and HD95, and pixel accuracy, mean accuracy, mean Dice, mean IoU and frequency-weighted IoU.

GT may be a Medical Segmentation Decathlon task folder: its labelsTr/ is the ground truth.
With --splits RUN_DIR (a run trained with <cases> and <split>) and --split NAME (default
test), only that split's cases are scored, each of which needs a prediction in PRED (as
`autocnnp predict RUN_DIR TASK_DIR PRED --split NAME` writes them).

Classes absent from both ground truth and prediction are shown as n/a and left out of the
means. Overlap metrics use the summed confusion matrix of all items; HD95 is averaged per item.

Examples:
  autocnnp evaluate runs/unet/predictions data/mni152/test --classes 3
  autocnnp evaluate pred.nii.gz truth.nii.gz --json metrics.json --csv metrics.csv
  autocnnp evaluate preds/ Task01_BrainTumour --splits runs/brats --split test --classes 4
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

HELP = "SegEval: score predicted masks against ground truth"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare PRED, GT and the output options."""
    parser.add_argument("pred", metavar="PRED", type=Path, help="predicted masks (file or folder)")
    parser.add_argument("gt", metavar="GT", type=Path, help="ground-truth masks (file or folder)")
    parser.add_argument("--classes", type=int, default=None, metavar="N",
                        help="number of classes (labels must be < N); default: max label + 1")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT",
                        help="write the metrics as JSON")
    parser.add_argument("--csv", type=Path, default=None, metavar="OUT",
                        help="write per-class metrics as CSV")
    parser.add_argument("--overlay", type=Path, default=None, metavar="DIR",
                        help="write PNG overlays (green TP, red FP, blue FN, yellow wrong class)")
    parser.add_argument("--images", type=Path, default=None, metavar="DIR",
                        help="with --overlay: draw on these images (matched to masks by file stem)")
    parser.add_argument("--splits", type=Path, default=None, metavar="RUN_DIR",
                        help="score only the cases of --split in this run's splits.json (or "
                             "that file)")
    parser.add_argument("--split", default="test", metavar="NAME",
                        help="with --splits: the split to score (default: test)")
    parser.add_argument("--no-hd95", action="store_true",
                        help="skip the Hausdorff distance (faster)")


def _cell(value: float) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return "inf" if math.isinf(value) else f"{value:.4f}"


def _matching_image(folder: Path, stem: str, shape: tuple[int, ...]):
    """The image in ``folder`` (or its images/ subfolder) named like the mask, or DataError."""
    from autocnnp.components.datasets import load_volume, read_image_file
    from autocnnp.errors import DataError

    for where in (folder, folder / "images"):
        for path in sorted(where.glob(f"{stem}.*")):
            image = load_volume(path)[0] if ".nii" in path.name else read_image_file(path)
            if image.shape[:len(shape)] != tuple(shape):
                raise DataError(f"{path}: image shape {image.shape} does not match its mask {shape}")
            return image
    raise DataError(f"--images {folder}: no image named {stem}.* for the mask {stem}")


def run(args: argparse.Namespace) -> int:
    """Evaluate, print a table, write the requested files."""
    from rich.console import Console
    from rich.table import Table

    from autocnnp.components import segeval
    from autocnnp.errors import DataError

    if args.classes is not None and args.classes < 1:
        raise DataError(f"--classes must be at least 1, got {args.classes}")
    cases = None
    if args.splits is not None:
        from autocnnp.engine.rundir import read_split_cases

        cases = read_split_cases(args.splits, args.split)
    result = segeval.evaluate_paths(args.pred, args.gt, args.classes, hd95=not args.no_hd95,
                                    cases=cases)

    table = Table(title=f"SegEval: {args.pred} vs {args.gt} ({result.items} item(s))")
    table.add_column("class")
    for metric in segeval.PER_CLASS_METRICS:
        table.add_column(metric, justify="right")
    table.add_column("support", justify="right")
    for c, vals in result.per_class.items():
        table.add_row(result.name(c), *(_cell(vals[m]) for m in segeval.PER_CLASS_METRICS),
                      str(vals["support"]))
    m = result.means
    table.add_row("mean", _cell(m["mean_dice"]), _cell(m["mean_iou"]), _cell(m["mean_accuracy"]),
                  _cell(m["mean_sensitivity"]), _cell(m["mean_specificity"]),
                  _cell(m["mean_hd95"]), str(int(result.confusion.sum())), style="bold")
    console = Console(width=120)
    console.print(table)
    console.print(f"pixel accuracy {_cell(m['pixel_accuracy'])}   mean accuracy "
                  f"{_cell(m['mean_accuracy'])}   mean IoU {_cell(m['mean_iou'])}   "
                  f"f.w. IoU {_cell(m['fw_iou'])}   mean Dice (foreground) "
                  f"{_cell(m['mean_dice_foreground'])}")
    if args.json:
        segeval.write_json(result, args.json)
        console.print(f"wrote {args.json}")
    if args.csv:
        segeval.write_csv(result, args.csv)
        console.print(f"wrote {args.csv}")
    if args.overlay:
        written = 0
        for name, gt, pred, _ in segeval.iter_mask_pairs(args.pred, args.gt, args.classes):
            stem = Path(name).name.split(".")[0]
            prefix = "overlay_" + stem
            image = _matching_image(args.images, stem, gt.shape) if args.images else None
            written += len(segeval.write_overlays(pred, gt, image, args.overlay,
                                                  axis=2 if gt.ndim == 3 else 0, prefix=prefix))
            if written >= 8 and gt.ndim == 2:
                break
        console.print(f"wrote {written} overlay(s) to {args.overlay}")
    return 0
