"""The pure parts of monitoring (issue 14): thresholds, stack parsing, the diagnosis of a hang,
the Prometheus text, Horovod's stall settings and the <monitoring> vocabulary. The behaviour
with real ranks is in test_hang.py and test_prometheus.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from autocnnp.engine.plan import horovod_stall_env
from autocnnp.engine.spec import MonitoringSpec
from autocnnp.run_manage.exposition import prometheus_text
from autocnnp.run_manage.watchdog import diagnose, hang_threshold, parse_stack

MAIN = "0x00007f0000000001"
# a faulthandler dump as the heartbeat thread writes it: itself first, the main thread last
STUCK = f"""# stacks of rank 1 (pid 11, main thread {MAIN}) on request 1.0
Current thread 0x00007f00000000aa (most recent call first):
  File "/x/autocnnp/run_manage/heartbeat.py", line 144 in serve_stack_request
  File "/usr/lib/python3.11/threading.py", line 1002 in _bootstrap

Thread {MAIN} (most recent call first):
  File "/data/plugins/loader.py", line 13 in read_forever
  File "/data/plugins/loader.py", line 30 in on_train_batch_end
  File "/venv/site-packages/keras/src/callbacks.py", line 1106 in on_train_batch_end
"""
WAITING = f"""Thread 0x00007f00000000bb (most recent call first):
  File "/usr/lib/python3.11/threading.py", line 324 in wait

Thread {MAIN} (most recent call first):
  File "/venv/site-packages/tensorflow/python/eager/execute.py", line 53 in quick_execute
  File "/venv/site-packages/keras/src/engine/training.py", line 1807 in fit
