"""Watch a running job live: per rank its state, node, epoch and step progress, step time,
CPU, memory and GPU; the loss and validation Dice as small charts; the ETA. The view
refreshes until the job ends (finished, failed, stopped), then leaves a summary and exits with
0 when the job finished, 1 otherwise. Ctrl-C leaves the view; the job runs on.

Works for every backend whose ranks write to the run directory (local, hosts, swarm, Slurm):
start it in a second terminal while `autocnnp run` runs, e.g.

  autocnnp watch runs/quickstart-20260101-120000
"""

from __future__ import annotations

import argparse
import sys
import time

from autocnnp.errors import AutocnnpError
from autocnnp.run_manage.jobs import is_group, member_dirs, resolve_run

HELP = "live view of a running job (every rank, loss and Dice, ETA) until it ends"


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
        raise AutocnnpError(f"{run_dir} is a group of trainings; watch one of them",
                            remedy=f"autocnnp watch {run_dir}/{member_dirs(run_dir)[0].name} "
                                   f"(autocnnp status {run_dir} lists them)")
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
