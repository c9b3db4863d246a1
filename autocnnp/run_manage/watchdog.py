"""The launcher side of hang detection: notice a rank that stopped advancing, say where.

Every rank's heartbeat (:mod:`autocnnp.run_manage.heartbeat`) keeps
``RUN_DIR/progress/rank-K.json`` current. :class:`HangWatch`, a thread of the launcher, reads
those files every second; when a rank in training has made no progress (no step, validation
step or epoch end) for longer than the threshold (:func:`hang_threshold`), it

1. asks every rank for its Python stacks (``RUN_DIR/stacks/request``, answered by the rank's
   heartbeat thread; a rank on this host that does not answer in time gets
   :data:`~autocnnp.run_manage.heartbeat.STACK_SIGNAL`, which faulthandler answers from C),
2. finds the stuck rank (:func:`diagnose`): the rank whose main thread is not waiting inside
   TensorFlow or Horovod (the others wait for it in a collective), else the one Horovod's own
   stall check names as missing, else the one that advanced last longest ago,
3. writes ``RUN_DIR/hang.json`` and calls ``on_hang`` (the backend stops the job), after which
   the launcher raises :class:`JobHangError` (exit code 6) with :attr:`HangReport.message`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from autocnnp.components.progress import Phase
from autocnnp.engine import rundir
from autocnnp.engine.spec import MonitoringSpec
from autocnnp.errors import JobFailedError
from autocnnp.run_manage.heartbeat import (PROGRESS, STACK_REQUEST, STACK_SIGNAL, STACKS,
                                           stacks_path)

HANG_FILE = "hang.json"
#: exit status of a job stopped by the hang watch
HANG_EXIT = 6
#: automatic threshold: this many times the longest wait between two steps seen so far
AUTO_FACTOR = 20.0
#: seconds the ranks get to answer a stack request before the signal is sent
STACK_WAIT_S = 2.0
#: innermost frames in these packages mean "waiting in the framework" (a collective, an op)
_FRAMEWORK = re.compile(r"/(tensorflow|keras|horovod|tf_keras|tensorflow_core)/")
_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+) in (?P<func>\S+)')
_THREAD = re.compile(r"^(Current thread|Thread) (0x[0-9a-f]+)")
_HOROVOD_MISSING = re.compile(r"Missing ranks:\s*\n\s*(\d+):")


class JobHangError(JobFailedError):
    """A rank stopped advancing: the hang watch dumped the stacks and stopped the job."""

    exit_code = HANG_EXIT


def read_progress(run_dir: Path) -> dict[int, dict[str, Any]]:
    """Every rank's last progress record (a file being replaced is skipped this time)."""
    records: dict[int, dict[str, Any]] = {}
    for path in (Path(run_dir) / PROGRESS).glob("rank-*.json"):
        try:
            record = json.loads(path.read_text())
            records[int(record["rank"])] = record
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return records


def hang_threshold(monitoring: MonitoringSpec, records: dict[int, dict[str, Any]],
                   record: dict[str, Any]) -> float | None:
    """Seconds without progress that make ``record``'s rank hung (None: the watch is off).

    A fixed ``hang_timeout`` is used as given; automatic is :data:`AUTO_FACTOR` times the
    longest wait between two advances any rank has seen after its first epoch, and never
    below ``hang_floor``. Until the rank has finished its first epoch (graph tracing, first
    reads, first checkpoint) the threshold is at least ``hang_floor`` either way."""
    if monitoring.hang_timeout_s == 0:
        return None
    if monitoring.hang_timeout_s is not None:
        threshold = monitoring.hang_timeout_s
    else:
        longest = max((float(r.get("max_gap_s") or 0.0) for r in records.values()), default=0.0)
        threshold = max(monitoring.hang_floor_s, AUTO_FACTOR * longest)
    if not record.get("epochs_done"):
        threshold = max(threshold, monitoring.hang_floor_s)
    return threshold


@dataclass(frozen=True)
class Frame:
    file: str
    line: int
    function: str

    def __str__(self) -> str:
        return f"{self.function} ({self.file}:{self.line})"


@dataclass(frozen=True)
class RankStack:
    """One rank's dump: its main thread's frames, innermost first, and the whole text."""

    rank: int
    main: tuple[Frame, ...]
    text: str

    @property
    def waiting_in_framework(self) -> bool:
        return bool(self.main) and bool(_FRAMEWORK.search(self.main[0].file))


