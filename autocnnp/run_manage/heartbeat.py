"""The rank side of monitoring: one background thread per rank, started by the worker.

About once a second it copies the rank's :data:`~autocnnp.components.progress.BOARD` to
``RUN_DIR/progress/rank-K.json`` (only when it changed, and at least every
:data:`KEEPALIVE_S` seconds), every ``metrics_interval`` seconds it samples the process
(:func:`sample_system`) into ``RUN_DIR/metrics/system.jsonl`` (one JSON line per sample, every
rank appends to the same file) and, with ``tensorboard``, into ``RUN_DIR/tensorboard/system/
rank-K``, and it answers a stack-dump request of the launcher (``RUN_DIR/stacks/request``) by
appending every thread's Python stack to ``RUN_DIR/stacks/rank-K.txt``.

The same dump is registered with :mod:`faulthandler` on :data:`STACK_SIGNAL`, written from C
by the signal handler, for a rank whose Python threads cannot run at all; the launcher sends it
when the file request is not answered in time.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

from autocnnp.components.progress import BOARD, ProgressBoard, reporting_wanted
from autocnnp.engine.rundir import atomic_write
from autocnnp.engine.vocabulary import rank_host

PROGRESS = "progress"
STACKS = "stacks"
STACK_REQUEST = "stacks/request"
SYSTEM_METRICS = "metrics/system.jsonl"
#: the signal on which every rank dumps its Python stacks (SIGUSR1 is Slurm's warning signal)
STACK_SIGNAL = signal.SIGUSR2
#: a progress file is rewritten at least this often, so that a frozen process shows
KEEPALIVE_S = 5.0


def progress_path(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / PROGRESS / f"rank-{rank}.json"


def stacks_path(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / STACKS / f"rank-{rank}.txt"


class SystemSampler:
    """CPU %, memory, disk and network I/O of this process (psutil), and of the GPUs NVML
    reports when there are any (nvidia-ml-py, imported only if installed)."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.process.cpu_percent(None)  # the first call starts the interval
        self.psutil = psutil
        self.gpus: list[Any] = []
        self.nvml: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            self.gpus = [pynvml.nvmlDeviceGetHandleByIndex(i)
                         for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception:  # noqa: BLE001 - no NVML, no driver, no GPU: no GPU metrics
            self.nvml = None

    def sample(self) -> dict[str, Any]:
        p = self.process
        with p.oneshot():
            record: dict[str, Any] = {"cpu_percent": p.cpu_percent(None),
                                      "rss_bytes": p.memory_info().rss,
                                      "threads": p.num_threads()}
            try:
                io = p.io_counters()
                record["read_bytes"], record["write_bytes"] = io.read_bytes, io.write_bytes
            except (AttributeError, self.psutil.Error):
                pass
        net = self.psutil.net_io_counters()
        if net is not None:
            record["net_sent_bytes"], record["net_recv_bytes"] = net.bytes_sent, net.bytes_recv
        for i, handle in enumerate(self.gpus):
            try:
                util = self.nvml.nvmlDeviceGetUtilizationRates(handle)
                mem = self.nvml.nvmlDeviceGetMemoryInfo(handle)
                record[f"gpu{i}_util_percent"] = util.gpu
                record[f"gpu{i}_memory_bytes"] = mem.used
            except Exception:  # noqa: BLE001 - a GPU that stops answering is not fatal
                continue
        return record


class Heartbeat(threading.Thread):
    """The rank's monitoring thread (see the module docstring)."""

    def __init__(self, run_dir: Path, rank: int, *, metrics_interval_s: float = 5.0,
                 tensorboard: bool = False, board: ProgressBoard = BOARD,
                 tick_s: float = 1.0) -> None:
        super().__init__(name="autocnnp-heartbeat", daemon=True)
        self.run_dir, self.rank, self.board = Path(run_dir), rank, board
        self.metrics_interval_s, self.tensorboard, self.tick_s = metrics_interval_s, tensorboard, tick_s
        self.stop_event = threading.Event()
        self.host = rank_host()            # the swarm node, for people
        self.hostname = socket.gethostname()   # where ``pid`` means something (a container)
        self.main_thread = threading.main_thread().ident or 0
        self._written_version = -1
        self._written_at = 0.0
        self._served_request = ""
        self._writer: Any = None
        self._samples = 0
        self._warned = False
        self.sampler: SystemSampler | None = None
        progress_path(run_dir, rank).parent.mkdir(parents=True, exist_ok=True)
        stacks_path(run_dir, rank).parent.mkdir(parents=True, exist_ok=True)
        # kept open for the life of the process: the signal handler writes to its descriptor
        self._stack_file = open(stacks_path(run_dir, rank), "a", encoding="utf-8")
        faulthandler.register(STACK_SIGNAL, file=self._stack_file, all_threads=True, chain=False)
        self.write_progress()

    # -- progress ------------------------------------------------------------------------
    def record(self) -> dict[str, Any]:
        return {"rank": self.rank, "host": self.host, "hostname": self.hostname, "pid": os.getpid(),
                "main_thread": f"0x{self.main_thread:016x}", **self.board.snapshot(),
                "written_at": time.time()}

    def write_progress(self) -> None:
        record = self.record()
        self._written_version, self._written_at = record["version"], record["written_at"]
        atomic_write(progress_path(self.run_dir, self.rank),
                     json.dumps(record).encode(), sync=False)

    # -- stacks --------------------------------------------------------------------------
    def serve_stack_request(self) -> None:
        try:
            token = (self.run_dir / STACK_REQUEST).read_text().strip()
        except OSError:
            return
        if token and token != self._served_request:
            self._served_request = token
            self._stack_file.write(f"# stacks of rank {self.rank} (pid {os.getpid()}, "
                                   f"main thread {self.main_thread:#018x}) on request {token}\n")
            self._stack_file.flush()
            faulthandler.dump_traceback(file=self._stack_file, all_threads=True)
            self._stack_file.write(f"# end of request {token}\n")
            self._stack_file.flush()

    # -- system metrics ------------------------------------------------------------------
    def sample_system(self) -> dict[str, Any]:
        if self.sampler is None:
            self.sampler = SystemSampler()
        snap = self.board.snapshot()
        record = {"time": round(time.time(), 3), "rank": self.rank, "host": self.host,
                  **self.sampler.sample(), "phase": snap["phase"], "epoch": snap["epoch"],
                  "step": snap["step"], "step_time_s": round(snap["step_time_s"], 5),
                  "images_per_s": round(snap["images_per_s"], 2)}
        path = self.run_dir / SYSTEM_METRICS
        path.parent.mkdir(parents=True, exist_ok=True)
        # one write of one short line per sample in append mode: lines of ranks never mix
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.tensorboard:
            self._to_tensorboard(record)
        self._samples += 1
        return record

    def _to_tensorboard(self, record: dict[str, Any]) -> None:
        # the records tf.summary.scalar writes, without TensorFlow (absent on the torch engine)
        from autocnnp.components.event_files import EventFileWriter

        if self._writer is None:
            self._writer = EventFileWriter(
                self.run_dir / "tensorboard" / "system" / f"rank-{self.rank}")
        for key, value in record.items():
            if isinstance(value, (int, float)) and key not in ("time", "rank"):
                self._writer.scalar(f"system/{key}", value, self._samples)
        self._writer.flush()

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> None:
        next_sample = time.monotonic() + min(self.metrics_interval_s, 1.0)
        while not self.stop_event.wait(self.tick_s):
            self._guard(self.serve_stack_request)
            if (self.board.version != self._written_version
                    or time.time() - self._written_at >= KEEPALIVE_S):
                self._guard(self.write_progress)
            if self.metrics_interval_s > 0 and time.monotonic() >= next_sample:
                next_sample = time.monotonic() + self.metrics_interval_s
                self._guard(self.sample_system)

    def _guard(self, work: Callable[[], Any]) -> None:
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - monitoring never fails the training
            if not self._warned:
                self._warned = True
                import logging

                logging.getLogger("autocnnp.heartbeat").warning(
                    "monitoring: %s: %s (further problems are not logged)",
                    type(exc).__name__, exc)

    def close(self, phase: str | None = None) -> None:
        """Write the final progress record (``phase``: e.g. done) and stop the thread."""
        self.stop_event.set()
        if phase is not None:
            self.board.finish(phase)
        self._guard(self.write_progress)


def start(run_dir: Path, rank: int, monitoring: Any) -> Heartbeat:
    """Start the heartbeat thread of this rank with the ``<monitoring>`` settings."""
    beat = Heartbeat(run_dir, rank, metrics_interval_s=monitoring.metrics_interval_s,
                     tensorboard=monitoring.tensorboard)
    beat.start()
    return beat
