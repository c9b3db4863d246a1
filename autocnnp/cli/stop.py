"""Stop a running job: every rank ends, checkpoints already written stay intact, and
everything the job created (processes; services, networks, secrets on swarm) is removed."""

from __future__ import annotations

import argparse

from autocnnp.run_manage.jobs import resolve_run, stop

HELP = "stop a running job and clean up what it created"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory (or its name under ./runs)")


def run(args: argparse.Namespace) -> int:
    print(stop(resolve_run(args.run)))
    return 0