"""


def record(rank: int, progress_at: float, **extra) -> dict:
    return {"rank": rank, "host": f"node{rank}", "pid": 100 + rank, "main_thread": MAIN,
            "phase": "training", "epoch": 2, "step": 3, "steps_per_epoch": 9,
            "progress_at": progress_at, "epochs_done": 1, "max_gap_s": 0.5, **extra}


def test_the_main_thread_is_found_by_its_id_and_the_innermost_frame_comes_first():
    stack = parse_stack(1, STUCK, MAIN)
    assert [f.function for f in stack.main] == ["read_forever", "on_train_batch_end",
                                                "on_train_batch_end"]
    assert str(stack.main[0]) == "read_forever (/data/plugins/loader.py:13)"
    assert not stack.waiting_in_framework
    assert parse_stack(0, WAITING, MAIN).waiting_in_framework
    # without a known id, the last thread of the dump (the oldest: the main thread)
    assert parse_stack(1, STUCK, None).main[0].function == "read_forever"


def test_the_rank_outside_the_framework_is_named_even_when_it_advanced_last():
    records = {0: record(0, 100.0), 1: record(1, 101.0)}
    stacks = {0: parse_stack(0, WAITING, MAIN), 1: parse_stack(1, STUCK, MAIN)}
    report = diagnose(Path("/runs/r1"), records, stacks, 30.0, now=135.0)
    assert (report.rank, report.host, report.waiting_ranks) == (1, "node1", (0,))
    assert report.message == (
        "rank 1 on node1 made no progress for 34 s (hang threshold 30 s) at epoch 2, step 3/9: "
        "stuck in read_forever (/data/plugins/loader.py:13); rank 0 waited for it in "
        "TensorFlow/Horovod; the job was stopped\n"
        "  rank 1's main thread (most recent call first):\n"
        "    read_forever (/data/plugins/loader.py:13)\n"
        "    on_train_batch_end (/data/plugins/loader.py:30)\n"
        "    on_train_batch_end (/venv/site-packages/keras/src/callbacks.py:1106)\n"
        "  every rank's Python stacks: /runs/r1/stacks/rank-K.txt")


def test_when_every_rank_waits_in_the_framework_horovods_stall_check_decides():
    records = {0: record(0, 100.0), 1: record(1, 101.0), 2: record(2, 101.0)}
    stacks = {r: parse_stack(r, WAITING, MAIN) for r in records}
    output = ("[1]: WARNING: One or more tensors were submitted to be reduced ...\n"
              "Missing ranks:\n2: [DistributedAdam_Allreduce/cond/HorovodAllreduce_grad_0]\n")
    report = diagnose(Path("/r"), records, stacks, 30.0, now=140.0, launcher_output=output)
    assert report.rank == 2
    assert report.evidence == "Horovod's stall check names it as missing from a collective"
    # no stall report: the rank that advanced longest ago
    report = diagnose(Path("/r"), records, stacks, 30.0, now=140.0)
    assert (report.rank, report.evidence) == (0, "it advanced longest ago")


def test_thresholds_fixed_automatic_and_the_first_epoch_floor():
    fixed = MonitoringSpec(hang_timeout_s=20, hang_floor_s=100)
    assert hang_threshold(fixed, {}, record(0, 0)) == 20
    assert hang_threshold(fixed, {}, record(0, 0, epochs_done=0)) == 100  # graphs being traced
    auto = MonitoringSpec(hang_floor_s=60)
    records = {0: record(0, 0, max_gap_s=2.0), 1: record(1, 0, max_gap_s=4.5)}
    assert hang_threshold(auto, records, records[0]) == 90.0  # 20 x the longest gap
    assert hang_threshold(auto, {0: record(0, 0)}, record(0, 0)) == 60  # the floor
    assert hang_threshold(MonitoringSpec(hang_timeout_s=0), records, records[0]) is None


def test_horovods_stall_check_agrees_with_the_threshold():
    assert horovod_stall_env(MonitoringSpec(hang_timeout_s=40)) == {
        "HOROVOD_STALL_CHECK_TIME_SECONDS": "20", "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS": "70"}
    # automatic: warn at half the floor, leave shutting down to the launcher
    assert horovod_stall_env(MonitoringSpec()) == {"HOROVOD_STALL_CHECK_TIME_SECONDS": "150"}
    assert horovod_stall_env(MonitoringSpec(hang_timeout_s=0)) == {}


def test_prometheus_text_has_one_series_per_rank_with_run_rank_and_host_labels():
    samples = {0: {"rank": 0, "host": "a", "cpu_percent": 97.5, "rss_bytes": 1000,
                   "gpu0_util_percent": 80, "phase": "training"},
               1: {"rank": 1, "host": "b", "cpu_percent": 12.0, "rss_bytes": 2000}}
    progress = {0: {"host": "a", "epoch": 3, "step": 2, "step_time_s": 0.25,
                    "images_per_s": 64.0, "progress_at": 1.5}}
    text = prometheus_text('r"1', samples, progress)
    assert ("# HELP autocnnp_rank_cpu_percent CPU use of the rank's process (100 = one core)\n"
            "# TYPE autocnnp_rank_cpu_percent gauge\n"
            'autocnnp_rank_cpu_percent{run="r\\"1",rank="0",host="a"} 97.5\n'
            'autocnnp_rank_cpu_percent{run="r\\"1",rank="1",host="b"} 12.0\n') in text
    assert 'autocnnp_rank_memory_rss_bytes{run="r\\"1",rank="1",host="b"} 2000.0' in text
    assert 'autocnnp_rank_gpu_utilization_percent{run="r\\"1",rank="0",host="a",gpu="0"} 80.0' in text
    assert 'autocnnp_rank_epoch{run="r\\"1",rank="0",host="a"} 3.0' in text
    assert "phase" not in text


@pytest.mark.parametrize("prop,value,message", [
    ("hang_timeout", "soon", "expected a number, got 'soon'"),
    ("hang_timeout", "-3", "expected seconds (0: off) or auto, got '-3'"),
    ("prometheus_port", "70000", "expected a TCP port (1-65535), auto or off, got '70000'"),
    ("divergence_factor", "0.5", "must be above 1 (the loss may grow to this multiple of its "
                                 "best) or 0 (off), got 0.5"),
    ("collapse_monitor", "loss", "'loss' is not one of auto, dice, val_dice"),
])
def test_monitoring_properties_are_checked_with_the_config_line(tmp_path, prop, value, message):
    from autocnnp.engine.validate import load_spec
    from autocnnp.errors import ConfigError

    config = tmp_path / "c.xml"
    config.write_text(f"""<system_config>
  <task name="imaging_segmentation">
    <CNN_archi><name>unet</name></CNN_archi>
    <data><train><path>.</path></train></data>
    <hyperparameters/>
    <monitoring>
      <property name="{prop}">{value}</property>
    </monitoring>
  </task>
</system_config>
""")
    with pytest.raises(ConfigError) as caught:
        load_spec(config)
    assert any(p.line == 7 and message in p.message for p in caught.value.problems), \
        [str(p) for p in caught.value.problems]


def test_monitoring_properties_reach_the_spec(tmp_path):
    from autocnnp.engine.validate import load_spec

    config = tmp_path / "c.xml"
    config.write_text("""<system_config>
  <task name="imaging_segmentation">
    <CNN_archi><name>unet</name></CNN_archi>
    <data><train><path>.</path></train></data>
    <hyperparameters/>
    <monitoring>
      <property name="hang_timeout">45</property>
      <property name="hang_floor">90</property>
      <property name="metrics_interval">2</property>
      <property name="prometheus_port">auto</property>
      <property name="divergence_factor">3</property>
      <property name="collapse_fraction">0.5</property>
    </monitoring>
  </task>
