"""A group's state from its members' run directories (no process runs here)."""

from __future__ import annotations

import json
from pathlib import Path

from autocnnp.run_manage import jobs


def _group(tmp_path: Path, states: dict[str, dict | None], *, summary: bool = False) -> Path:
    group = tmp_path / "g"
    group.mkdir(parents=True)
    (group / "spec.json").write_text("{}")
    (group / "group.json").write_text(json.dumps({"kind": "folds", "members": list(states)}))
    for name, state in states.items():
        member = group / name
        member.mkdir()
        (member / "spec.json").write_text("{}")
        if state is not None:
            (member / "state.json").write_text(json.dumps({"backend": "local", **state}))
    if summary:
        (group / "folds.json").write_text("{}")
    return group


def test_a_member_whose_launcher_vanished_makes_the_group_dead(tmp_path):
    # "running" in state.json, but nothing holds its locks and no rank recorded an end
    group = _group(tmp_path, {"fold-1": {"state": "finished"}, "fold-2": {"state": "running"},
                              "fold-3": None})
    status = jobs.group_status(group)
    assert status["state"] == "dead"
    assert [m["state"] for m in status["members"]] == [
        "finished", "dead (launcher and ranks gone without recording an end)", "prepared"]
    assert jobs.stop(group) == "g is not running (state: dead)"


def test_stopped_finished_and_incomplete_groups(tmp_path):
    stopped = _group(tmp_path / "a", {"fold-1": {"state": "finished"},
                                      "fold-2": {"state": "stopped"}})
    assert jobs.group_status(stopped)["state"] == "stopped"
    done = _group(tmp_path / "b", {"fold-1": {"state": "finished"}}, summary=True)
    assert jobs.group_status(done)["state"] == "finished"
    waiting = _group(tmp_path / "c", {"fold-1": {"state": "finished"}, "fold-2": None})
    assert jobs.group_status(waiting)["state"] == "incomplete"
    # a training without that rank's log is said, and the others still print
    assert jobs.logs(waiting, 0) == (f"==> fold-1 <==\nno log {waiting}/fold-1/logs/rank-0.log "
                                     f"(ranks write rank-K.log once they start)")


def test_watch_on_a_group_shows_its_trainings_and_ends_with_the_group(tmp_path, capsys):
    from autocnnp.cli import main

    group = _group(tmp_path, {"fold-1": {"state": "finished"}, "fold-2": {"state": "stopped"}})
    # not running: one frame, the way to continue, and exit 1 (it did not finish)
    assert main(["watch", str(group), "--interval", "0.1"]) == 1
    assert capsys.readouterr().out == ("g: stopped (folds: 2 trainings)\n"
                                       "  fold-1: finished\n"
                                       "  fold-2: stopped\n"
                                       f"continue with: autocnnp run --resume {group}\n")
    (group / "fold-2" / "state.json").write_text('{"backend": "local", "state": "finished"}')
    (group / "folds.json").write_text("{}")
    assert main(["watch", str(group), "--once"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "g: finished (folds: 2 trainings)"
    assert main(["watch", str(group)]) == 0
