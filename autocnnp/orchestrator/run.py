"""The top-level flow of ``autocnnp run``: validate, split, then one training or a group.

The orchestrator sits on top of every other package: the engine and the generator decide
(spec, tree, plan), :mod:`autocnnp.run_manage` does (starting processes, talking to Docker),
imported only when a job really starts. Inside it, this module chooses; one training is
:mod:`~autocnnp.orchestrator.single_run`, a group of folds or repeats
:mod:`~autocnnp.orchestrator.experiment`, the case-level split
:mod:`~autocnnp.orchestrator.case_split`.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Callable, TextIO

from autocnnp.engine import rundir
from autocnnp.engine.spec import TrainingSpec
from autocnnp.generator.assembly import load_checked_spec
from autocnnp.orchestrator import experiment, single_run
from autocnnp.orchestrator.case_split import apply_split, draw_split
from autocnnp.orchestrator.experiment import RepeatsResult
from autocnnp.orchestrator.single_run import RunResult


def run_job(config: Path | None = None, *, resume_dir: Path | None = None,
            out: TextIO = sys.stdout, argv: list[str] | None = None,
            configure: Callable[[TrainingSpec], TrainingSpec] | None = None,
            init_swarm: bool = False) -> RunResult | RepeatsResult:
    """Run a training job from ``config`` (or resume the one in ``resume_dir``).

    With ``<reproducibility><property name="repeats">K``, the job runs K times (seeds seed,
    seed+1, ...) into ``RUN_DIR/repeat-K``; with ``<split folds="K">`` once per fold into
    ``RUN_DIR/fold-K``; the result is then :class:`RepeatsResult`.
    """
    if resume_dir is not None:
        from autocnnp.run_manage import ownership
        from autocnnp.run_manage.jobs import is_group, resolve_run

        run_dir = resolve_run(resume_dir)
        # refuses, naming its processes, while a launcher or ranks of the run are alive
        with ownership.owned(run_dir):
            if is_group(run_dir):  # folds or repeats: continue the members in turn
                spec, members, kind = experiment.group_members(run_dir)
                return experiment.run_group(spec, run_dir, members, kind, out=out, argv=argv,
                                            init_swarm=init_swarm)
            return single_run.resume(run_dir, out=out, argv=argv, init_swarm=init_swarm)

    assert config is not None
    warnings: list = []
    spec = load_checked_spec(config, warnings)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    if configure is not None:
        spec = configure(spec)
    record = None
    if spec.data.split is not None:
        from autocnnp.components.data_prep import prepare_data

        # the cases must be there to be split; each training checks its own split's data
        prepare_data(spec, lambda text: print(text, file=out, flush=True), check=False)
        record = draw_split(spec)  # before the run directory: a bad split leaves none
        spec = apply_split(spec, record)
    run_dir = rundir.create_run_dir(spec)
    if spec.reproducibility.repeats > 1 or (record is not None and record.get("folds")):
        return run_experiment_group(spec, run_dir, record, out=out, argv=argv,
                                    init_swarm=init_swarm)
    return single_run.execute(spec, run_dir, created=True, resume=False, out=out, argv=argv,
                              init_swarm=init_swarm)


def run_experiment_group(spec: TrainingSpec, group: Path, record: dict | None, *,
                         out: TextIO, argv: list[str] | None, init_swarm: bool) -> RepeatsResult:
    """The folds of a k-fold ``record``, or the repeats of ``spec``, into ``group``; a group
    that fails to start leaves no folder behind."""
    try:
        members = experiment.start_group(spec, group, record)
    except BaseException:
        shutil.rmtree(group, ignore_errors=True)
        raise
    kind = "folds" if record is not None and record.get("folds") else "repeats"
    return experiment.run_group(spec, group, members, kind, out=out, argv=argv,
                                init_swarm=init_swarm)
