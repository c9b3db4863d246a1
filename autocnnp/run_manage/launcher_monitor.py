"""What a launcher runs beside a job: the hang watch and the metrics exporter.

Every backend that waits for its ranks uses the same :class:`LauncherMonitor`::

    monitor = LauncherMonitor(run_dir, spec.monitoring, stop_job=..., output=lines, say=...)
    try:
        ...  # wait for the job
    finally:
        monitor.stop()
    if monitor.hang_error():
        raise monitor.hang_error()
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from autocnnp.engine.spec import MonitoringSpec
from autocnnp.run_manage.exposition import MetricsExporter
from autocnnp.run_manage.heartbeat import PROGRESS, STACK_REQUEST
from autocnnp.run_manage.watchdog import HangWatch, JobHangError


def line_writer(out: TextIO) -> Callable[[str], None]:
    """A ``say`` for :class:`LauncherMonitor` that writes whole lines to ``out``."""
    def say(text: str) -> None:
        out.write(text + "\n")
        out.flush()
    return say


def forget_progress(run_dir: Path) -> None:
    """Remove the progress records and the stack request of an earlier launch of this run
    directory (``--resume``): a record left "training" by a killed rank would read as a hang
    before the new rank's first heartbeat replaces it."""
    for path in (Path(run_dir) / PROGRESS).glob("rank-*.json"):
        path.unlink(missing_ok=True)
    (Path(run_dir) / STACK_REQUEST).unlink(missing_ok=True)


class LauncherMonitor:
    """Starts the hang watch (unless ``hang_timeout`` is 0) and the metrics exporter."""

    def __init__(self, run_dir: Path, monitoring: MonitoringSpec, *,
                 stop_job: Callable[[], Any], output: Sequence[str] = (),
                 say: Callable[[str], Any] | None = None) -> None:
        self.watch: HangWatch | None = None
        self.exporter: MetricsExporter | None = None
        forget_progress(run_dir)
        if monitoring.hang_timeout_s != 0:
            self.watch = HangWatch(run_dir, monitoring, stop_job, launcher_output=output, say=say)
            self.watch.start()
        if monitoring.metrics_interval_s > 0 or monitoring.prometheus_port is not None:
            self.exporter = MetricsExporter(run_dir, port=monitoring.prometheus_port,
                                            interval_s=monitoring.metrics_interval_s or 5.0,
                                            say=say)
            self.exporter.start()

    def stop(self) -> None:
        if self.watch is not None:
            self.watch.stop()
        if self.exporter is not None:
            self.exporter.stop()

    def hang_error(self) -> JobHangError | None:
        return self.watch.error() if self.watch is not None else None
