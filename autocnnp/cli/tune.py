"""Run the thesis's CNN-parallelism guideline (Figure 6.3) with the GreScale lr policy.

The config's <parallelism-degree> N is the target. autocnnp first trains a 1-worker baseline
(constant lr), then N workers with GreScale. When N >= --threshold (default 12, as in the
thesis) it tunes, in this order: decrease the initial lr (x0.5), increase the decay coefficient
(x2), increase the warmup period (+2 epochs), increase the decay period (+0.1 of the remaining
epochs), change the optimizer (sgd <-> adam, once). An action is repeated while it improves the
test metrics and left when it does not; tuning stops when the baseline is reached, and the best
settings are re-run once to confirm. Runs are compared by foreground Dice, then mean accuracy,
then mean IoU. --max-trials (default 10) bounds the number of training runs.

Each trial is an ordinary run directory under the run root; the whole account (every trial,
its settings and metrics, the best one, whether the baseline was reached) is written to
RUN_ROOT/tune-<time>.json after every trial.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import sys
from pathlib import Path

from autocnnp.orchestrator.guideline import Guideline, TrialRecord
from autocnnp.generator.assembly import load_checked_spec
from autocnnp.errors import AutocnnpError

HELP = "GreScale guideline: tune the learning-rate policy for N workers"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="the XML training config (its parallelism degree is N)")
    parser.add_argument("--threshold", type=int, default=12, metavar="N",
                        help="tune only from this many workers on (default: 12, the thesis's)")
    parser.add_argument("--max-trials", type=int, default=10, metavar="K",
                        help="at most K training runs, baseline and confirmation included (default: 10)")


def _f(value) -> str:
    return "     -" if value is None or (isinstance(value, float) and not math.isfinite(value)) \
        else f"{value:.4f}"


def _metrics_of(result) -> dict | None:
    if getattr(result, "test_metrics", None):
        return result.test_metrics
    summary = getattr(result, "summary", None)  # <reproducibility> repeats K: the means
    if summary:
        return {"means": {name: s["mean"] for name, s in summary.items()}}
    return None


def trial_line(index: int, total: int, rec: TrialRecord) -> str:
    d, a, i = rec.score
    flags = (" improved" if rec.improved else "") + (" reached-baseline" if rec.reached_baseline else "")
    return (f"[{index}/{total}] {rec.trial.name}: {rec.trial.reason} -> dice_fg {_f(d)}  "
            f"mean_acc {_f(a)}  mean_iou {_f(i)}{flags}  ({rec.run_dir or 'no run dir'})")


def format_table(guideline: Guideline) -> str:
    best = guideline.best
    header = (f"{'trial':<26} {'N':>3} {'policy':<9} {'lr':>9} {'opt':<7} {'warmup':>6} "
              f"{'k':>6} {'decay':>5}  {'dice_fg':>7} {'mean_acc':>8} {'mean_iou':>8}")
    lines = [header, "-" * len(header)]
    for rec in guideline.history:
        s = rec.trial.settings
        mark = " *" if best is not None and rec is best else ""
        mark += " >=baseline" if rec.reached_baseline else ""
        d, a, i = rec.score
        lines.append(f"{rec.trial.name:<26} {s['workers']:>3} {s['lr_policy']:<9} {s['lr']:>9.3g} "
                     f"{s['optimizer']:<7} {s['warmup_epochs']:>6g} {s['decay_coefficient']:>6.3g} "
                     f"{s['decay_fraction']:>5.2f}  {_f(d):>7} {_f(a):>8} {_f(i):>8}{mark}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from autocnnp.engine.rundir import write_json
    from autocnnp.engine import rundir
    from autocnnp.orchestrator.run import run_job

    if args.max_trials < 2:
        raise AutocnnpError("--max-trials must be at least 2 (the baseline and the GreScale run)")
    if args.threshold < 1:
        raise AutocnnpError("--threshold must be at least 1")
    spec = load_checked_spec(args.config, [])
    guideline = Guideline(spec, threshold=args.threshold, max_trials=args.max_trials)
    root = rundir.run_root(spec)
    root.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    report = root / f"tune-{stamp}.json"

    def save() -> None:
        write_json(report, {"config": str(Path(args.config).resolve()),
                                   "started": stamp, **guideline.summary()})

    print(f"GreScale guideline for {guideline.workers} workers (threshold {guideline.threshold}, "
          f"tuning {'on' if guideline.tuning else 'off'}, at most {guideline.max_trials} trials)")
    lines = []
    while (trial := guideline.next_trial()) is not None:
        index = len(guideline.history) + 1
        print(f"\n== trial {index}: {trial.name} ({trial.reason})", flush=True)
        try:
            result = run_job(args.config, configure=lambda _s, t=trial: t.spec)
        except AutocnnpError as exc:
            if trial.name == "baseline":
                raise
            # a diverged or crashed trial is the worst possible result, not the end of tuning
            print(f"trial {trial.name} failed: {exc}", file=sys.stderr)
            result = None
        rec = guideline.record(trial, _metrics_of(result) if result is not None else None,
                               run_dir=str(result.run_dir) if result is not None else None)
        lines.append(trial_line(index, guideline.max_trials, rec))
        print(lines[-1], flush=True)
        save()

    print("\nGuideline trials")
    for line in lines:
        print(line)
    print()
    print(format_table(guideline))
    summary = guideline.summary()
    print(f"\nstopped: {summary['stop_reason']}")
    best = guideline.best
    if best is not None:
        verdict = "reached" if summary["baseline_reached"] else "not reached"
        confirm = {True: ", confirmed", False: ", not confirmed by the re-run", None: ""}[summary["confirmed"]]
        print(f"best: {best.trial.name} ({best.run_dir}); baseline {verdict}{confirm}")
    print(f"tune report: {report}")
    return 0
