"""One training, start to end: prepare the data and the run directory, own it, launch the
ranks through the config's backend, collect the test metrics.

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
from autocnnp.engine.spec import TrainingSpec, spec_from_dict, spec_to_dict
from autocnnp.errors import AutocnnpError, DataError, EnvironmentProblemError
from autocnnp.orchestrator.case_split import split_record_of


@dataclass(frozen=True)
class RunResult:
    """Where a finished run is and what it measured on the test split."""

    run_dir: Path
    test_metrics: dict[str, Any] | None


def _say(out: TextIO, text: str) -> None:
    out.write(text + "\n")
    out.flush()


def prepare_run_dir(spec: TrainingSpec, run_dir: Path) -> None:
    """Create the run directory with the config copy and the spec every rank reads."""
    for sub in (rundir.LOGS, rundir.ERRORS, rundir.CHECKPOINTS):
        (run_dir / sub).mkdir()
    shutil.copy2(spec.source, run_dir / rundir.CONFIG_COPY)
    rundir.write_json(run_dir / rundir.SPEC_FILE, spec_to_dict(spec))
    record = split_record_of(spec)
    if record is not None:
        rundir.write_json(run_dir / rundir.SPLITS_FILE, record)


def ensure_data(spec: TrainingSpec, out: TextIO) -> None:
    """Build the demo dataset when asked for and missing; run the preprocessing block."""
    if spec.data.demo == "msd" and not spec.data.train.exists():
        from autocnnp.components.demo_data import build_msd_demo

        _say(out, f"building the MSD demo cases in {spec.data.train} ...")
        build_msd_demo(spec.data.train, size=spec.data.image_size or 32)
    elif spec.data.demo and not spec.data.train.exists():
        from autocnnp.components.demo_data import build_demo_dataset

        target = spec.data.train.parent
        _say(out, f"building the {spec.data.demo} demo dataset in {target} ...")
        build_demo_dataset(target, size=spec.data.image_size or 128)
    if spec.preprocessing is not None:
        from autocnnp.components.imgmed.pipeline import run_preprocessing

        _say(out, f"preprocessing {spec.preprocessing.source} -> {spec.preprocessing.output}")
        run_preprocessing(spec.preprocessing)
    for split in ("train", "valid", "test"):
        path = getattr(spec.data, split)
        if path is not None and not path.exists():
            raise DataError(f"{split} data {path} does not exist",
                            remedy="build it (autocnnp demo-data / autocnnp preprocess) or fix "
                                   "the <data> paths of the config")


def check_data(spec: TrainingSpec) -> None:
    """Check every split before launching, cheaply: the folders' roles and a sample of masks
    (:func:`~autocnnp.components.data_checks.run_cheap_checks`, what ``validate`` runs), then
    listing, headers and one sample each (:func:`~autocnnp.components.datasets.check_splits`);
    a file that is unreadable past its header fails the rank that reads it, naming the file."""
    from autocnnp.components.data_checks import run_cheap_checks
    from autocnnp.components.datasets import check_splits
    from autocnnp.errors import ConfigError

    problems = run_cheap_checks(spec).problems
    if problems:
        raise ConfigError(problems)
    check_splits(spec.data)


def execute(spec: TrainingSpec, run_dir: Path, *, created: bool, resume: bool, out: TextIO,
             argv: list[str] | None, init_swarm: bool) -> RunResult:
    """Own the run directory (:mod:`autocnnp.run_manage.ownership`) for the job's life, then
    :func:`_execute_owned`."""
    from autocnnp.run_manage import ownership

    ownership.acquire(run_dir)  # held until the job ends; mpirun inherits it
    try:
        return _execute_owned(spec, run_dir, created=created, resume=resume, out=out,
                              argv=argv, init_swarm=init_swarm)
    finally:
        ownership.release(run_dir)


def _execute_owned(spec: TrainingSpec, run_dir: Path, *, created: bool, resume: bool,
                   out: TextIO, argv: list[str] | None, init_swarm: bool) -> RunResult:
    """Prepare data and the run directory, launch the ranks, collect the test metrics."""
    from autocnnp.generator.assembly import assemble
    from autocnnp.run_manage.backend import get_backend
    from autocnnp.run_manage.records import build_manifest

    try:
        ensure_data(spec, out)
        check_data(spec)
        assemble(spec, load_plugins=True)  # import plugin files now: fail before any rank starts
        if created:
            prepare_run_dir(spec, run_dir)
    except BaseException:
        if created:  # nothing ran yet: leave no empty run directory behind
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    backend = get_backend(spec.deployment.backend, out=out, init=init_swarm or None)
    image = spec.deployment.image if backend.uses_image else None
    rundir.write_json(run_dir / rundir.MANIFEST_FILE, build_manifest(spec, argv or sys.argv, image))

    plan = backend.plan(spec, run_dir, resume=resume)
    rundir.write_json(run_dir / rundir.PLAN_FILE, plan.to_dict())
    _say(out, f"run dir: {run_dir}")
    _say(out, backend.announce(plan))
    try:
        backend.launch(spec, plan, run_dir, resume=resume)
    except EnvironmentProblemError:
        # refused by the backend's pre-flight (no launcher, no such partition, ...): no rank
        # ran and no state was recorded, so a new run directory goes, as above
        if created and not (run_dir / rundir.STATE_FILE).exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise

    metrics_file = run_dir / rundir.TEST_METRICS
    metrics = rundir.read_json(metrics_file) if metrics_file.exists() else None
    return RunResult(run_dir, metrics)


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
        metrics_file = run_dir / rundir.TEST_METRICS
        return RunResult(run_dir, rundir.read_json(metrics_file)
                         if metrics_file.exists() else None)
    for stale in (run_dir / rundir.ERRORS).glob("rank-*.json"):
        stale.rename(stale.with_suffix(".json.previous"))
    return execute(spec, run_dir, created=False, resume=True, out=out, argv=argv,
                   init_swarm=init_swarm)
