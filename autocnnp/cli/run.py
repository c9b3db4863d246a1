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
    parser.add_argument("--init", action="store_true",
                        help="swarm backend: make this machine a one-node swarm if it is in none")


def format_metrics(metrics: dict) -> str:
    """The SegEval table of a run's test metrics."""
    from autocnnp.components.segeval import SegEvalResult

    return SegEvalResult.from_dict(metrics).table()


def run(args: argparse.Namespace) -> int:
    if (args.config is None) == (args.resume is None):
        raise AutocnnpError("give a CONFIG to start a run, or --resume RUN_DIR to continue one")
    result = run_job(args.config, resume_dir=args.resume, init_swarm=args.init)
    print()
    if result.test_metrics:
        print("Test metrics")
        print(format_metrics(result.test_metrics))
    else:
        print("no test split given: no test metrics")
    print(f"\nrun directory: {result.run_dir}")
    return 0