def parse_stack(rank: int, text: str, main_thread: str | None) -> RankStack:
    """The main thread's frames in a faulthandler dump (``main_thread``: its id, as the
    progress record gives it; the first thread of the dump when unknown)."""
    blocks: list[tuple[str, list[Frame]]] = []
    for line in text.splitlines():
        header = _THREAD.match(line)
        if header:
            blocks.append((header.group(2), []))
            continue
        frame = _FRAME.match(line)
        if frame and blocks:
            blocks[-1][1].append(Frame(frame["file"], int(frame["line"]), frame["func"]))
    # faulthandler lists the newest thread first: without a known id, the main thread is last
    main = blocks[-1][1] if blocks else []
    for ident, frames in blocks:
        if main_thread and int(ident, 16) == int(main_thread, 16):
            main = frames
            break
    return RankStack(rank=rank, main=tuple(main), text=text)


@dataclass(frozen=True)
class HangReport:
    """What the hang watch found; written to ``RUN_DIR/hang.json``."""

    rank: int
    host: str
    idle_s: float
    threshold_s: float
    epoch: int
    step: int
    steps_per_epoch: int
    frame: str | None
    stack: tuple[str, ...]
    waiting_ranks: tuple[int, ...]
    evidence: str
    stacks_dir: str
    message: str = field(default="")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def hang_message(rank: int, host: str, idle_s: float, threshold_s: float, epoch: int, step: int,
                 steps_per_epoch: int, frame: str | None, stack: Sequence[str],
                 waiting: Sequence[int], stacks_dir: Path) -> str:
    """The one message a user reads when the hang watch stops a job."""
    where = f"stuck in {frame}" if frame else "its stack shows no Python frame"
    others = (f"; rank{'s' if len(waiting) > 1 else ''} {', '.join(map(str, waiting))} "
              f"waited for it in TensorFlow/Horovod") if waiting else ""
    lines = [f"rank {rank} on {host} made no progress for {idle_s:.0f} s (hang threshold "
             f"{threshold_s:.0f} s) at epoch {epoch}, step {step}/{steps_per_epoch}: "
             f"{where}{others}; the job was stopped"]
    if stack:
        lines.append(f"  rank {rank}'s main thread (most recent call first):")
        lines += [f"    {entry}" for entry in stack]
    lines.append(f"  every rank's Python stacks: {stacks_dir}/rank-K.txt")
    return "\n".join(lines)


def hang_remedy(run_dir: Path) -> str:
    return ("if that step may legitimately take this long, raise <monitoring> property "
            "hang_timeout (seconds); then continue from the last checkpoint with: "
            f"autocnnp run --resume {run_dir}")


def diagnose(run_dir: Path, records: dict[int, dict[str, Any]], stacks: dict[int, RankStack],
             threshold_s: float, now: float, launcher_output: str = "") -> HangReport:
    """Which rank is stuck, and where (see the module docstring for the order of evidence)."""
    training = {r: rec for r, rec in records.items() if rec.get("phase") == Phase.TRAINING}
    pool = training or records
    outside = [r for r in sorted(pool) if r in stacks and stacks[r].main
               and not stacks[r].waiting_in_framework]
    missing = [int(m) for m in _HOROVOD_MISSING.findall(launcher_output)]
    oldest = min(pool, key=lambda r: (float(pool[r].get("progress_at", 0)), r))
    if len(outside) >= 1:
        rank = min(outside, key=lambda r: (float(pool[r].get("progress_at", 0)), r))
        evidence = "its main thread is outside TensorFlow/Horovod while the others wait in it"
    elif missing and missing[-1] in pool:
        rank = missing[-1]
        evidence = "Horovod's stall check names it as missing from a collective"
    else:
        rank = oldest
        evidence = "it advanced longest ago"
    record = pool[rank]
    stack = stacks.get(rank)
    frames = stack.main if stack else ()
    waiting = tuple(r for r in sorted(stacks) if r != rank and stacks[r].waiting_in_framework)
    idle = round(now - float(record.get("progress_at", now)), 1)  # as hang.json records it
    stacks_dir = Path(run_dir) / STACKS
    frame = str(frames[0]) if frames else None
    shown = tuple(str(f) for f in frames[:8])
    host = str(record.get("host", "?"))
    epoch, step = int(record.get("epoch", 0)), int(record.get("step", 0))
    steps = int(record.get("steps_per_epoch", 0))
    message = hang_message(rank, host, idle, threshold_s, epoch, step, steps, frame, shown,
                           waiting, stacks_dir)
    return HangReport(rank=rank, host=host, idle_s=idle, threshold_s=threshold_s,
                      epoch=epoch, step=step, steps_per_epoch=steps, frame=frame, stack=shown,
                      waiting_ranks=waiting, evidence=evidence, stacks_dir=str(stacks_dir),
                      message=message)


