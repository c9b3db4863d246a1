"""Quick checks of rank_runtime helpers that need no MPI: the epoch log cut on resume and the
thread-count precedence of place_device."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from autocnnp.components.rank_runtime import (ENV_INTER_OP, ENV_INTRA_OP, Communicator,
                                              place_device, truncate_epoch_log)
from autocnnp.generator.context import RankContext


def _lines(*epochs: int) -> str:
    return "".join(json.dumps({"epoch": e, "loss": 1.0 / e}) + "\n" for e in epochs)


def test_truncate_epoch_log_keeps_epochs_up_to_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "metrics" / "epochs.jsonl"
    path.parent.mkdir()
    path.write_text(_lines(1, 2, 3, 4, 5) + '{"epoch": 6, "lo')  # last line cut by a crash
    assert truncate_epoch_log(path, 3) == 3
    assert path.read_text() == _lines(1, 2, 3)
    assert sorted(p.name for p in path.parent.iterdir()) == ["epochs.jsonl"]  # no temp file
    # then training appends epochs 4.. again: every epoch once
    with open(path, "a") as fh:
        fh.write(_lines(4, 5))
    assert [json.loads(x)["epoch"] for x in path.read_text().splitlines()] == [1, 2, 3, 4, 5]


def test_truncate_epoch_log_leaves_a_clean_file_alone_and_handles_no_file(tmp_path: Path
                                                                         ) -> None:
    path = tmp_path / "epochs.jsonl"
    assert truncate_epoch_log(path, 2) == 0
    assert not path.exists()
    path.write_text(_lines(1, 2))
    before = path.stat().st_mtime_ns
    assert truncate_epoch_log(path, 2) == 0
    assert path.stat().st_mtime_ns == before and path.read_text() == _lines(1, 2)
    assert truncate_epoch_log(path, 0) == 2
    assert path.read_text() == ""


def _ctx(rank: int = 0, threads_per_rank: int = 0) -> RankContext:
    comm = Communicator(rank=rank, size=2, local_rank=rank, local_size=2, hostname="h")
    return RankContext(
        spec=SimpleNamespace(deployment=SimpleNamespace(threads_per_rank=threads_per_rank)),
        run_dir=Path("."), values={"communicator": comm},
        log=logging.getLogger("autocnnp.test_rank_runtime"))


@pytest.fixture
def applied(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Record the thread counts place_device sets instead of changing this process's TF."""
    import tensorflow as tf

    seen: dict[str, int] = {}
    monkeypatch.setattr(tf.config.threading, "set_intra_op_parallelism_threads",
                        lambda n: seen.__setitem__("intra", n))
    monkeypatch.setattr(tf.config.threading, "set_inter_op_parallelism_threads",
                        lambda n: seen.__setitem__("inter", n))
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    return seen


def _source_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "thread counts:" in r.getMessage()]


def test_place_device_parameters_win_over_threads_per_rank(
        applied: dict[str, int], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(ENV_INTRA_OP, "2")
    monkeypatch.setenv(ENV_INTER_OP, "2")
    ctx = _ctx(threads_per_rank=2)
    with caplog.at_level(logging.INFO, logger="autocnnp.test_rank_runtime"):
        place_device(ctx, gpu=False, intra_op_threads=4, inter_op_threads=0)
    assert applied == {"intra": 4, "inter": 2}
    assert ctx.values["device"].intra_op_threads == 4
    [line] = _source_lines(caplog)
    assert "intra-op 4 from device_placement parameter intra_op_threads (overrides " \
           f"{ENV_INTRA_OP}=2 from <deployment> threads_per_rank)" in line
    assert f"inter-op 2 from {ENV_INTER_OP} (<deployment> threads_per_rank)" in line


def test_place_device_env_then_default_and_rank_0_logs_only(
        applied: dict[str, int], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(ENV_INTRA_OP, "3")
    monkeypatch.delenv(ENV_INTER_OP, raising=False)
    with caplog.at_level(logging.INFO, logger="autocnnp.test_rank_runtime"):
        place_device(_ctx(), gpu=False)
        [line] = _source_lines(caplog)
        assert line == (f"thread counts: intra-op 3 from {ENV_INTRA_OP} (<deployment> "
                        "threads_per_rank); inter-op auto from TensorFlow's default")
        assert applied == {"intra": 3}
        caplog.clear()
        place_device(_ctx(rank=1), gpu=False)
        assert _source_lines(caplog) == []
