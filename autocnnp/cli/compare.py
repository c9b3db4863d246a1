"""Compare two methods: two runs, two groups of repeats or two k-fold groups (A and B).

For each metric: A's and B's means, the difference A - B with a 95% confidence interval that
accounts for the training noise (the run-to-run spread of repeats) and the sampling of the
test cases (paired over cases when both sides scored the same cases), and a verdict:
significant when the interval excludes 0. Where the cases are shared, a paired Wilcoxon
signed-rank test over them is shown too. A side with one run gets a warning: one run per
method cannot separate the methods from training noise.

Writes compare.json, compare.svg (a forest plot) and compare.txt into --out (default:
A/compare-vs-B).

Examples:
  autocnnp compare runs/unet-repeats runs/fcn-repeats
  autocnnp compare runs/cv-unet runs/cv-fcn --metric mean_dice_foreground --metric mean_iou
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "compare two runs, repeat groups or CV groups (difference, CI, paired test)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="A", type=Path, help="a run directory or a group")
    parser.add_argument("b", metavar="B", type=Path, help="a run directory or a group")
    parser.add_argument("--metric", action="append", metavar="NAME",
                        help="a test metric to compare (repeatable; default: "
                             "mean_dice_foreground, mean_accuracy, mean_iou)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="where to write compare.json/.svg/.txt (default: A/compare-vs-B)")


def run(args: argparse.Namespace) -> int:
    from autocnnp.orchestrator.compare import (DEFAULT_METRICS, compare_sides, load_side, table,
                                               write_outputs)

    a, b = load_side(args.a), load_side(args.b)
    results = compare_sides(a, b, args.metric or DEFAULT_METRICS)
    print(table(a, b, results))
    out = args.out or args.a / f"compare-vs-{b.name}"
    files = write_outputs(a, b, results, out)
    print(f"\nwritten: {files['json']}, {files['plot']}, {files['table']}")
    return 0