def collect_stacks(run_dir: Path, records: dict[int, dict[str, Any]],
                   wait_s: float = STACK_WAIT_S) -> dict[int, RankStack]:
    """Ask every rank for its stacks and return what they wrote (see the module docstring)."""
    run_dir = Path(run_dir)
    before = {r: _size(stacks_path(run_dir, r)) for r in records}
    token = f"{time.time():.3f}"
    (run_dir / STACKS).mkdir(parents=True, exist_ok=True)
    rundir.atomic_write(run_dir / STACK_REQUEST, token.encode(), sync=False)
    answered = _wait_for_growth(run_dir, before, wait_s)
    here = socket.gethostname()
    signalled = False
    for rank, record in records.items():
        # a pid is signalled only where it means that process: same host name, so never
        # into a container (whose own host name is the task's)
        where = record.get("hostname", record.get("host"))
        if rank not in answered and where == here and record.get("pid"):
            try:
                os.kill(int(record["pid"]), STACK_SIGNAL)
                signalled = True
            except (ProcessLookupError, PermissionError):
                continue
    if signalled:
        answered |= _wait_for_growth(run_dir, before, 1.0)
    stacks = {}
    for rank in records:
        path = stacks_path(run_dir, rank)
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                fh.seek(before[rank])
                text = fh.read()
        except OSError:
            continue
        if text.strip():
            stacks[rank] = parse_stack(rank, text, records[rank].get("main_thread"))
    return stacks


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _wait_for_growth(run_dir: Path, before: dict[int, int], wait_s: float) -> set[int]:
    deadline = time.monotonic() + wait_s
    grown: set[int] = set()
    while True:
        # a dump is complete once the file stops growing for a moment
        grown = {r for r, size in before.items() if _size(stacks_path(run_dir, r)) > size}
        if len(grown) == len(before) or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    time.sleep(0.2)
    return grown


class HangWatch(threading.Thread):
    """Watches the ranks' progress files; on a hang, diagnoses it and calls ``on_hang``."""

    def __init__(self, run_dir: Path, monitoring: MonitoringSpec, on_hang: Callable[[], Any],
                 *, launcher_output: Sequence[str] = (), poll_s: float = 1.0,
                 say: Callable[[str], Any] | None = None) -> None:
        super().__init__(name="autocnnp-hang-watch", daemon=True)
        self.run_dir, self.monitoring, self.on_hang = Path(run_dir), monitoring, on_hang
        self.launcher_output, self.poll_s, self.say = launcher_output, poll_s, say
        self.stop_event = threading.Event()
        self.report: HangReport | None = None

    def check(self, now: float | None = None) -> HangReport | None:
        """One look at the ranks; a report (stacks collected, hang.json written) on a hang."""
        now = time.time() if now is None else now
        records = read_progress(self.run_dir)
        limits = {r: hang_threshold(self.monitoring, records, rec) for r, rec in records.items()
                  if rec.get("phase") == Phase.TRAINING}
        stuck = [r for r, limit in limits.items() if limit is not None
                 and now - float(records[r].get("progress_at", now)) > limit]
        if not stuck:
            return None
        threshold = max(limits[r] for r in stuck)
        if self.say:
            self.say(f"autocnnp: rank {', '.join(map(str, sorted(stuck)))} made no progress "
                     f"for more than {threshold:.0f} s: collecting every rank's stack")
        stacks = collect_stacks(self.run_dir, records)
        report = diagnose(self.run_dir, records, stacks, threshold, now,
                          "".join(self.launcher_output))
        rundir.write_json(self.run_dir / HANG_FILE, report.to_dict())
        return report

    def run(self) -> None:
        while not self.stop_event.wait(self.poll_s):
            try:
                report = self.check()
            except Exception as exc:  # noqa: BLE001 - the watch must never kill the launcher
                if self.say:
                    self.say(f"autocnnp: hang watch: {type(exc).__name__}: {exc}")
                continue
            if report is not None:
                self.report = report
                self.on_hang()
                return

    def stop(self) -> None:
        self.stop_event.set()

    def error(self) -> JobHangError | None:
        """The error the launcher raises when the watch stopped the job."""
        if self.report is None:
            return None
        return JobHangError(self.report.message, rank=self.report.rank, host=self.report.host,
                            remedy=hang_remedy(self.run_dir))
