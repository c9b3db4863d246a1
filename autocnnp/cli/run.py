"""Validate a config, plan the job, launch its ranks, evaluate, and report.

The run directory (RUN_ROOT/<config>-<time>) receives the resolved config, the plan, a
manifest (packages, hardware, code version, data checksums), per-rank logs, metrics per epoch,
TensorBoard events, checkpoints, the final model and the test metrics.

A group (<split folds="K">: one training per fold into RUN_DIR/fold-K; or <reproducibility>
repeats: RUN_DIR/repeat-K) runs its trainings one after another, or several at once with
<deployment> group_mode "packed" and slots; RUN_DIR/folds.json or repeats.json summarises
them (mean, std, 95% CI). --resume on a group keeps its finished trainings and continues the
others one by one.

Resume an interrupted or failed run from its last checkpoint with --resume RUN_DIR; it
refuses (naming the processes) while a launcher or ranks of that run are still alive, and
says so when the run already finished.

When the launcher ends: Ctrl-C or SIGTERM stops every rank (checkpoints already written stay)
and records the run as stopped. A launcher killed outright (SIGKILL, a lost terminal session
that kills with SIGKILL) cannot: its mpirun and ranks run on and keep the run directory
owned. `autocnnp status RUN` then shows the run as running, names its processes and notes
the launcher is gone; `autocnnp stop RUN` ends it; once it ends, status records the end from
what the ranks wrote (completed.json by rank 0, errors/rank-K.json), and --resume finishes a
run that did not finish.

While the job runs, the launcher watches it: a rank that makes no progress for longer than
the hang threshold (<monitoring> hang_timeout) has every rank's Python stack dumped to
RUN_DIR/stacks/, is named with its host and the frame it is stuck in, and the job stops; the
ranks' CPU, memory and step times go to RUN_DIR/metrics/system.jsonl and, with
<monitoring> prometheus_port, to a Prometheus endpoint the launcher announces. Watch it live
from another terminal with `autocnnp watch RUN_DIR`.

Exit status: 0 finished; 1 the job failed (the first failing rank is named); 2 bad config or
data; 3 something missing on this machine (MPI, Horovod...); 4 training diverged (NaN or Inf
loss or weights); 5 no space left on a disk; 6 a rank hung (no progress within the hang
threshold); 7 training diverged without NaN (divergence_factor, collapse_fraction); 130
interrupted.
"""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

from autocnnp.orchestrator.run import run_job
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

    return SegEvalResult.from_dict(metrics).table(metrics.get("selected_metrics"))


def format_summary(summary: dict) -> str:
    width = max((len(k) for k in summary), default=6)
    lines = [f"{'metric':<{width}}  {'mean':>8}  {'std':>8}  {'95% CI':>19}"]
    for name, s in summary.items():
        lines.append(f"{name:<{width}}  {s['mean']:>8.4f}  {s['std']:>8.4f}  "
                     f"[{s['ci_low']:.4f}, {s['ci_high']:.4f}]")
    return "\n".join(lines)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM: stop the job like Ctrl-C does


def run(args: argparse.Namespace) -> int:
    if (args.config is None) == (args.resume is None):
        raise AutocnnpError("give a CONFIG to start a run, or --resume RUN_DIR to continue one")
    # a launcher that is terminated takes its job down with it; one that is SIGKILLed cannot,
    # and its job runs on, owned and observable (see the module docstring)
    signal.signal(signal.SIGTERM, _interrupt)
    result = run_job(args.config, resume_dir=args.resume, init_swarm=args.init)
    print()
    if hasattr(result, "summary"):
        folds = (result.run_dir / "folds.json").exists()
        what = "folds" if folds else "runs"
        print(f"Test metrics over {len(result.runs)} {what} (mean, std, 95% confidence interval)")
        print(format_summary(result.summary))
        member = "fold" if folds else "repeat"
        print(f"\nrun directory: {result.run_dir} ({member}-1 ... {member}-{len(result.runs)}, "
              f"{'folds' if folds else 'repeats'}.json)")
        return 0
    if result.test_metrics:
        print("Test metrics")
        print(format_metrics(result.test_metrics))
    else:
        print("no test split given: no test metrics")
    print(f"\nrun directory: {result.run_dir}")
    return 0
