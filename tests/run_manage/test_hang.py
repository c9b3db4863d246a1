"""Hang detection with real MPI ranks (issue 14): a rank that sleeps forever mid-epoch makes the
launcher dump every rank's stack, name the stuck rank, host and frame, and stop the job with
exit code 6 once the threshold has passed, never long after."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from mpi_runs import HERE, mpirun_available

pytestmark = [pytest.mark.slow, pytest.mark.mpi,
              pytest.mark.skipif(not mpirun_available(), reason="needs mpirun (openmpi-bin)")]

THRESHOLD = 15

CONFIG = """<system_config>
  <task name="imaging_segmentation">
    <parallelism-degree>2</parallelism-degree>
    <CNN_archi><name>unet</name><param name="depth">2</param><param name="base_filters">4</param></CNN_archi>
    <CNN-Parallelism-Generator>
      <module name="train_strategy_def">
        <action class="extensible" type="checkpoint">
          <value name="SleepForever"><path>{plugin}</path></value>
        </action>
      </module>
    </CNN-Parallelism-Generator>
    <data format="pairs">
      <train><path>{data}/train</path></train>
      <valid><path>{data}/valid</path></valid>
      <classes>background grey_matter white_matter</classes>
    </data>
    <hyperparameters>
      <property name="lr">1e-3</property>
      <property name="optimizer">adam</property>
      <property name="minibatch_size">4</property>
      <property name="end_epoch">5</property>
    </hyperparameters>
    <deployment backend="local"><property name="threads_per_rank">1</property></deployment>
    <monitoring>
      <property name="hang_timeout">{threshold}</property>
      <property name="hang_floor">120</property>
      <property name="tensorboard">false</property>
    </monitoring>
    <run_root>{runs}</run_root>
  </task>
</system_config>
"""


def _ranks_of(run_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "autocnnp.run_manage.worker" in cmd and str(run_dir) in cmd:
            found.append(proc)
    return found


def test_a_rank_sleeping_forever_is_named_with_its_stack_and_the_job_stops(
        small_dataset, cli_env, tmp_path):
    config = tmp_path / "hang.xml"
    config.write_text(CONFIG.format(plugin=HERE / "sleep_forever.py", data=small_dataset,
                                    runs=tmp_path / "runs", threshold=THRESHOLD))
    proc = subprocess.run([sys.executable, "-m", "autocnnp", "run", str(config)],
                          capture_output=True, text=True, env=cli_env, timeout=600)
    ended = time.time()
    assert proc.returncode == 6, proc.stdout + proc.stderr
    run_dir = next((tmp_path / "runs").glob("hang-*"))
    host = socket.gethostname()
    plugin = HERE / "sleep_forever.py"
    lines = plugin.read_text().splitlines()
    sleep_line = 1 + next(i for i, l in enumerate(lines) if "time.sleep(3600)" in l)
    call_line = 1 + next(i for i, l in enumerate(lines) if l.strip() == "stuck_here()")

    # the stuck rank's last progress: epoch 2, step 1 (it sleeps in a callback of step 2,
    # before the progress reporter, which runs last, hears of that step)
    last = json.loads((run_dir / "progress" / "rank-1.json").read_text())
    assert (last["phase"], last["epoch"], last["step"]) == ("training", 2, 1)
    stuck_for = ended - last["progress_at"]
    # detection at the threshold (1 s polls), the stacks (< 3.5 s) and the stop (< 2 s)
    assert THRESHOLD < stuck_for < THRESHOLD + 8, stuck_for

    report = json.loads((run_dir / "hang.json").read_text())
    assert report["rank"] == 1 and report["host"] == host
    assert report["frame"] == f"stuck_here ({plugin}:{sleep_line})"
    assert report["waiting_ranks"] == [0]
    assert report["evidence"] == ("its main thread is outside TensorFlow/Horovod while the "
                                  "others wait in it")
    head = (f"autocnnp run: error: rank 1 on {host} made no progress for "
            f"{report['idle_s']:.0f} s (hang threshold {THRESHOLD} s) at epoch 2, step 1/"
            f"{last['steps_per_epoch']}: stuck in stuck_here ({plugin}:{sleep_line}); rank 0 waited for "
            f"it in TensorFlow/Horovod; the job was stopped\n"
            f"  rank 1's main thread (most recent call first):\n"
            f"    stuck_here ({plugin}:{sleep_line})\n"
            f"    on_train_batch_end ({plugin}:{call_line})\n")
    assert head in proc.stderr, proc.stderr
    assert f"  every rank's Python stacks: {run_dir}/stacks/rank-K.txt" in proc.stderr
    assert ("remedy: if that step may legitimately take this long, raise <monitoring> property "
            f"hang_timeout (seconds); then continue from the last checkpoint with: "
            f"autocnnp run --resume {run_dir}") in proc.stderr
    assert "Traceback" not in proc.stderr

    # the run directory holds every rank's stack: rank 1 in the plugin, rank 0 in TensorFlow
    stuck = (run_dir / "stacks" / "rank-1.txt").read_text()
    assert f'File "{plugin}", line {sleep_line} in stuck_here' in stuck
    waiting = (run_dir / "stacks" / "rank-0.txt").read_text()
    assert "in stuck_here" not in waiting and "/tensorflow/" in waiting
    state = json.loads((run_dir / "state.json").read_text())
    assert (state["state"], state["failed_rank"], state["failed_host"]) == ("failed", 1, host)
    assert state["failure"] == report["message"]
    assert not _ranks_of(run_dir), "no rank of the job may outlive it"
