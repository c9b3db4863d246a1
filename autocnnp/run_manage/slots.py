"""Run a group's trainings as processes, at most N at a time (the packed group mode).

The orchestrator decides what runs (:mod:`autocnnp.orchestrator.experiment` builds each
training's command); this module only starts, watches and, when interrupted, stops the
processes: as the rest of run_manage, the one place that starts processes.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class SlotJob:
    """One process of a packed group: its name, command and the file its output goes to."""

    name: str
    command: list[str]
    log: Path


def run_in_slots(jobs: list[SlotJob], at_once: int, *,
                 started: Callable[[SlotJob, int], None] = lambda job, pid: None,
                 ended: Callable[[SlotJob, int, float], None] = lambda job, code, s: None,
                 poll_s: float = 0.5) -> dict[str, int]:
    """Run ``jobs`` in order, ``at_once`` at a time, each starting when one ends; return each
    job's exit status. ``started(job, pid)`` and ``ended(job, code, seconds)`` report progress.
    An exception (Ctrl-C) terminates the running processes together (SIGTERM, then SIGKILL
    after 30 s) before it propagates."""
    pending = list(jobs)
    running: dict[str, tuple[SlotJob, subprocess.Popen, float, object]] = {}
    codes: dict[str, int] = {}
    try:
        while pending or running:
            while pending and len(running) < max(1, at_once):
                job = pending.pop(0)
                job.log.parent.mkdir(parents=True, exist_ok=True)
                log = open(job.log, "a")
                proc = subprocess.Popen(job.command, stdout=log, stderr=subprocess.STDOUT,
                                        env=dict(os.environ))
                running[job.name] = (job, proc, time.monotonic(), log)
                started(job, proc.pid)
            time.sleep(poll_s)
            for name, (job, proc, began, log) in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                log.close()  # type: ignore[attr-defined]
                del running[name]
                codes[name] = code
                ended(job, code, time.monotonic() - began)
    finally:  # all at once: each stops its ranks in parallel with the others
        for job, proc, _, log in running.values():
            proc.terminate()
        deadline = time.monotonic() + 30
        for job, proc, _, log in running.values():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()  # type: ignore[attr-defined]
    return codes
