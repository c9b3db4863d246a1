"""One training, start to end: own its run directory, make the data ready
(:mod:`autocnnp.components.data_prep`), fill the run directory (:mod:`autocnnp.engine.rundir`),
hand it to the config's backend (:mod:`autocnnp.run_manage.launch_run`), read the test
metrics.

Every way a training starts goes through :func:`execute`: ``autocnnp run`` and ``--resume``
(:mod:`autocnnp.orchestrator.run`), each member of a group in turn
(:mod:`autocnnp.orchestrator.experiment`) and each packed member in its own process
(:mod:`autocnnp.orchestrator.member`). :mod:`autocnnp.run_manage` is imported only when a job
really starts.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from autocnnp.engine import rundir
from autocnnp.engine.spec import TrainingSpec, spec_from_dict
from autocnnp.errors import AutocnnpError


@dataclass(frozen=True)
class RunResult:
    """Where a finished run is and what it measured on the test split."""

    run_dir: Path
    test_metrics: dict[str, Any] | None


def _say(out: TextIO, text: str) -> None:
    out.write(text + "\n")
    out.flush()


def execute(spec: TrainingSpec, run_dir: Path, *, created: bool, resume: bool, out: TextIO,
            argv: list[str] | None, init_swarm: bool) -> RunResult:
    """Own ``run_dir`` for the job's life (:mod:`autocnnp.run_manage.ownership`), make the data
    ready, assemble the tree with its plugins, fill the run directory when ``created``, and
    hand it to the backend (:func:`~autocnnp.run_manage.launch_run.launch_run`)."""
    from autocnnp.components.data_prep import prepare_data
    from autocnnp.generator.assembly import assemble
    from autocnnp.run_manage import ownership
    from autocnnp.run_manage.launch_run import launch_run

    with ownership.owned(run_dir):  # held until the job ends; mpirun inherits it
        try:
            prepare_data(spec, lambda text: _say(out, text))
            assemble(spec, load_plugins=True)  # import plugin files now: fail before any rank
            if created:
                rundir.populate_run_dir(spec, run_dir)
        except BaseException:
            if created:  # nothing ran yet: leave no empty run directory behind
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        launch_run(spec, run_dir, created=created, resume=resume, out=out,
                   argv=argv or sys.argv, init_swarm=init_swarm)
        return RunResult(run_dir, rundir.read_test_metrics(run_dir))


def resume(run_dir: Path, *, out: TextIO, argv: list[str] | None,
           init_swarm: bool) -> RunResult:
    """Continue the training in ``run_dir`` (owned by this process), or say it already
    finished."""
    from autocnnp.run_manage import ownership

    spec_file = run_dir / rundir.SPEC_FILE
    try:
        spec = spec_from_dict(rundir.read_json(spec_file))
    except (TypeError, KeyError, ValueError) as exc:
        raise AutocnnpError(f"{spec_file}: not a spec this version of autocnnp can read "
                            f"({type(exc).__name__}: {exc})") from None
    done = ownership.completion(run_dir)
    if done is not None:  # rank 0's record, even when the launcher died before its last write
        ownership.settle(run_dir, rundir.read_state(run_dir))
        _say(out, f"{run_dir.name} already finished (rank 0 recorded its completion at "
                  f"{done.get('time')}); nothing to resume")
        return RunResult(run_dir, rundir.read_test_metrics(run_dir))
    for stale in (run_dir / rundir.ERRORS).glob("rank-*.json"):
        stale.rename(stale.with_suffix(".json.previous"))
    return execute(spec, run_dir, created=False, resume=True, out=out, argv=argv,
                   init_swarm=init_swarm)
