"""The schedule of a group's trainings: packed into slots or one after another, as `plan`
shows it."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from autocnnp.engine.spec import GroupMode
from autocnnp.errors import ConfigError
from autocnnp.generator.assembly import load_checked_spec
from autocnnp.orchestrator.experiment import schedule

ROOT = Path(__file__).resolve().parents[2]


def _spec(**deployment):
    spec = load_checked_spec(ROOT / "configs" / "crossval.xml")
    return spec.replace(deployment=dataclasses.replace(spec.deployment, **deployment))


def test_packed_fills_the_slots_and_data_parallel_runs_in_turn():
    names = [f"fold-{k}" for k in range(1, 6)]
    packed = schedule(_spec(slots=4), names)
    assert (packed.mode, packed.at_once, packed.ranks_per_training) == (GroupMode.PACKED, 4, 1)
    two_ranks = schedule(_spec(slots=4).replace(parallelism_degree=2), names)
    assert two_ranks.at_once == 2
    assert schedule(_spec(slots=1).replace(parallelism_degree=2), names).at_once == 1
    in_turn = schedule(_spec(group_mode=GroupMode.DATA_PARALLEL), names)
    assert in_turn.at_once == 1 and in_turn.order == tuple(names)
    assert in_turn.describe() == ["group mode: data_parallel: one training at a time, 1 rank(s) "
                                  "each", "  in turn:   fold-1, fold-2, fold-3, fold-4, fold-5"]


def test_plan_shows_the_split_and_the_schedule(cli_env):
    done = subprocess.run([sys.executable, "-m", "autocnnp", "plan",
                           str(ROOT / "configs" / "crossval.xml")], capture_output=True,
                          text=True, env=cli_env, timeout=120)
    assert done.returncode == 0, done.stderr
    tail = done.stdout.split("\nExperiment\n")[1].splitlines()
    assert tail == [
        f"split:     3 folds of the cases in {ROOT / 'data' / 'Task90_Brain'} (seed 0, "
        "stratified by site)",
        "group mode: packed: 2 training(s) at once on 2 slot(s), 1 rank(s) each",
        "  start:     fold-1, fold-2",
        "  then, each as a training ends: fold-3"]


def test_bad_group_settings_are_config_errors(tmp_path):
    text = (ROOT / "configs" / "crossval.xml").read_text()
    text = text.replace('<property name="group_mode">packed</property>',
                        '<property name="group_mode">pack</property>')
    text = text.replace("</deployment>", "</deployment><reproducibility><property "
                                         "name=\"repeats\">3</property></reproducibility>")
    config = tmp_path / "c.xml"
    config.write_text(text.replace("../data/Task90_Brain", str(ROOT / "data" / "Task90_Brain")))
    with pytest.raises(ConfigError) as err:
        load_checked_spec(config)
    assert [str(p).split(": ", 1)[1] for p in err.value.problems] == [
        "<property name=\"group_mode\">: 'pack' is not one of data_parallel, packed; did you "
        "mean 'packed'?",
        "<property name=\"repeats\">: repeats and <split folds> exclude each other: a k-fold "
        "group is already k trainings (repeat the cross-validation with another split seed)"]
