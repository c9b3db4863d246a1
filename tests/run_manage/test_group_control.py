"""status, stop, logs and resume of a group of trainings, on a real packed group that is
running."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autocnnp.run_manage import jobs, ownership

pytestmark = [pytest.mark.slow, pytest.mark.mpi]


def _autocnnp(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autocnnp", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


#: enough that the first two trainings still run when the test stops them (an epoch of this
#: config takes about 0.2 s after the first), few enough that the resume is short
EPOCHS = 100


def _epoch_list(run_dir: Path) -> list[int]:
    path = run_dir / "metrics" / "epochs.jsonl"
    return [json.loads(l)["epoch"] for l in path.read_text().splitlines()] if path.exists() else []


def _epochs(run_dir: Path) -> int:
    return len(_epoch_list(run_dir))


def test_a_running_group_is_shown_stopped_and_resumed_as_one(small_config, cli_env, tmp_path):
    config = small_config(ranks=1, epochs=EPOCHS)
    config.write_text(config.read_text().replace(
        "<run_root>", '<reproducibility><property name="repeats">3</property></reproducibility>\n'
                      "    <run_root>").replace(
        '<property name="threads_per_rank">1</property>',
        '<property name="threads_per_rank">1</property><property name="group_mode">packed'
        '</property><property name="slots">2</property>'))
    launcher = subprocess.Popen([sys.executable, "-m", "autocnnp", "run", str(config)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=cli_env)
    try:
        runs = tmp_path / "runs"
        _wait_for(lambda: any(runs.glob("*/group.json")), 120, "the group folder")
        group = next(runs.glob("*/group.json")).parent
        _wait_for(lambda: _epochs(group / "repeat-1") >= 1 and _epochs(group / "repeat-2") >= 1,
                  300, "an epoch of the first two trainings")
        assert json.loads((group / "group.json").read_text())["launcher_pid"] == launcher.pid

        shown = _autocnnp(["status", str(group)], cli_env)
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert lines[0] == f"{group.name}: running (repeats: 3 trainings)"
        assert lines[1].startswith("  repeat-1: running  last epoch ")
        assert lines[2].startswith("  repeat-2: running  last epoch ")
        assert lines[3] == "  repeat-3: prepared"  # packed on 2 slots: waits for a free one
        watched = _autocnnp(["watch", str(group), "--once"], cli_env)
        assert watched.returncode == 0, watched.stderr
        assert watched.stdout.splitlines()[0] == lines[0]
        assert watched.stdout.splitlines()[3] == lines[3]

        began = time.monotonic()
        stopped = _autocnnp(["stop", str(group)], cli_env)
        stop_seconds = time.monotonic() - began
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.splitlines()[0] == f"stopped the group's launcher (pid {launcher.pid})"
        assert stopped.stdout.splitlines()[-1] == (f"stopped {group.name}; resume with: "
                                                   f"autocnnp run --resume {group}")
        output, _ = launcher.communicate(timeout=120)
        assert launcher.returncode == 130, output
    finally:
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGKILL)
            launcher.wait()

    # nothing of the group runs on, and the third training never started
    for folder in (group, *(group / f"repeat-{k}" for k in (1, 2, 3))):
        assert ownership.holders(folder) == [], folder
    after = json.loads(_autocnnp(["status", str(group), "--format", "json"], cli_env).stdout)
    assert after["state"] == "stopped"
    assert [m["state"] for m in after["members"]] == ["stopped", "stopped", "prepared"]
    assert not (group / "repeat-3" / "metrics").exists()
    assert _autocnnp(["stop", str(group)], cli_env).stdout.strip() == \
        f"{group.name} is not running (state: stopped)"
    logs = _autocnnp(["logs", str(group)], cli_env)
    assert logs.returncode == 0, logs.stderr
    assert "==> repeat-1 <==" in logs.stdout and "==> repeat-2 <==" in logs.stdout
    assert "==> repeat-3 <==" not in logs.stdout
    # a stop is quick: the trainings stop together, and an ended launcher that its parent (this
    # test) has not reaped yet counts as gone (the stop used to wait its whole 60 s grace)
    assert stop_seconds < 30, stop_seconds
    stopped_at = {k: _epochs(group / f"repeat-{k}") for k in (1, 2)}
    assert all(0 < n < EPOCHS for n in stopped_at.values()), stopped_at

    # the remedy the stop printed: the two stopped trainings continue from their checkpoints,
    # the third starts from its first epoch, and every epoch is recorded once
    # ... watched live by `watch GROUP`, which follows the group until it has finished
    resuming = subprocess.Popen([sys.executable, "-m", "autocnnp", "run", "--resume", str(group)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=cli_env)
    watch = None
    try:
        _wait_for(lambda: jobs.group_status(group)["state"] == "running", 120, "the resume")
        watch = subprocess.Popen([sys.executable, "-m", "autocnnp", "watch", str(group),
                                  "--interval", "0.5"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=cli_env)
        output, _ = resuming.communicate(timeout=600)
        watched, watch_err = watch.communicate(timeout=60)
    finally:
        for proc in (resuming, watch):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert resuming.returncode == 0, output
    assert watch.returncode == 0, watched + watch_err
    assert watched.splitlines()[0] == f"{group.name}: finished (repeats: 3 trainings)"
    started = [l for l in output.splitlines() if ": started" in l]
    assert [l.split(": started")[0] for l in started] == [
        "== repeat 1/3 (seed 42)", "== repeat 2/3 (seed 43)", "== repeat 3/3 (seed 44)"]
    assert [" (resuming) " in l for l in started] == [True, True, False], started
    final = json.loads(_autocnnp(["status", str(group), "--format", "json"], cli_env).stdout)
    assert final["state"] == "finished"
    assert [m["state"] for m in final["members"]] == ["finished"] * 3
    for k in (1, 2, 3):
        assert _epoch_list(group / f"repeat-{k}") == list(range(1, EPOCHS + 1)), k
    assert (group / "repeats.json").exists()
