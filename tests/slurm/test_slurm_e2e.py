"""The slurm backend on a real Slurm (scripts/slurm-local.sh): a job from PENDING to COMPLETED,
a bad partition refused before submission, scancel then --resume, and the warning signal
(time limit or preemption) that checkpoints, requeues and resumes by itself, on the Horovod
engine and on the torch engine."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.mpi, pytest.mark.slurm]

CONFIG = """<system_config>
  <task name="imaging_segmentation">
    <parallelism-degree>2</parallelism-degree>
    <CNN_archi><name>unet</name><param name="depth">2</param><param name="base_filters">4</param></CNN_archi>
    <data format="pairs">
      <train><path>{data}/train</path></train>
      <valid><path>{data}/valid</path></valid>
      <test><path>{data}/test</path></test>
      <classes>background grey_matter white_matter</classes>
    </data>
    <hyperparameters>
      <property name="lr">1e-3</property>
      <property name="optimizer">adam</property>
      <property name="minibatch_size">4</property>
      <property name="end_epoch">{epochs}</property>
    </hyperparameters>
    <deployment backend="slurm">
      <property name="threads_per_rank">1</property>
      {extra}
    </deployment>
    <run_root>{runs}</run_root>
  </task>
</system_config>
"""


#: the generator section that selects the torch engine
TORCH_GENERATOR = ('<CNN-Parallelism-Generator><module name="train_strategy_def"><action '
                   'class="extensible" type="dist_strategy"><value>torch_ddp</value></action>'
                   '</module></CNN-Parallelism-Generator>\n    <data format="pairs">')


def write_config(tmp_path: Path, data: Path, epochs: int = 2, extra: str = "",
                 engine: str = "horovod") -> Path:
    path = tmp_path / "slurm-small.xml"
    text = CONFIG.format(data=data, epochs=epochs, extra=extra, runs=tmp_path / "runs")
    if engine == "torch":
        text = text.replace('<data format="pairs">', TORCH_GENERATOR)
    path.write_text(text)
    return path


def autocnnp(*args: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autocnnp", *args], capture_output=True,
                          text=True, env=env, cwd=str(REPO), timeout=timeout)


def start(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "autocnnp", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=str(REPO))


def only_run(tmp_path: Path) -> Path:
    runs = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def epochs_logged(run_dir: Path) -> list[int]:
    path = run_dir / "metrics" / "epochs.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def env(slurm_cluster: Path) -> dict:
    return dict(os.environ, SLURM_CONF=str(slurm_cluster),
                PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_a_job_runs_through_slurm_from_pending_to_completed(tmp_path: Path, small_dataset: Path,
                                                            env: dict) -> None:
    config = write_config(tmp_path, small_dataset)
    proc = autocnnp("run", str(config), env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = only_run(tmp_path)
    state = json.loads((run_dir / "state.json").read_text())
    job = state["slurm_job_id"]
    assert state["state"] == "finished" and state["slurm_state"] == "COMPLETED"
    assert f"slurm job {job}: COMPLETED" in proc.stdout
    assert re.search(r"^epoch 2/2  loss ", proc.stdout, re.M)  # rank 0's lines, followed
    assert (run_dir / "test_metrics.json").is_file()
    assert (run_dir / "slurm.sbatch").read_text().startswith("#!/bin/bash\n")
    assert epochs_logged(run_dir) == [1, 2]
    status = autocnnp("status", str(run_dir), env=env)
    assert status.returncode == 0, status.stderr
    assert f"{run_dir.name}: finished" in status.stdout
    assert f"slurm: job {job} COMPLETED" in status.stdout


def test_an_unknown_partition_is_refused_before_submission(tmp_path: Path,
                                                          small_dataset: Path,
                                                          env: dict) -> None:
    config = write_config(tmp_path, small_dataset,
                          extra='<property name="partition">gpux</property>')
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True,
                            env=env).stdout
    proc = autocnnp("run", str(config), env=env)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert ("error: Slurm has no partition 'gpux' (partitions: debug, long)\n"
            "  remedy: set <deployment><property name=\"partition\"> to one of them") \
        in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    after = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True,
                           env=env).stdout
    assert after == before  # nothing was submitted


def test_scancel_mid_training_then_resume_finishes(tmp_path: Path, small_dataset: Path,
                                                   env: dict) -> None:
    config = write_config(tmp_path, small_dataset, epochs=40)
    proc = start("run", str(config), env=env)
    try:
        wait_for(lambda: (tmp_path / "runs").exists() and any((tmp_path / "runs").iterdir()),
                 60, "the run directory")
        run_dir = only_run(tmp_path)
        wait_for(lambda: (run_dir / "checkpoints" / "epoch-00002").is_dir(), 300,
                 "the checkpoint of epoch 2")
        stop = autocnnp("stop", str(run_dir), env=env)
        assert stop.returncode == 0, stop.stderr
        assert stop.stdout.startswith("cancelled slurm job ")
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "was cancelled; finished checkpoints are intact" in err
    state = json.loads((run_dir / "state.json").read_text())
    assert state["state"] == "stopped"
    assert (run_dir / "checkpoints" / "epoch-00002" / "state.json").is_file()
    status = autocnnp("status", str(run_dir), env=env)
    assert f"{run_dir.name}: stopped" in status.stdout

    # shorten the job so that the resumed run ends soon: the user extends or cuts end_epoch
    spec = json.loads((run_dir / "spec.json").read_text())
    done = max(epochs_logged(run_dir))
    spec["hyperparameters"]["end_epoch"] = done + 2
    (run_dir / "spec.json").write_text(json.dumps(spec))
    resumed = autocnnp("run", "--resume", str(run_dir), env=env)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert epochs_logged(run_dir) == list(range(1, done + 3))
    assert json.loads((run_dir / "state.json").read_text())["state"] == "finished"


@pytest.mark.parametrize("engine", ["horovod", "torch"])
def test_the_warning_signal_checkpoints_requeues_and_resumes(tmp_path: Path,
                                                            small_dataset: Path,
                                                            env: dict, engine: str) -> None:
    """What Slurm does before a time limit or a preemption (``--signal=USR1@120``), sent by
    hand: every rank stops at the next step boundary, rank 0 checkpoints, the job requeues
    itself, and the requeued job resumes and finishes without losing an epoch."""
    config = write_config(tmp_path, small_dataset, epochs=8, engine=engine)
    proc = start("run", str(config), env=env)
    try:
        wait_for(lambda: (tmp_path / "runs").exists() and any((tmp_path / "runs").iterdir()),
                 60, "the run directory")
        run_dir = only_run(tmp_path)
        wait_for(lambda: len(epochs_logged(run_dir)) >= 2, 300, "two epochs")
        job = json.loads((run_dir / "state.json").read_text())["slurm_job_id"]
        sent = subprocess.run(["scancel", "--signal=USR1", job], capture_output=True, text=True,
                              env=env)
        assert sent.returncode == 0, sent.stderr
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    log = (run_dir / "logs" / f"slurm-{job}.out").read_text()
    assert f"autocnnp: checkpointed on the warning signal; requeueing job {job}" in log
    # rank 0's own line: it wrote the checkpoint before any rank left (srun ends the step at
    # the first exit) and the requeued job resumed from it
    written = re.search(r"^autocnnp: checkpointed on the warning signal at epoch (\d+) step "
                        r"\d+ \(.*(epoch-\d+)\); the job is requeued", log, re.M)
    assert written, log[-3000:]
    assert f"resuming from checkpoint {written[2]} " in log
    assert epochs_logged(run_dir) == list(range(1, 9))  # every epoch once, none lost
    state = json.loads((run_dir / "state.json").read_text())
    assert state["state"] == "finished"
    assert (run_dir / "test_metrics.json").is_file()
    rank_log = (run_dir / "logs" / "rank-1.log").read_text()
    assert "rank 1/2" in rank_log
    if engine == "torch":  # plain srun ranks that met over Gloo
        assert "gloo" in rank_log and "torch" in rank_log
        assert "srun --kill-on-bad-exit=1 " in (run_dir / "slurm.sbatch").read_text()
        assert json.loads((run_dir / "test_metrics.json").read_text())["engine"] == "torch"
