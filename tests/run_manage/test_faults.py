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


# --- 2. a corrupt newest checkpoint ----------------------------------------------------------

def test_resume_falls_back_past_a_corrupt_checkpoint_and_removes_stale_folders(
        demo: Path, tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run", demo, lr=0.05, batch=3, epochs=3, ranks=2,
                        checkpoint_every=1)
    first = launch(run_dir, 2, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    checkpoints = run_dir / "checkpoints"
    data = checkpoints / "epoch-00003" / "ckpt.data-00000-of-00001"
    flipped = bytearray(data.read_bytes())
    flipped[len(flipped) // 2] ^= 0x01  # one bit
    data.write_bytes(bytes(flipped))
    (checkpoints / ".tmp-epoch-00004-99999").mkdir()  # a writer killed mid-write
    (checkpoints / ".tmp-epoch-00004-99999" / "ckpt.index").write_bytes(b"half")

    resumed = launch(run_dir, 2, "--resume", timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    lines = resumed.stdout.splitlines()
    assert lines[:2] == [
        "checkpoint epoch-00003 skipped: ckpt.data-00000-of-00001 does not match its sha256 in "
        "manifest.json (corrupted bytes); kept as epoch-00003.corrupt",
        "resuming from checkpoint epoch-00002 (epoch 2)"]
    assert lines[2].startswith("epoch 3/3  loss ")
    epochs = [json.loads(line)["epoch"]
              for line in (run_dir / "metrics" / "epochs.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "epoch-00001", "epoch-00002", "epoch-00003", "epoch-00003.corrupt"]
    from autocnnp.components.rank_runtime import CheckpointManager
    assert CheckpointManager.verify(checkpoints / "epoch-00003") is None
    assert "removed .tmp-epoch-00004-99999, left by a checkpoint writer that was interrupted" \
        in (run_dir / "logs" / "rank-0.log").read_text()


# --- 3, 4, 6. a killed launcher: one owner, and status / stop / --resume tell the truth -----

def _autocnnp(*args: str, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autocnnp", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def _epochs(run_dir: Path) -> list[int]:
    path = run_dir / "metrics" / "epochs.jsonl"
    return [json.loads(l)["epoch"] for l in path.read_text().splitlines()] if path.exists() else []


def _start_and_kill_launcher(config: Path, env: dict, epoch: int) -> tuple[Path, int]:
    """Start `autocnnp run`, wait for ``epoch`` epochs, SIGKILL the launcher alone (as a
    closed terminal or an OOM killer would); returns the run directory and mpirun's pid."""
    import signal
    import time

    launcher = subprocess.Popen([sys.executable, "-m", "autocnnp", "run", str(config)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                start_new_session=True)
    runs = config.parent / "runs"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        dirs = list(runs.glob("*")) if runs.exists() else []
        if dirs and len(_epochs(dirs[0])) >= epoch:
            break
        assert launcher.poll() is None
        time.sleep(0.2)
    else:
        pytest.fail(f"training did not reach epoch {epoch} in time")
    run_dir = dirs[0]
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    state = json.loads((run_dir / "state.json").read_text())
    assert state["launcher_pid"] == launcher.pid
    return run_dir, state["pgid"]


def test_killed_launcher_leaves_a_job_that_resume_refuses_and_stop_ends(small_config, cli_env):
    from autocnnp.run_manage import ownership

    config = small_config(ranks=2, epochs=400)
    run_dir, mpirun_pid = _start_and_kill_launcher(config, cli_env, epoch=2)
    status = _autocnnp("status", str(run_dir), env=cli_env)
    lines = status.stdout.splitlines()
    assert lines[0] == f"{run_dir.name}: running", status.stdout + status.stderr
    state = json.loads((run_dir / "state.json").read_text())
    assert (f"  note: the launcher (pid {state['launcher_pid']}) is gone; the job runs on: watch "
            f"it here, end it with `autocnnp stop`, and status records its end once it is over"
            in lines)
    assert any(l.startswith(f"  process: pid {mpirun_pid} (mpirun ") for l in lines)
    assert sum("autocnnp.run_manage.worker" in l for l in lines if "process:" in l) == 2

    refused = _autocnnp("run", "--resume", str(run_dir), env=cli_env)
    live = ownership.holders(run_dir)
    assert refused.returncode == 1
    assert refused.stderr == (f"autocnnp run: error: {ownership.busy_message(run_dir, live)}\n"
                              f"  remedy: wait for it (autocnnp status {run_dir}) or end it "
                              f"(autocnnp stop {run_dir})\n")
    assert {h.pid for h in live} >= {mpirun_pid}
    epochs = _epochs(run_dir)
    assert epochs == list(range(1, len(epochs) + 1))  # nobody else wrote into the run

    stopped = _autocnnp("stop", str(run_dir), env=cli_env)
    assert stopped.stdout.strip() == (f"stopped {run_dir.name}; resume with: autocnnp run "
                                      f"--resume {run_dir}"), stopped.stderr
    assert ownership.holders(run_dir) == [] and not ownership.is_live(run_dir)
    state = json.loads((run_dir / "state.json").read_text())
    assert state["state"] == "stopped"
    assert state["settled"] == "recorded by autocnnp stop; the launcher was gone"


def test_killed_launcher_job_finishes_and_status_and_resume_say_so(small_config, cli_env):
    import time

    from autocnnp.run_manage import ownership

    config = small_config(ranks=2, epochs=6)
    run_dir, _ = _start_and_kill_launcher(config, cli_env, epoch=1)
    deadline = time.monotonic() + 300
    while ownership.is_live(run_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ownership.is_live(run_dir), "the orphaned job did not end"
    assert json.loads((run_dir / "state.json").read_text())["state"] == "running"  # nobody wrote

    status = _autocnnp("status", str(run_dir), env=cli_env)
    assert status.stdout.splitlines()[:2] == [
        f"{run_dir.name}: finished", "  backend: local"], status.stdout + status.stderr
    assert ("  settled: from rank 0's completed.json; the launcher ended without recording the "
            "end") in status.stdout.splitlines()
    state = json.loads((run_dir / "state.json").read_text())
    assert state["state"] == "finished" and state["exit_code"] == 0

    resumed = _autocnnp("run", "--resume", str(run_dir), env=cli_env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    done = json.loads((run_dir / "completed.json").read_text())
    assert resumed.stdout.splitlines()[0] == (
        f"{run_dir.name} already finished (rank 0 recorded its completion at {done['time']}); "
        f"nothing to resume")
    assert "Test metrics" in resumed.stdout
    assert _epochs(run_dir) == [1, 2, 3, 4, 5, 6]


# --- 5. a disk that fills up during training -------------------------------------------------

def _fill(folder: Path) -> None:
    with open(folder / "filler", "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass


def test_disk_full_during_training_is_reported_and_recorded(small_config, cli_env,
                                                            small_disk) -> None:
    import re
    import time

    from autocnnp.components.rank_runtime import CheckpointManager

    disk = small_disk("24m")
    config = small_config(ranks=2, epochs=400)
    config.write_text(re.sub(r"<run_root>.*</run_root>", f"<run_root>{disk}/runs</run_root>",
                             config.read_text()))
    launcher = subprocess.Popen([sys.executable, "-m", "autocnnp", "run", str(config)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=cli_env)
    deadline = time.monotonic() + 300
    run_dir = None
    while time.monotonic() < deadline:
        dirs = list((disk / "runs").glob("*"))
        if dirs and len(_epochs(dirs[0])) >= 2:
            run_dir = dirs[0]
            break
        assert launcher.poll() is None, launcher.communicate()
        time.sleep(0.2)
    assert run_dir is not None, "training did not reach epoch 2 in time"
    _fill(disk)
    out, err = launcher.communicate(timeout=300)
    assert launcher.returncode == 5, out + err
    message = re.search(r"autocnnp run: error: rank 0 on \S+ failed: DiskFullError: (.*)", err)
    assert message, err
    assert re.fullmatch(rf"no space left on {run_dir}/(checkpoints|metrics) \(0\.\d MB free\)"
                        rf"(, need about \d+ MB)?", message.group(1)), message.group(1)
    assert "remedy: free space there" in err and f"autocnnp run --resume {run_dir}" in err
    assert "Traceback" not in err
    # the launcher recorded the end on the full disk, and the rank's record survived too
    state = json.loads((run_dir / "state.json").read_text())
    assert state["state"] == "failed" and state["exit_code"] == 5
    assert "DiskFullError: no space left on" in state["failure"]
    assert json.loads((run_dir / "errors" / "rank-0.json").read_text())["type"] == "DiskFullError"
    # earlier checkpoints are intact, nothing half-written is left
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names and all(n.startswith("epoch-") for n in names), names
    assert all(CheckpointManager.verify(run_dir / "checkpoints" / n) is None for n in names)
