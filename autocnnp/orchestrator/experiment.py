"""Experiments of several trainings: k-fold cross-validation and repeats, and the scheduler
that runs the trainings of a group one after another or packed.

* A group is a folder of member runs (``fold-K`` or ``repeat-K``) with ``group.json`` (what the
  members are), ``spec.json`` (the group's spec) and, when done, ``folds.json`` or
  ``repeats.json`` (mean, sd and 95% CI of every test metric, and the members' metrics).
  :func:`run_group` runs the members that have not finished: a resumed group continues its
  members one by one (finished ones are kept, started ones resume from their checkpoints).
  The folds come from the case-level split (:mod:`autocnnp.orchestrator.case_split`); each
  member is one training (:mod:`autocnnp.orchestrator.single_run`).
* :func:`schedule` is the plan of a group on the slots of the machine: with
  ``group_mode=data_parallel`` the trainings run one after another, each with its
  parallelism-degree ranks; with ``packed``, ``slots // parallelism-degree`` run at once, each
  in its own process (``python -m autocnnp.orchestrator.member RUN_DIR``, started by
  :mod:`autocnnp.run_manage.slots`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from autocnnp.engine import rundir
from autocnnp.engine import splits as S
from autocnnp.engine.rundir import FOLDS_FILE, GROUP_FILE, PER_CASE_FILE, SPLITS_FILE
from autocnnp.engine.spec import GroupMode, TrainingSpec, spec_from_dict, spec_to_dict
from autocnnp.errors import JobFailedError
from autocnnp.orchestrator.case_split import fold_cases, with_cases
from autocnnp.orchestrator.single_run import RunResult, execute


def _say(out: TextIO, text: str) -> None:
    out.write(text + "\n")
    out.flush()


# --- groups ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Member:
    """One training of a group: its folder name, its spec, its label in messages."""

    name: str
    spec: TrainingSpec
    label: str


@dataclass(frozen=True)
class Schedule:
    """How a group's trainings use the machine: ``at_once`` of them run together, in
    ``order``; a training starts as soon as one before it ends."""

    mode: GroupMode
    slots: int
    ranks_per_training: int
    at_once: int
    order: tuple[str, ...]

    def describe(self) -> list[str]:
        """The schedule as lines for ``plan``."""
        if self.mode is GroupMode.PACKED:
            lines = [f"group mode: packed: {self.at_once} training(s) at once on {self.slots} "
                     f"slot(s), {self.ranks_per_training} rank(s) each",
                     f"  start:     {', '.join(self.order[:self.at_once])}"]
            if self.order[self.at_once:]:
                lines.append(f"  then, each as a training ends: "
                             f"{', '.join(self.order[self.at_once:])}")
            return lines
        return [f"group mode: data_parallel: one training at a time, "
                f"{self.ranks_per_training} rank(s) each",
                f"  in turn:   {', '.join(self.order)}"]


def default_slots() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def schedule(spec: TrainingSpec, names: list[str]) -> Schedule:
    """Pure: how the trainings ``names`` of a group run (see the module).

    Packed: each training takes parallelism-degree slots; as many run at once as fit (at
    least one, even when a training needs more slots than there are)."""
    mode = spec.deployment.group_mode
    ranks = spec.parallelism_degree
    slots = spec.deployment.slots or default_slots()
    width = max(1, slots // ranks) if mode is GroupMode.PACKED else 1
    return Schedule(mode, slots, ranks, min(width, max(len(names), 1)), tuple(names))


def members_of(spec: TrainingSpec, record: dict[str, Any] | None) -> list[Member]:
    """The trainings of a k-fold (``record`` with folds) or repeats group."""
    if record is not None and record.get("folds"):
        k = len(record["folds"])
        return [Member(f"fold-{i}", with_cases(spec, fold_cases(spec, record, i), fold=i),
                       f"fold {i}/{k}") for i in range(1, k + 1)]
    repeats = spec.reproducibility.repeats
    base = spec.reproducibility.seed
    return [Member(f"repeat-{k}", spec.replace(reproducibility=dataclasses.replace(
        spec.reproducibility, seed=base + k - 1, repeats=1)),
        f"repeat {k}/{repeats} (seed {base + k - 1})") for k in range(1, repeats + 1)]


def start_group(spec: TrainingSpec, group: Path, record: dict[str, Any] | None) -> list[Member]:
    """Write the group's own files (config copy, spec, group.json, splits.json) and return
    its members."""
    import shutil

    members = members_of(spec, record)
    shutil.copy2(spec.source, group / rundir.CONFIG_COPY)
    rundir.write_json(group / rundir.SPEC_FILE, spec_to_dict(spec))
    if record is not None:
        rundir.write_json(group / SPLITS_FILE, {**record, "members": {
            m.name: {name: list(m.spec.data.cases.get(name, ())) for name in S.SPLIT_NAMES}
            for m in members if m.spec.data.cases is not None}})
    kind = "folds" if record is not None and record.get("folds") else "repeats"
    rundir.write_json(group / GROUP_FILE, {"kind": kind, "config": str(spec.source),
                                           "members": [m.name for m in members]})
    return members


def group_members(group: Path) -> tuple[TrainingSpec, list[Member], str]:
    """The spec, members and kind of an existing group (for ``--resume``)."""
    info = rundir.read_json(group / GROUP_FILE)
    spec = spec_from_dict(rundir.read_json(group / rundir.SPEC_FILE))
    record = rundir.read_json(group / SPLITS_FILE) if (group / SPLITS_FILE).exists() else None
    return spec, members_of(spec, record), info.get("kind", "repeats")


def _finished(run_dir: Path) -> bool:
    from autocnnp.run_manage import ownership

    return ownership.completion(run_dir) is not None


def run_group(spec: TrainingSpec, group: Path, members: list[Member], kind: str, *,
              out: TextIO, argv: list[str] | None, init_swarm: bool) -> RepeatsResult:
    """Run every member that has not finished (see :func:`schedule`), then summarise; this
    process owns the group for that time and ``group.json`` names it, so that ``autocnnp
    status`` and ``stop`` find it."""
    from autocnnp.run_manage import ownership

    with ownership.owned(group):
        rundir.update_json(group / GROUP_FILE, launcher_pid=os.getpid())
        return _run_members(spec, group, members, kind, out=out, argv=argv,
                            init_swarm=init_swarm)


def _run_members(spec: TrainingSpec, group: Path, members: list[Member], kind: str, *,
                 out: TextIO, argv: list[str] | None, init_swarm: bool) -> RepeatsResult:
    todo = [m for m in members if not _finished(group / m.name)]
    for m in members:
        if m not in todo:
            _say(out, f"== {m.label}: finished before; kept")
    plan = schedule(spec, [m.name for m in todo])
    if todo:
        _say(out, plan.describe()[0])
    started = time.monotonic()
    if plan.mode is GroupMode.PACKED and plan.at_once > 1:
        _run_packed(group, todo, plan, out=out)
    else:
        _run_in_turn(group, todo, out=out, argv=argv, init_swarm=init_swarm)
    wall = time.monotonic() - started
    results = [RunResult(group / m.name, rundir.read_test_metrics(group / m.name))
               for m in members]
    summary = summarize_group(spec, group, members, results, kind, wall_s=wall, mode=plan.mode)
    return RepeatsResult(group, tuple(results), summary["summary"])


def _run_in_turn(group: Path, todo: list[Member], *, out: TextIO, argv: list[str] | None,
                 init_swarm: bool) -> None:
    for m in todo:
        run_dir = group / m.name
        prepared = (run_dir / rundir.SPEC_FILE).exists()
        resume = launched_before(run_dir)
        run_dir.mkdir(exist_ok=True)
        _say(out, f"== {m.label}" + (" (resuming)" if resume else ""))
        execute(m.spec, run_dir, created=not prepared, resume=resume, out=out, argv=argv,
                 init_swarm=init_swarm)


def launched_before(run_dir: Path) -> bool:
    """Whether a member's training was launched before (it resumes); a member prepared but
    never started, as a group stopped early leaves one, starts from its first epoch."""
    return (run_dir / rundir.STATE_FILE).exists()


def prepare_member(m: Member, run_dir: Path) -> bool:
    """Create a member's run directory for a child process; True when it resumes
    (:func:`launched_before`)."""
    if not (run_dir / rundir.SPEC_FILE).exists():
        run_dir.mkdir(exist_ok=True)
        rundir.populate_run_dir(m.spec, run_dir)
    return launched_before(run_dir)


def member_command(run_dir: Path, resume: bool) -> list[str]:
    """The command of one packed training (:mod:`autocnnp.orchestrator.member`)."""
    return [sys.executable, "-m", "autocnnp.orchestrator.member", str(run_dir)] + \
        (["--resume"] if resume else [])


def _run_packed(group: Path, todo: list[Member], plan: Schedule, *, out: TextIO) -> None:
    """Keep ``plan.at_once`` member processes running until every member has run."""
    from autocnnp.components.data_prep import check_data, prepare_data
    from autocnnp.run_manage.slots import SlotJob, run_in_slots

    prepare_data(todo[0].spec, lambda text: _say(out, text), check=False)
    for m in todo:
        check_data(m.spec)
    labels = {m.name: m.label for m in todo}
    jobs = []
    for m in todo:
        resume = prepare_member(m, group / m.name)
        jobs.append(SlotJob(m.name, member_command(group / m.name, resume),
                            group / m.name / rundir.MEMBER_LOG))

    def started(job: SlotJob, pid: int) -> None:
        resuming = " (resuming)" if "--resume" in job.command else ""
        _say(out, f"== {labels[job.name]}: started{resuming} (pid {pid}, log {job.log})")

    def ended(job: SlotJob, code: int, seconds: float) -> None:
        if code == 0:
            _say(out, f"== {labels[job.name]}: finished in {seconds:.0f} s"
                      f"{_dice_text(group / job.name)}")
        else:
            _say(out, f"== {labels[job.name]}: FAILED (exit {code}) after {seconds:.0f} s; "
                      f"see {job.log}")

    codes = run_in_slots(jobs, plan.at_once, started=started, ended=ended)
    failed = [(name, code) for name, code in codes.items() if code != 0]
    if failed:
        names = ", ".join(f"{name} (exit {code})" for name, code in failed)
        raise JobFailedError(f"{len(failed)} training(s) of the group failed: {names}",
                             remedy=f"read their logs/member.out; continue with: autocnnp run "
                                    f"--resume {group}", exit_code=failed[0][1])


def _dice_text(run_dir: Path) -> str:
    metrics = rundir.read_test_metrics(run_dir)
    if metrics is None:
        return ""
    value = (metrics.get("means") or {}).get("mean_dice_foreground")
    return f": test dice {value:.3f}" if isinstance(value, (int, float)) else ""


# --- summaries -------------------------------------------------------------------------------

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



def summarize_group(spec: TrainingSpec, group: Path, members: list[Member], results: list,
                    kind: str, *, wall_s: float | None = None,
                    mode: GroupMode | None = None) -> dict[str, Any]:
    """Write ``folds.json`` or ``repeats.json`` (and the group's ``per_case.csv``) and return
    what was written."""
    values: dict[str, list[float]] = {}
    per_member = []
    for m, result in zip(members, results):
        means = (result.test_metrics or {}).get("means") or {}
        for name, value in means.items():
            values.setdefault(name, []).append(value)
        per_member.append({"name": m.name, "seed": m.spec.reproducibility.seed,
                           "fold": m.spec.data.fold, "means": means,
                           "test_cases": len((m.spec.data.cases or {}).get("test", ()))
                           if m.spec.data.cases else None})
    summary = summarize_repeats(values)
    record: dict[str, Any] = {
        "config": str(spec.source), "kind": kind,
        "seeds": [m.spec.reproducibility.seed for m in members],
        "runs": [str(r.run_dir) for r in results], "members": per_member, "summary": summary,
        "group_mode": (mode or spec.deployment.group_mode).value, "wall_s": wall_s}
    rows = _group_per_case(group, members)
    if rows:
        record["per_case"] = PER_CASE_FILE
        record["per_case_summary"] = per_case_spread(rows)
    rundir.write_json(group / (FOLDS_FILE if kind == "folds" else rundir.REPEATS_FILE), record)
    return record


def read_per_case(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``per_case.csv``, numbers as floats (empty cells as NaN)."""
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            parsed: dict[str, Any] = {}
            for key, value in row.items():
                if key in ("case", "member"):
                    parsed[key] = value
                    continue
                try:
                    parsed[key] = float(value) if value not in ("", None) else float("nan")
                except ValueError:
                    parsed[key] = value
            rows.append(parsed)
    return rows


def _group_per_case(group: Path, members: list[Member]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for m in members:
        path = group / m.name / PER_CASE_FILE
        if path.exists():
            rows += [{"member": m.name, **row} for row in read_per_case(path)]
    if rows:
        columns = list(rows[0])
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        rundir.atomic_write(group / PER_CASE_FILE, buffer.getvalue().encode())
    return rows


def per_case_spread(rows: list[dict[str, Any]], metric: str = "mean_dice_foreground"
                    ) -> dict[str, Any]:
    """Median, quartiles, minimum (and its case) of ``metric`` over the cases of ``rows``."""
    import math

    import numpy as np

    pairs = [(row[metric], row["case"]) for row in rows
             if isinstance(row.get(metric), float) and math.isfinite(row[metric])]
    if not pairs:
        return {}
    values = np.array([v for v, _ in pairs])
    worst = min(pairs)
    return {"metric": metric, "rows": len(pairs), "median": float(np.median(values)),
            "q1": float(np.percentile(values, 25)), "q3": float(np.percentile(values, 75)),
            "min": float(worst[0]), "min_case": worst[1], "max": float(values.max())}
