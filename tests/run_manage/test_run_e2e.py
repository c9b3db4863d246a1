"""`autocnnp run` end to end with real MPI ranks: run directory, failure of a rank, resume."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.mpi]


def autocnnp(*args: str, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autocnnp", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def epochs_done(run_dir: Path) -> list[int]:
    path = run_dir / "metrics" / "epochs.jsonl"
    if not path.exists():
        return []
    return [json.loads(l)["epoch"] for l in path.read_text().splitlines() if l.strip()]


def test_run_leaves_a_complete_run_directory(small_config, cli_env):
    config = small_config(ranks=2, epochs=3)
    result = autocnnp("run", str(config), env=cli_env)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "epoch 3/3" in out
    assert "Test metrics" in out and "grey_matter" in out and "mean_dice" in out
    run_dir = Path(out.strip().splitlines()[-1].removeprefix("run directory: "))
    assert run_dir.is_dir()

    for name in ("config.xml", "spec.json", "plan.json", "manifest.json", "state.json",
                 "test_metrics.json", "logs/rank-0.log", "logs/rank-1.log", "logs/launcher.log"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "config.xml").read_text() == config.read_text()
    assert epochs_done(run_dir) == [1, 2, 3]
    # the loss and metric accumulators exist before fit: the training step is traced once,
    # not twice (a tf.function that creates variables on its first call is traced again)
    for rank in (0, 1):
        assert "training step traced 1 time(s)" in (run_dir / f"logs/rank-{rank}.log").read_text()
    first = json.loads((run_dir / "metrics" / "epochs.jsonl").read_text().splitlines()[0])
    assert first["lr"] == pytest.approx(2e-3)  # linear scaling: 1e-3 x 2 ranks
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert (run_dir / "model" / "saved_model.pb").is_file()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["epoch-00001", "epoch-00002", "epoch-00003"]

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["packages"]["tensorflow-cpu"] == "2.15.1"
    assert manifest["packages"]["horovod"] == "0.28.1"
    assert manifest["data"]["train"]["files"] > 0 and len(manifest["data"]["train"]["sha256"]) == 64
    assert manifest["hardware"]["cpu_cores"] >= 1
    state = json.loads((run_dir / "state.json").read_text())
    assert state["state"] == "finished" and state["exit_code"] == 0
    metrics = json.loads((run_dir / "test_metrics.json").read_text())
    assert 0.0 < metrics["means"]["mean_dice"] <= 1.0

    status = autocnnp("status", str(run_dir), env=cli_env)
    assert status.returncode == 0
    assert status.stdout.startswith(f"{run_dir.name}: finished")
    logs = autocnnp("logs", str(run_dir), "--rank", "1", env=cli_env)
    assert "rank 1/2" in logs.stdout
    report = autocnnp("report", str(run_dir), env=cli_env)
    assert report.returncode == 0, report.stderr
    assert "Checklist (Renard et al. 2020): 8/9 satisfied" in report.stdout
    assert (run_dir / "report.md").read_text() in report.stdout


def start_and_wait_for_epoch(config: Path, env: dict, runs: Path, epoch: int,
                             timeout: float = 240) -> tuple[subprocess.Popen, Path | None]:
    """Start `autocnnp run CONFIG` and return once its run has finished ``epoch`` epochs."""
    proc = subprocess.Popen([sys.executable, "-m", "autocnnp", "run", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dirs = list(runs.glob("small-*")) if runs.exists() else []
        if dirs and len(epochs_done(dirs[0])) >= epoch:
            return proc, dirs[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    return proc, None


def _rank_process(run_dir: Path, rank: int) -> psutil.Process | None:
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "autocnnp.run_manage.worker" in cmd and str(run_dir) in cmd:
            try:
                if proc.environ().get("OMPI_COMM_WORLD_RANK") == str(rank):
                    return proc
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
    return None


def test_killed_rank_fails_fast_and_resume_finishes(small_config, cli_env, tmp_path):
    config = small_config(ranks=2, epochs=12, keep=2)
    proc, run_dir = start_and_wait_for_epoch(config, cli_env, tmp_path / "runs", epoch=2)
    assert run_dir is not None, "training did not reach epoch 2 in time"
    victim = _rank_process(run_dir, 1)
    assert victim is not None
    killed_at = time.monotonic()
    victim.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    stopped_after = time.monotonic() - killed_at
    assert proc.returncode == 1, out + err
    assert stopped_after < 30, f"job took {stopped_after:.1f}s to stop after a rank died"
    assert "autocnnp run: error: rank 1" in err and "was killed by signal 9 (Killed)" in err
    assert f"autocnnp run --resume {run_dir}" in err
    # one message: no rank's traceback, no other rank's error line, no mpirun banner
    assert "Traceback" not in out + err and "HorovodInternalError" not in out + err
    assert not re.search(r"^rank \d+: error", out + err, re.M)
    assert "mpirun noticed" not in out + err and "-----" not in out + err
    # no rank of the job is left running
    assert _rank_process(run_dir, 0) is None and _rank_process(run_dir, 1) is None
    state = json.loads((run_dir / "state.json").read_text())
    assert state["state"] == "failed" and state["failed_rank"] == 1

    done_before = epochs_done(run_dir)
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir() if not p.name.startswith("."))
    assert checkpoints, "the last checkpoint must survive the failure"
    last = run_dir / "checkpoints" / checkpoints[-1]
    assert (last / "ckpt.index").is_file() and (last / "state.json").is_file()
    assert len(checkpoints) <= 2  # keep_checkpoints

    resumed = autocnnp("run", "--resume", str(run_dir), env=cli_env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "epoch 12/12" in resumed.stdout
    epochs = epochs_done(run_dir)
    resumed_from = int(checkpoints[-1].split("-")[1])
    assert epochs[: len(done_before)] == done_before
    assert epochs[len(done_before):] == list(range(resumed_from + 1, 13))
    assert (run_dir / "test_metrics.json").is_file()
    assert json.loads((run_dir / "state.json").read_text())["state"] == "finished"


def test_stop_ends_every_rank_keeps_checkpoints_and_says_stopped(small_config, cli_env, tmp_path):
    config = small_config(ranks=2, epochs=40, keep=2)
    proc, run_dir = start_and_wait_for_epoch(config, cli_env, tmp_path / "runs", epoch=2)
    assert run_dir is not None
    running = autocnnp("status", str(run_dir), env=cli_env, timeout=60)
    assert running.stdout.startswith(f"{run_dir.name}: running"), running.stdout + running.stderr
    stopped = autocnnp("stop", str(run_dir), env=cli_env, timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == f"stopped {run_dir.name}; resume with: autocnnp run --resume {run_dir}"
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "the job was stopped on request (autocnnp stop); finished checkpoints are intact" in err
    assert _rank_process(run_dir, 0) is None and _rank_process(run_dir, 1) is None
    state = json.loads((run_dir / "state.json").read_text())
    assert state["state"] == "stopped"
    assert any((run_dir / "checkpoints").iterdir())


def test_hosts_backend_runs_through_mpirun_host_list(small_config, cli_env):
    """The hosts backend on this machine's own name: the -H path of mpirun, for real."""
    config = small_config(ranks=2, epochs=1)
    config.write_text(config.read_text().replace(
        '<deployment backend="local"><property name="threads_per_rank">1</property></deployment>',
        '<deployment backend="hosts"><property name="hosts">localhost:2</property>'
        '<property name="threads_per_rank">1</property></deployment>'))
    result = autocnnp("run", str(config), env=cli_env)
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1].removeprefix("run directory: "))
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["backend"] == "hosts"
    assert plan["command"][plan["command"].index("-H") + 1] == "localhost:2"
    assert epochs_done(run_dir) == [1]


def test_batch_larger_than_a_ranks_share_is_said_on_the_terminal(small_config, cli_env):
    """The "fewer samples than the batch" warning reaches the user, not only the rank logs."""
    config = small_config(ranks=2, epochs=1)
    config.write_text(config.read_text().replace(
        '<property name="minibatch_size">4</property>', '<property name="minibatch_size">32</property>'))
    result = autocnnp("run", str(config), env=cli_env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("warning: each rank")]
    assert len(lines) == 1, result.stdout  # rank 0 says it once
    assert "fewer than the batch size 32: batches are smaller" in lines[0]
