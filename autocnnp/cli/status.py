"""Show the state of a run: running, finished, failed (with the failing rank), last epoch.

Local and hosts runs are "running" while their launcher, mpirun or a rank is alive (they
hold the run directory's locks), and the live processes are listed. When the launcher died
without recording the end, status settles it from what the ranks wrote: rank 0's
completed.json (finished) or errors/rank-K.json (failed), else "dead".

A group of trainings (folds, repeats) shows its own state (running while its launcher or a
training lives) and a line per training: its state, last epoch and test Dice."""

from __future__ import annotations

import argparse
import json

from autocnnp.run_manage.jobs import (format_epoch, group_lines, group_status, is_group,
                                     resolve_run, status)

HELP = "show the state of a run"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory (or its name under ./runs)")
    parser.add_argument("--format", choices=("text", "json"), default="text")


def run(args: argparse.Namespace) -> int:
    run_dir = resolve_run(args.run)
    if is_group(run_dir):
        group = group_status(run_dir)
        if args.format == "json":
            print(json.dumps(group, indent=2))
        else:
            print("\n".join(group_lines(run_dir.name, group)))
        return 0
    state = status(run_dir)
    if args.format == "json":
        print(json.dumps(state, indent=2))
        return 0
    print(f"{run_dir.name}: {state.get('state')}")
    for key in ("backend", "slurm", "started", "ended", "seconds", "failure", "settled", "launcher",
                "note"):
        if state.get(key) is not None:
            print(f"  {key}: {state[key]}")
    for process in state.get("processes") or []:
        print(f"  process: {process}")
    swarm = state.get("swarm")
    if isinstance(swarm, str):
        print(f"  swarm: {swarm}")
    elif isinstance(swarm, dict):
        for task in sorted(swarm.get("tasks", []), key=lambda t: (t.get("rank") is None, t.get("rank"))):
            error = f" ({task['error']})" if task.get("error") else ""
            print(f"  rank {task.get('rank')}: {task.get('state')} on {task.get('node')}{error}")
    if "last_epoch" in state:
        print(f"  last epoch: {format_epoch(state['last_epoch'], state.get('end_epoch'))}")
    print(f"  checkpoints: {', '.join(state['checkpoints']) or 'none'}")
    return 0
