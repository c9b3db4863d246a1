"""The top-level flow of ``autocnnp run``: validate, prepare, plan, launch, report.

The orchestrator sits on top of every other package: the engine and the generator decide
(spec, tree, plan), :mod:`autocnnp.run_manage` does (starting processes, talking to Docker),
imported only when a job really starts.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

from autocnnp.engine import rundir
from autocnnp.engine.spec import TrainingSpec, spec_from_dict, spec_to_dict
from autocnnp.errors import AutocnnpError, DataError, EnvironmentProblemError
from autocnnp.generator.assembly import load_checked_spec


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
    from autocnnp.orchestrator.experiment import SPLITS_FILE, split_record_of

    record = split_record_of(spec)
    if record is not None:
        rundir.write_json(run_dir / SPLITS_FILE, record)


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


def run_job(config: Path | None = None, *, resume_dir: Path | None = None,
            out: TextIO = sys.stdout, argv: list[str] | None = None,
            configure: Callable[[TrainingSpec], TrainingSpec] | None = None,
            init_swarm: bool = False) -> RunResult:
    """Run a training job from ``config`` (or resume the one in ``resume_dir``).

    With ``<reproducibility><property name="repeats">K``, the job runs K times (seeds seed,
    seed+1, ...) into ``RUN_DIR/repeat-K`` and the result is :class:`RepeatsResult`.
    """
    if resume_dir is not None:
        from autocnnp.run_manage import ownership
        from autocnnp.run_manage.jobs import resolve_run

        run_dir = resolve_run(resume_dir)
        # refuses, naming its processes, while a launcher or ranks of the run are alive
        ownership.acquire(run_dir)
        try:
            return _resume(run_dir, out=out, argv=argv, init_swarm=init_swarm)
        finally:
            ownership.release(run_dir)

    assert config is not None
    warnings: list = []
    spec = load_checked_spec(config, warnings)
    for warning in warnings:
        _say(sys.stderr, f"warning: {warning}")
    if configure is not None:
        spec = configure(spec)
    record = None
    if spec.data.split is not None:
        from autocnnp.orchestrator.experiment import apply_split, draw_split

        ensure_data(spec, out)  # the cases must be there to be split
        record = draw_split(spec)  # before the run directory: a bad split leaves none
        spec = apply_split(spec, record)
    run_dir = rundir.create_run_dir(spec)
    if spec.reproducibility.repeats > 1 or (record is not None and record.get("folds")):
        return run_experiment_group(spec, run_dir, record, out=out, argv=argv,
                                    init_swarm=init_swarm)
    return _execute(spec, run_dir, created=True, resume=False, out=out, argv=argv,
                    init_swarm=init_swarm)


def run_experiment_group(spec: TrainingSpec, group: Path, record: dict | None, *,
                         out: TextIO, argv: list[str] | None, init_swarm: bool) -> "RepeatsResult":
    """The folds of a k-fold ``record``, or the repeats of ``spec``, into ``group``
    (:mod:`autocnnp.orchestrator.experiment`)."""
    from autocnnp.orchestrator.experiment import run_group, start_group

    try:
        members = start_group(spec, group, record)
    except BaseException:
        shutil.rmtree(group, ignore_errors=True)
        raise
    kind = "folds" if record is not None and record.get("folds") else "repeats"
    return run_group(spec, group, members, kind, out=out, argv=argv, init_swarm=init_swarm)


def _resume(run_dir: Path, *, out: TextIO, argv: list[str] | None,
            init_swarm: bool) -> RunResult:
    """Continue the run in ``run_dir`` (owned by this process), or say it already finished."""
    from autocnnp.run_manage import ownership

    from autocnnp.orchestrator.experiment import group_members, is_group, run_group

    if is_group(run_dir):  # folds or repeats: continue the members one by one
        spec, members, kind = group_members(run_dir)
        return run_group(spec, run_dir, members, kind, out=out, argv=argv,
                         init_swarm=init_swarm)
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
    return _execute(spec, run_dir, created=False, resume=True, out=out, argv=argv,
                    init_swarm=init_swarm)


def _execute(spec: TrainingSpec, run_dir: Path, *, created: bool, resume: bool, out: TextIO,
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


@dataclass(frozen=True)
class RepeatsResult:
    """K runs of one config and the statistics of their test metrics."""

    run_dir: Path
    runs: tuple[RunResult, ...]
    summary: dict[str, dict[str, float]]
    test_metrics: dict[str, Any] | None = None


def summarize_repeats(values: dict[str, list[float]], confidence: float = 0.95) -> dict[str, dict[str, float]]:
    """Mean, sample standard deviation and a Student-t confidence interval per metric."""
    import math

    from scipy import stats

    summary = {}
    for name, xs in values.items():
        xs = [x for x in xs if x is not None and math.isfinite(x)]
        if not xs:
            continue
        n = len(xs)
        mean = sum(xs) / n
        std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
        half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n) if n > 1 else float("nan")
        summary[name] = {"mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half,
                         "runs": n, "confidence": confidence}
    return summary


def run_repeats(spec: TrainingSpec, group: Path, *, out: TextIO, argv: list[str] | None,
                init_swarm: bool) -> RepeatsResult:
    """Run ``spec`` ``repeats`` times with seeds seed, seed+1, ... and summarise the metrics.

    Run-to-run variance is part of the result (thesis chapter 5; Bosma et al.): report the
    mean with its confidence interval, not one run.
    """
    return run_experiment_group(spec, group, None, out=out, argv=argv, init_swarm=init_swarm)
