"""The run store: every file of a run directory is read and written through engine/rundir.py."""

from __future__ import annotations

import json

import pytest

from autocnnp.engine import rundir
from autocnnp.engine.rundir import RunState
from autocnnp.errors import AutocnnpError


def test_state_merges_and_records_the_state_enum_as_plain_text(tmp_path):
    assert rundir.read_state(tmp_path) == {"state": "prepared"}
    rundir.record_state(tmp_path, state=RunState.RUNNING, pid=12)
    merged = rundir.record_state(tmp_path, state=RunState.FINISHED, exit_code=0)
    assert merged == {"state": "finished", "pid": 12, "exit_code": 0}
    assert json.loads((tmp_path / rundir.STATE_FILE).read_text()) == merged
    assert rundir.read_state(tmp_path)["state"] == RunState.FINISHED
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


@pytest.mark.parametrize("text, message", [
    ("{\"state\": ", "not valid JSON at line 1 column 11; the run directory is damaged "
                     "(repair or delete state.json)"),
    ("[1, 2]", "not a JSON object; the run directory is damaged (repair or delete state.json)"),
])
def test_a_damaged_run_file_is_an_error_naming_it(tmp_path, text, message):
    (tmp_path / rundir.STATE_FILE).write_text(text)
    with pytest.raises(AutocnnpError) as info:
        rundir.read_state(tmp_path)
    assert str(info.value) == f"{tmp_path / rundir.STATE_FILE}: {message}"


def test_a_missing_run_file_names_the_folder(tmp_path):
    with pytest.raises(AutocnnpError) as info:
        rundir.read_json(tmp_path / rundir.SPEC_FILE)
    assert str(info.value) == (f"{tmp_path / rundir.SPEC_FILE}: no such file; is {tmp_path} "
                               f"a run directory?")


def test_replace_dir_swaps_a_complete_folder_in_and_drops_the_old_one(tmp_path):
    final = tmp_path / "model"
    for content in ("first", "second"):
        tmp = tmp_path / f".tmp-{content}"
        tmp.mkdir()
        (tmp / "weights").write_text(content)
        assert rundir.replace_dir(tmp, final) == final
        assert (final / "weights").read_text() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
