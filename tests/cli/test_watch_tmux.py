"""`autocnnp watch` in a real terminal (tmux), on a real running job (issue 14): every rank
shows while it trains, the view ends by itself with the job and leaves the summary."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.mpi,
              pytest.mark.skipif(shutil.which("tmux") is None,
                                 reason="needs tmux: bash scripts/monitoring-tools.sh"),
              pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs mpirun")]


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


def screen(session: str) -> str:
    return tmux("capture-pane", "-p", "-t", session)


def test_watch_shows_every_rank_of_a_running_job_and_ends_with_it(small_config, cli_env,
                                                                 tmp_path):
    config = small_config(ranks=2, epochs=8)
    runs = tmp_path / "runs"
    job = subprocess.Popen([sys.executable, "-m", "autocnnp", "run", str(config)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env)
    session = f"autocnnp-watch-{tmp_path.name}"[:60]
    try:
        deadline = time.monotonic() + 120
        while not list(runs.glob("small-*/spec.json")) and time.monotonic() < deadline:
            time.sleep(0.2)
        run_dir = next(runs.glob("small-*"))
        exe = Path(sys.executable).parent / "autocnnp"
        command = f"{exe} watch {run_dir} --interval 0.5; echo WATCH-EXIT=$?; sleep 600"
        tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "30",
             "env", *[f"{k}={v}" for k, v in cli_env.items() if k in ("PATH", "PYTHONPATH")],
             "bash", "-c", command)
        live = ""
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and job.poll() is None:
            text = screen(session)
            rows = [l.split() for l in text.splitlines() if l[:2] in ("0 ", "1 ")]
            if len(rows) == 2 and all(r[1] == "training" and "/8" in r[3] for r in rows):
                live = text
                break
            time.sleep(0.5)
        assert live, f"no frame with both ranks training:\n{screen(session)}"
        header = live.splitlines()[0]
        assert header.startswith(f"{run_dir.name}  running  epochs done "), live
        assert "rank  state" in live and "step time" in live and "CPU" in live and "memory" in live
        for row in [l.split() for l in live.splitlines() if l[:2] in ("0 ", "1 ")]:
            assert row[2] == json.loads((run_dir / "progress" / f"rank-{row[0]}.json").read_text())["host"]
        out, err = job.communicate(timeout=600)
        assert job.returncode == 0, out + err
        deadline = time.monotonic() + 30
        while "WATCH-EXIT=" not in screen(session) and time.monotonic() < deadline:
            time.sleep(0.5)
        final = screen(session)
        assert "WATCH-EXIT=0" in final, final
        assert f"{run_dir.name}: finished after " in final
        assert "  last epoch: 8/8  loss " in final
        assert "  test: mean_dice 0." in final, final
        assert f"  run directory: {run_dir}" in final
        # the last frame stays above the summary: both ranks done, the loss chart
        rows = [l.split() for l in final.splitlines() if l[:2] in ("0 ", "1 ")]
        assert [r[1] for r in rows] == ["done", "done"], final
        assert "loss     " in final and "val_dice " in final
        # what the view read: every rank's system samples, also in TensorBoard per rank
        samples = [json.loads(l) for l in (run_dir / "metrics" / "system.jsonl").read_text().splitlines()]
        assert {s["rank"] for s in samples} == {0, 1}
        assert all(s["rss_bytes"] > 50e6 and s["cpu_percent"] >= 0 for s in samples)
        for rank in (0, 1):
            assert list((run_dir / "tensorboard" / "system" / f"rank-{rank}").glob("events.out.tfevents.*"))
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        if job.poll() is None:
            job.terminate()
            job.communicate(timeout=120)
