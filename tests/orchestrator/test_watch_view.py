"""The rows and charts of `autocnnp watch` (pure: from a snapshot); the live view itself is
tested in a real terminal in tests/cli/test_watch_tmux.py."""

from __future__ import annotations

from autocnnp.orchestrator.watch import WatchSnapshot, eta_seconds, rank_rows, sparkline


def snap(**kw) -> WatchSnapshot:
    base = dict(run="r", state={"state": "running"}, progress={}, samples={}, epochs=[],
                end_epoch=10, ranks=2, now=1000.0)
    return WatchSnapshot(**{**base, **kw})


def test_a_swarm_rank_without_progress_yet_shows_its_task_state_and_node():
    state = {"state": "running", "swarm": {"tasks": [
        {"rank": 0, "state": "running", "node": "gpu-node-1"},
        {"rank": 1, "state": "preparing", "node": "gpu-node-2"}]}}
    progress = {0: {"phase": "training", "host": "worker-1", "epoch": 3, "end_epoch": 10,
                    "step": 5, "steps_per_epoch": 20, "step_time_s": 0.25, "progress_at": 990.0}}
    samples = {0: {"cpu_percent": 99.4, "rss_bytes": 3 * 2**30, "gpu0_util_percent": 87}}
    rows = rank_rows(snap(state=state, progress=progress, samples=samples))
    assert rows[0] == {"rank": "0", "state": "training", "node": "worker-1", "epoch": "3/10",
                       "step": "5/20", "fraction": "0.2500", "step_time": "250 ms",
                       "cpu": "99%", "memory": "3.0 GB", "gpu": "87%", "idle": "10s"}
    assert (rows[1]["state"], rows[1]["node"], rows[1]["epoch"]) == ("preparing", "gpu-node-2", "-")


def test_after_the_end_a_rank_that_did_not_finish_shows_the_job_state():
    progress = {0: {"phase": "done"}, 1: {"phase": "training", "progress_at": 1.0}}
    rows = rank_rows(snap(state={"state": "failed"}, progress=progress))
    assert [r["state"] for r in rows] == ["done", "failed"]
    assert rows[1]["idle"] == ""


def test_charts_and_eta():
    assert sparkline([3.0, 2.0, 1.0, 1.0]) == "█▅▁▁"  # low to high in 8 levels
    assert sparkline([]) == ""
    epochs = [{"epoch": 1, "time_s": 10.0}, {"epoch": 2, "time_s": 20.0}]
    progress = {0: {"epoch": 3, "step": 5, "steps_per_epoch": 10}}
    # epochs 3 (half done) to 10 left at 15 s each
    assert eta_seconds(snap(epochs=epochs, progress=progress)) == 7.5 * 15.0


def test_a_dead_run_has_ended_so_watch_stops():
    # status settles a run whose launcher and ranks vanished to "dead (...)": watch must end
    assert snap(state={"state": "dead (launcher and ranks gone without recording an end)"}).ended
    assert not snap(state={"state": "running"}).ended
    assert not snap(state={"state": "prepared"}).ended
