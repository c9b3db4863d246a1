"""Print the logs of a run: every rank, or one with --rank."""

from __future__ import annotations

import argparse

from autocnnp.run_manage.jobs import logs, resolve_run

HELP = "print the logs of a run (all ranks or one)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory (or its name under ./runs)")
    parser.add_argument("--rank", type=int, help="only this rank")


def run(args: argparse.Namespace) -> int:
    print(logs(resolve_run(args.run), args.rank))
    return 0
