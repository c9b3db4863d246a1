"""Faults injected for real (issue 10): NaN on a rank, a diverging learning rate, corrupt
checkpoints, a full disk, a killed launcher, two owners of one run directory.

Each test breaks something the way it breaks in practice (a NaN produced on one rank, bytes
flipped in a checkpoint file, a 2 MB tmpfs, SIGKILL) and asserts the behaviour and the exact
message a user sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mpi_runs import HERE, REPO, launch, mpirun_available, write_run

from autocnnp.components.demo_data import build_demo_dataset
from autocnnp.components.rank_runtime import DIVERGED_REMEDY, nonfinite_message
from autocnnp.engine.spec import ArchitectureSpec

pytestmark = [pytest.mark.slow, pytest.mark.mpi,
              pytest.mark.skipif(not mpirun_available(), reason="needs mpirun (openmpi-bin)")]


def strict_json(text: str):
    """json.loads that refuses the bare NaN/Infinity Python's json writes by default."""
    def refuse(name: str):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "mni"
    build_demo_dataset(out, size=32, n_slices=20)
    return out


# --- 1. NaN / Inf ----------------------------------------------------------------------------

def test_nan_on_one_rank_stops_every_rank_at_that_step(demo: Path, tmp_path: Path) -> None:
    arch = ArchitectureSpec(name=None, path=HERE / "nan_on_rank.py", params={"nan_rank": 1})
    run_dir = write_run(tmp_path / "run", demo, lr=0.05, batch=3, epochs=3, ranks=2,
                        checkpoint_every=1, test=True, architecture=arch)
    proc = launch(run_dir, 2)
    assert proc.returncode == 4, proc.stderr[-3000:]
    # rank 1's loss is NaN at step 1; the averaged gradient makes every rank's weights NaN
    expected = nonfinite_message(1, 1, {0: 2, 1: 3}, None)
    assert expected == ("training diverged at epoch 1, step 1: NaN or Inf in the weights of "
                        "rank 0; the loss and the weights of rank 1; every rank stopped there. "
                        "Last good checkpoint: none (no checkpoint was written before)")
    for rank in (0, 1):
        record = json.loads((run_dir / "errors" / f"rank-{rank}.json").read_text())
        assert record["type"] == "TrainingDivergedError" and record["exit_code"] == 4
        assert record["message"] == expected
        assert record["remedy"] == DIVERGED_REMEDY
        assert f"rank {rank}: error: {expected}\n  remedy: {DIVERGED_REMEDY}" in proc.stderr
    assert "Traceback" not in proc.stderr
    for left in ("checkpoints", "model", "test_metrics.json", "metrics/epochs.jsonl"):
        assert not (run_dir / left).exists(), left


def test_weight_guard_does_not_let_nan_through(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2",
                           sys.executable, str(HERE / "nan_weights_check.py"), "1",
                           str(tmp_path)], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    message = ("TrainingDivergedError: training diverged: the weights hold NaN or Inf after "
               "training step 2 (found by the weight check)")
    # before, the NaN spread passed the "spread > tolerance" test
    assert (tmp_path / "rank-0.txt").read_text() == message
    assert (tmp_path / "rank-1.txt").read_text() == f"{message} on rank 1"


def test_diverging_run_fails_with_its_own_exit_code_and_valid_json(small_config, cli_env):
    """The issue's reproduction: SGD at lr 1e3 used to finish "successfully" with NaN."""
    config = small_config(ranks=2, epochs=4)
    config.write_text(config.read_text()
                      .replace('<property name="lr">1e-3</property>', '<property name="lr">1e3</property>')
                      .replace('<property name="optimizer">adam</property>', '<property name="optimizer">sgd</property>'))
    proc = subprocess.run([sys.executable, "-m", "autocnnp", "run", str(config)],
                          capture_output=True, text=True, env=cli_env, timeout=600)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    run_dir = next((config.parent / "runs").iterdir())
    state = strict_json((run_dir / "state.json").read_text())
    assert state["state"] == "failed" and state["exit_code"] == 4
    assert state["failure"].startswith(f"rank ")
    assert "training diverged at epoch " in state["failure"]
    assert f"autocnnp run: error: {state['failure']}\n  remedy: {DIVERGED_REMEDY}" in proc.stderr
    assert not (run_dir / "test_metrics.json").exists() and not (run_dir / "model").exists()
    assert "Test metrics" not in proc.stdout
    checkpoints = sorted((run_dir / "checkpoints").glob("epoch-*"))
    last = (f"{checkpoints[-1]} (epoch {int(checkpoints[-1].name[6:])})" if checkpoints
            else "none (no checkpoint was written before)")
    assert state["failure"].split("\n")[0].endswith(f"Last good checkpoint: {last}")
    for folder in checkpoints:  # every checkpoint that was written holds finite numbers
        assert all(v is not None for v in strict_json((folder / "state.json").read_text())["logs"].values())
    log = run_dir / "metrics" / "epochs.jsonl"
    for line in (log.read_text().splitlines() if log.exists() else []):
        strict_json(line)
