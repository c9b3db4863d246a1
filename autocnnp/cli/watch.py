"""Watch a running job live: per rank its state, node, epoch and step progress, step time,
CPU, memory and GPU; the loss and validation Dice as small charts; the ETA. The view
refreshes until the job ends (finished, failed, stopped), then leaves a summary and exits with
0 when the job finished, 1 otherwise. Ctrl-C leaves the view; the job runs on.

On a group of trainings (folds, repeats) the view is the group's status, a line per training
(state, last epoch, test Dice), refreshed until the group is no longer running; watch one
training of it for the per-rank view.

Works for every backend whose ranks write to the run directory (local, hosts, swarm, Slurm):
start it in a second terminal while `autocnnp run` runs, e.g.

  autocnnp watch runs/quickstart-20260101-120000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from autocnnp.run_manage.jobs import group_lines, group_status, is_group, resolve_run

HELP = ("live view of a running job (every rank, loss and Dice, ETA) or group, until it "
        "ends")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory (or its name under ./runs)")
    parser.add_argument("--interval", type=float, default=1.0,
                        help="seconds between two refreshes (default 1)")
    parser.add_argument("--once", action="store_true",
                        help="print one frame and exit (for scripts and logs)")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    from autocnnp.orchestrator.watch import Watcher, render, summary

    run_dir = resolve_run(args.run)
    if is_group(run_dir):
        return _watch_group(run_dir, args)
    watcher = Watcher(run_dir)
    console = Console()
    snap = watcher.snapshot()
    if args.once:
        console.print(render(snap))
        return 0
    try:
        with Live(render(snap), console=console, auto_refresh=False, transient=True) as live:
            while not snap.ended:
                time.sleep(args.interval)
                snap = watcher.snapshot()
                live.update(render(snap), refresh=True)
    except KeyboardInterrupt:
        print(f"stopped watching; the job goes on (autocnnp status {run_dir})", file=sys.stderr)
        return 130
    console.print(render(snap))
    print(summary(snap, run_dir))
    return 0 if snap.state.get("state") == "finished" else 1


def _watch_group(group: Path, args: argparse.Namespace) -> int:
    """The group's status lines, refreshed until the group is no longer running; the frames
    left behind are plain lines, whole at any width (for scripts and logs)."""
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    state = group_status(group)

    def lines() -> str:
        return "\n".join(group_lines(group.name, state))

    if not args.once:
        try:
            with Live(Text(lines(), no_wrap=True), console=Console(), auto_refresh=False,
                      transient=True) as live:
                while state["state"] == "running":
                    time.sleep(args.interval)
                    state = group_status(group)
                    live.update(Text(lines(), no_wrap=True), refresh=True)
        except KeyboardInterrupt:
            print(f"stopped watching; the group goes on (autocnnp status {group})",
                  file=sys.stderr)
            return 130
    print(lines())
    if args.once:
        return 0
    if state["state"] != "finished":
        print(f"continue with: autocnnp run --resume {group}")
    return 0 if state["state"] == "finished" else 1
