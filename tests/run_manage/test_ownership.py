"""One owner per run directory (issue 10), with real processes: a lock the kernel releases
when its holder is SIGKILLed, holders named by pid and command, and `autocnnp stop` refusing
to signal a process group that a stale state.json names."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autocnnp.run_manage import ownership
from autocnnp.run_manage.ownership import RunBusyError, busy_message

ROOT = Path(__file__).resolve().parents[2]
HOLD = """
import sys, time
from pathlib import Path
from autocnnp.run_manage import ownership
run_dir = Path(sys.argv[1])
if sys.argv[2] == "owner":
    ownership.acquire(run_dir)
else:
    ownership.hold_rank_lock(run_dir)
print("held", flush=True)
time.sleep(120)
"""


def _holder(run_dir: Path, kind: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir), kind], env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    (path / "errors").mkdir(parents=True)
    (path / "spec.json").write_text("{}")
    return path


@pytest.mark.parametrize("kind", ["owner", "rank"])
def test_a_second_owner_is_refused_until_the_first_is_killed(run_dir: Path, kind: str) -> None:
    first = _holder(run_dir, kind)
    try:
        assert ownership.is_live(run_dir)
        with pytest.raises(RunBusyError) as caught:
            ownership.acquire(run_dir)
        command = " ".join(f"{sys.executable} -c {HOLD}".split())[:117] + "..."
        assert caught.value.message == (f"{run_dir} is in use by a running job: pid {first.pid} "
                                        f"({command})")
        assert caught.value.message == busy_message(run_dir, ownership.holders(run_dir))
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the kernel released the lock with the process: no stale lock to clean up by hand
    assert not ownership.is_live(run_dir)
    ownership.acquire(run_dir)
    try:
        assert ownership.holders(run_dir)[0].pid == os.getpid()
    finally:
        ownership.release(run_dir)


def test_two_launchers_racing_for_one_run_directory(run_dir: Path) -> None:
    """Both start at once; exactly one owns the directory."""
    script = ("import sys, time\nfrom pathlib import Path\n"
              "from autocnnp.run_manage import ownership\n"
              "try:\n    ownership.acquire(Path(sys.argv[1]))\nexcept Exception as exc:\n"
              "    print('refused', flush=True); sys.exit(1)\n"
              "print('owner', flush=True); time.sleep(3)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", script, str(run_dir)], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outcomes = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert outcomes == ["owner", "refused", "refused", "refused"]


def test_stop_does_not_signal_a_process_group_that_a_stale_state_names(run_dir: Path) -> None:
    """PID reuse: state.json says running with the process group of an unrelated job."""
    unrelated = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        (run_dir / "state.json").write_text(json.dumps(
            {"state": "running", "pid": unrelated.pid, "pgid": unrelated.pid,
             "launcher_pid": unrelated.pid, "backend": "local"}))
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        stop = subprocess.run([sys.executable, "-m", "autocnnp", "stop", str(run_dir)],
                              capture_output=True, text=True, env=env, timeout=60)
        assert stop.returncode == 0, stop.stderr
        assert stop.stdout.strip() == (
            f"run is not running (state: dead (launcher and ranks gone without recording an "
            f"end)); process group {unrelated.pid} named in state.json does not hold the run's "
            f"lock and was not signalled")
        time.sleep(0.5)
        assert unrelated.poll() is None, "an unrelated process was signalled"
        status = subprocess.run([sys.executable, "-m", "autocnnp", "status", str(run_dir)],
                                capture_output=True, text=True, env=env, timeout=60)
        assert status.stdout.splitlines()[0] == (
            "run: dead (launcher and ranks gone without recording an end)")
    finally:
        unrelated.kill()
        unrelated.wait()
