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
