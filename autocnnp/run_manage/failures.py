"""The first failure of a job, from the ranks' error records (``RUN_DIR/errors/rank-K.json``,
written by the worker) or, when a rank died before it could write one, from mpirun's report.
Shared by the launchers (local, hosts, slurm) and by ownership's settling of a run whose
launcher died."""

from __future__ import annotations

import json
import re
from pathlib import Path

from autocnnp.engine import rundir
from autocnnp.errors import JobFailedError

_MPI_SIGNAL = re.compile(r"process rank (\d+) with PID (\d+) on node (\S+) exited on signal (\d+) \(([^)]+)\)")
_MPI_EXIT = re.compile(r"Process name: \[\[\d+,\d+\],(\d+)\]\s+Exit code:\s+(\d+)")


def first_failure(run_dir: Path, launcher_output: str) -> JobFailedError:
    """The first failure of a job, from the ranks' error files or mpirun's report."""
    reports = []
    for path in (run_dir / rundir.ERRORS).glob("rank-*.json"):
        try:
            reports.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    resume = f"continue from the last checkpoint with: autocnnp run --resume {run_dir}"
    killed = _MPI_SIGNAL.search(launcher_output)
    if killed and not reports:
        rank, pid, host, signum, name = killed.groups()
        who = f"rank {rank} (pid {pid})" if pid != "0" else f"rank {rank}"  # Open MPI 4 may say PID 0
        return JobFailedError(
            f"{who} on {host} was killed by signal {signum} ({name}); "
            f"the other ranks were stopped", rank=int(rank), host=host, remedy=resume)
    if reports:
        # times have one-second resolution: ranks failing in the same second are reported
        # lowest rank first, not in the directory's order
        reports.sort(key=lambda r: (r.get("time", ""), int(r.get("rank") or 0)))
        r = reports[0]
        log = run_dir / rundir.LOGS / f"rank-{r.get('rank')}.log"
        failure = JobFailedError(
            f"rank {r.get('rank')} on {r.get('host')} failed: {r.get('type')}: {r.get('message')}"
            f"\n  log: {log}", rank=r.get("rank"), host=r.get("host"),
            remedy=r.get("remedy") or (None if r.get("user_error") else resume),
            exit_code=r.get("exit_code") if r.get("user_error") else None)
        return failure
    exited = _MPI_EXIT.search(launcher_output)
    if exited:
        return JobFailedError(f"rank {exited.group(1)} exited with code {exited.group(2)} "
                              f"without a report; see {run_dir / rundir.LOGS}",
                              rank=int(exited.group(1)), remedy=resume)
    tail = "\n".join(launcher_output.strip().splitlines()[-15:])
    return JobFailedError(f"the job failed before any rank reported:\n{tail}", remedy=resume)