</system_config>
""")
    m = load_spec(config).monitoring
    assert (m.hang_timeout_s, m.hang_floor_s, m.metrics_interval_s, m.prometheus_port,
            m.divergence_factor, m.collapse_fraction) == (45, 90, 2, 0, 3, 0.5)
    assert MonitoringSpec().hang_timeout_s is None and MonitoringSpec().prometheus_port is None


def test_a_new_launch_forgets_the_progress_of_the_last_one(tmp_path):
    """--resume: a record a killed rank left "training" an hour ago must not read as a hang."""
    import json
    import time

    from autocnnp.run_manage.launcher_monitor import LauncherMonitor
    from autocnnp.run_manage.watchdog import HangWatch, read_progress

    (tmp_path / "progress").mkdir()
    (tmp_path / "stacks").mkdir()
    (tmp_path / "progress" / "rank-0.json").write_text(json.dumps(record(0, time.time() - 3600)))
    (tmp_path / "stacks" / "request").write_text("1.0")
    # left as it is, the record reads as a hang at once
    stale = HangWatch(tmp_path, MonitoringSpec(hang_timeout_s=30), lambda: None).check()
    assert stale is not None and stale.rank == 0
    stopped = []
    monitor = LauncherMonitor(tmp_path, MonitoringSpec(hang_timeout_s=30, metrics_interval_s=0),
                              stop_job=lambda: stopped.append(True))
    try:
        assert read_progress(tmp_path) == {}
        assert not (tmp_path / "stacks" / "request").exists()
    finally:
        monitor.stop()
    assert not stopped


@pytest.mark.slow
def test_a_rank_holding_the_gil_is_dumped_by_the_signal_when_the_request_goes_unanswered(tmp_path):
    """The file request needs the rank's heartbeat thread; a main thread stuck in C code that
    holds the GIL starves it, and faulthandler's signal handler (C, no GIL) answers instead."""
    import os
    import subprocess
    import sys
    import time

    from autocnnp.run_manage.watchdog import collect_stacks, read_progress

    script = Path(__file__).with_name("gil_holder.py")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(1.0)  # inside re.match now
        records = read_progress(tmp_path)
        assert records[0]["pid"] == proc.pid
        stacks = collect_stacks(tmp_path, records, wait_s=1.5)
        text = (tmp_path / "stacks" / "rank-0.txt").read_text()
        assert "on request" not in text  # the heartbeat thread never ran
        line = 1 + script.read_text().splitlines().index(
            're.match(r"(a+)+$", "a" * 64 + "b")  # the frame the stack dump must show')
        import re

        main = stacks[0].main
        assert (main[0].function, main[0].file) == ("match", re.__file__)
        assert str(main[1]) == f"<module> ({script}:{line})"
        assert not stacks[0].waiting_in_framework
    finally:
        proc.kill()
        proc.wait()


def test_the_board_measures_steps_and_waits_after_the_first_epoch_only(monkeypatch):
    import autocnnp.components.progress as progress

    clock = {"wall": 1000.0, "perf": 0.0}
    monkeypatch.setattr(progress.time, "time", lambda: clock["wall"])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock["perf"])

    def step(seconds: float) -> None:
        board.begin_step()
        clock["wall"] += seconds
        clock["perf"] += seconds
        board.end_step()

    board = progress.ProgressBoard()
    board.start_training(end_epoch=2, steps_per_epoch=2, global_batch=16)
    board.start_epoch(1)
    step(30.0)  # the first step traces the graph
    step(0.5)
    clock["wall"] += 20.0  # a slow first checkpoint
    board.end_epoch_work()
    assert board.max_gap_s == 0.0  # nothing of the first epoch counts
    board.start_epoch(2)
    step(0.5)
    step(2.0)
    snap = board.snapshot()
    assert (snap["phase"], snap["epoch"], snap["step"], snap["total_steps"]) == ("training", 2, 2, 4)
    assert snap["max_gap_s"] == 2.0 and snap["step_time_s"] == 2.0
    assert snap["step_time_mean_s"] == 1.25 and snap["images_per_s"] == 16 / 1.25
    assert snap["progress_at"] == clock["wall"] and snap["epochs_done"] == 1


def test_stacks_are_never_asked_by_signal_across_a_container(tmp_path):
    """A swarm rank's record names the node (which may be this machine's name) but its pid is
    the container's: the watchdog must not signal that pid here. Two real processes stand in
    for the ranks; each notes the stack signal in a file."""
    import socket
    import subprocess
    import sys
    import time

    from autocnnp.run_manage import watchdog
    from autocnnp.run_manage.heartbeat import STACK_SIGNAL

    listener = ("import signal, sys, time\n"
                "signal.signal(%d, lambda *_: open(sys.argv[1], 'w').write('signalled'))\n"
                "print('ready', flush=True)\n"
                "time.sleep(60)\n" % STACK_SIGNAL)
    procs = [subprocess.Popen([sys.executable, "-c", listener, str(tmp_path / f"rank-{r}.got")],
                              stdout=subprocess.PIPE, text=True) for r in (0, 1)]
    try:
        assert [p.stdout.readline().strip() for p in procs] == ["ready", "ready"]
        here = socket.gethostname()
        records = {0: {"rank": 0, "host": here, "hostname": "autocnnp-job-rank-0-1",
                       "pid": procs[0].pid},
                   1: {"rank": 1, "host": here, "hostname": here, "pid": procs[1].pid}}
        watchdog.collect_stacks(tmp_path, records, wait_s=0.1)
        time.sleep(0.5)
        assert not (tmp_path / "rank-0.got").exists()
        assert (tmp_path / "rank-1.got").read_text() == "signalled"
    finally:
        for p in procs:
            p.kill()
            p.wait()
