"""Validate a config, plan the job, launch its ranks, evaluate, and report.

The run directory (RUN_ROOT/<config>-<time>) receives the resolved config, the plan, a
manifest (packages, hardware, code version, data checksums), per-rank logs, metrics per epoch,
TensorBoard events, checkpoints, the final model and the test metrics.

Resume an interrupted or failed run from its last checkpoint with --resume RUN_DIR.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from autocnnp.engine.run import run_job
from autocnnp.errors import AutocnnpError

HELP = "validate, plan, launch and evaluate a training job"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, nargs="?", help="the XML training config")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="continue the run in RUN_DIR from its last checkpoint")


def format_metrics(metrics: dict) -> str:
    """A plain table of test metrics: one row per class, then the mean."""
    per_class = metrics.get("per_class") or {}
    means = metrics.get("mean") or {}
    names = [k for k in means if isinstance(means.get(k), (int, float))]
    if not names:
        return "\n".join(f"{k}: {v}" for k, v in metrics.items() if not isinstance(v, (dict, list)))
    width = max([len("class")] + [len(str(c)) for c in per_class] + [len("mean")])
    lines = [f"{'class':<{width}}  " + "  ".join(f"{n:>14}" for n in names)]
    for cls, values in per_class.items():
        lines.append(f"{cls:<{width}}  " + "  ".join(
            f"{values.get(n, float('nan')):>14.4f}" if isinstance(values.get(n), (int, float))
            else f"{'-':>14}" for n in names))
    lines.append(f"{'mean':<{width}}  " + "  ".join(f"{means[n]:>14.4f}" for n in names))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if (args.config is None) == (args.resume is None):
        raise AutocnnpError("give a CONFIG to start a run, or --resume RUN_DIR to continue one")
    result = run_job(args.config, resume_dir=args.resume)
    print()
    if result.test_metrics:
        print("Test metrics")
        print(format_metrics(result.test_metrics))
    else:
        print("no test split given: no test metrics")
    print(f"\nrun directory: {result.run_dir}")
    return 0
