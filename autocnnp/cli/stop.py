"""Stop a running job: every rank ends, checkpoints already written stay intact, and
everything the job created (processes; services, networks, secrets on swarm) is removed.

Local and hosts runs: only processes that hold the run directory's locks are signalled (its
launcher's mpirun, proven by the lock it holds, and any rank left running), never a process
group that a stale state.json merely names. A job whose launcher was killed is stopped too,
and recorded as stopped."""

from __future__ import annotations

import argparse

from autocnnp.run_manage.jobs import resolve_run, stop

HELP = "stop a running job and clean up what it created"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory (or its name under ./runs)")


def run(args: argparse.Namespace) -> int:
    print(stop(resolve_run(args.run)))
    return 0
