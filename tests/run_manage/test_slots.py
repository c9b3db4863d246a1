"""run_in_slots: real processes, at most N at once, each starting as one ends."""

from __future__ import annotations

import sys
import time

from autocnnp.run_manage.slots import SlotJob, run_in_slots


def _job(tmp_path, name: str, seconds: float, code: int = 0) -> SlotJob:
    script = (f"import time, sys; print('start', time.monotonic(), flush=True); "
              f"time.sleep({seconds}); print('end', time.monotonic()); sys.exit({code})")
    return SlotJob(name, [sys.executable, "-c", script], tmp_path / name / "out.log")


def _span(job: SlotJob) -> tuple[float, float]:
    lines = dict(line.split() for line in job.log.read_text().splitlines())
    return float(lines["start"]), float(lines["end"])


def test_at_most_n_at_once_and_every_exit_code(tmp_path):
    jobs = [_job(tmp_path, "a", 1.0), _job(tmp_path, "b", 2.0), _job(tmp_path, "c", 1.0, 3),
            _job(tmp_path, "d", 0.2)]
    events: list[str] = []
    started = time.monotonic()
    codes = run_in_slots(jobs, 2, started=lambda job, pid: events.append(f"+{job.name}"),
                         ended=lambda job, code, s: events.append(f"-{job.name}"), poll_s=0.05)
    assert codes == {"a": 0, "b": 0, "c": 3, "d": 0}
    assert events[:2] == ["+a", "+b"] and events.index("+c") > events.index("-a")
    spans = [_span(job) for job in jobs]
    for t in (s for s, _ in spans):  # never three at once
        assert sum(s <= t < e for s, e in spans) <= 2
    assert time.monotonic() - started < 1.0 + 2.0 + 1.0 + 0.2  # faster than one by one
