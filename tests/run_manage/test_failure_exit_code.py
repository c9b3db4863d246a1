"""A data error that a rank finds (a file read mid-training) keeps the exit status 2 of data
problems; a crash stays 1."""

from __future__ import annotations

import json
from pathlib import Path

from autocnnp.run_manage.failures import first_failure
from autocnnp.run_manage.worker import write_error
from autocnnp.errors import DataError


def test_a_rank_data_error_exits_2_and_a_crash_exits_1(tmp_path: Path) -> None:
    write_error(tmp_path, 1, DataError("/d/masks/7.npy: labels [7] outside the declared "
                                       "classes 0..2"))
    assert json.loads((tmp_path / "errors" / "rank-1.json").read_text())["exit_code"] == 2
    failure = first_failure(tmp_path, "")
    assert failure.exit_code == 2
    assert failure.message.startswith("rank 1 on ")
    assert "failed: DataError: /d/masks/7.npy: labels [7] outside the declared classes 0..2" \
        in failure.message
    (tmp_path / "errors" / "rank-1.json").unlink()
    write_error(tmp_path, 0, ZeroDivisionError("boom"))
    assert first_failure(tmp_path, "").exit_code == 1


def test_a_swarm_rank_is_named_by_its_node_and_its_pid_by_its_container(tmp_path: Path,
                                                                        monkeypatch) -> None:
    """In a swarm task the container's own host name names the task; the failure names the
    node the swarm put it on (AUTOCNNP_TASK_NODE), and the pid stays tied to the container."""
    import socket

    from autocnnp.engine.vocabulary import NODE_ENV

    monkeypatch.setenv(NODE_ENV, "gpu-node-7")
    write_error(tmp_path, 3, ZeroDivisionError("boom"))
    record = json.loads((tmp_path / "errors" / "rank-3.json").read_text())
    assert (record["host"], record["hostname"]) == ("gpu-node-7", socket.gethostname())
    assert first_failure(tmp_path, "").message.startswith("rank 3 on gpu-node-7 failed")
    monkeypatch.delenv(NODE_ENV)
    (tmp_path / "errors" / "rank-3.json").unlink()
    write_error(tmp_path, 3, ZeroDivisionError("boom"))
    assert json.loads((tmp_path / "errors" / "rank-3.json").read_text())["host"] == \
        socket.gethostname()
