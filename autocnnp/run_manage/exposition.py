"""The job's metrics for Prometheus: every rank's latest system sample and progress.

The launcher's :class:`MetricsExporter` thread reads what the ranks' heartbeats write
(``RUN_DIR/metrics/system.jsonl``, ``RUN_DIR/progress/rank-K.json``) and, every few seconds,

- writes ``RUN_DIR/metrics/autocnnp.prom`` in the text exposition format (point node
  exporter's textfile collector at it, or read it), and
- with ``<monitoring><property name="prometheus_port">``, serves the same text on
  ``http://HOST:PORT/metrics`` (``auto``: a free port), announced on the launcher's output
  and recorded as ``prometheus_url`` in ``state.json``.

Series carry the labels ``run`` (the run directory's name), ``rank`` and ``host``; ``job`` is
left to Prometheus (its scrape job).
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from autocnnp.engine import rundir
from autocnnp.run_manage.heartbeat import SYSTEM_METRICS
from autocnnp.run_manage.watchdog import read_progress

PROM_FILE = "metrics/autocnnp.prom"

#: sample field -> (metric name, help); GPU fields (gpuN_...) are added per device
GAUGES: dict[str, tuple[str, str]] = {
    "cpu_percent": ("autocnnp_rank_cpu_percent", "CPU use of the rank's process (100 = one core)"),
    "rss_bytes": ("autocnnp_rank_memory_rss_bytes", "resident memory of the rank's process"),
    "threads": ("autocnnp_rank_threads", "threads of the rank's process"),
    "read_bytes": ("autocnnp_rank_disk_read_bytes", "bytes the rank's process read from disk"),
    "write_bytes": ("autocnnp_rank_disk_write_bytes", "bytes the rank's process wrote to disk"),
    "net_sent_bytes": ("autocnnp_host_network_sent_bytes", "bytes the rank's host sent"),
    "net_recv_bytes": ("autocnnp_host_network_received_bytes", "bytes the rank's host received"),
    "step_time_s": ("autocnnp_rank_step_seconds", "duration of the rank's last training step"),
    "images_per_s": ("autocnnp_job_images_per_second",
                     "training throughput of all ranks, as this rank measures it"),
    "epoch": ("autocnnp_rank_epoch", "epoch the rank is training (1-based)"),
    "step": ("autocnnp_rank_step", "training steps the rank finished in this epoch"),
}
GPU_GAUGES = {"util_percent": ("autocnnp_rank_gpu_utilization_percent", "GPU utilisation"),
              "memory_bytes": ("autocnnp_rank_gpu_memory_used_bytes", "GPU memory in use")}


class SystemMetricsTail:
    """The latest sample of every rank in ``metrics/system.jsonl``, read incrementally."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / SYSTEM_METRICS
        self.offset = 0
        self.latest: dict[int, dict[str, Any]] = {}

    def update(self) -> dict[int, dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except OSError:
            return self.latest
        end = chunk.rfind(b"\n") + 1  # a line being written is read next time
        self.offset += end
        for line in chunk[:end].splitlines():
            try:
                sample = json.loads(line)
                self.latest[int(sample["rank"])] = sample
            except (ValueError, KeyError, TypeError):
                continue
        return self.latest


def _labels(**labels: Any) -> str:
    def escape(value: Any) -> str:
        return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


def prometheus_text(run: str, samples: dict[int, dict[str, Any]],
                    progress: dict[int, dict[str, Any]]) -> str:
    """The text exposition format (version 0.0.4) of every rank's latest sample."""
    series: dict[str, tuple[str, list[str]]] = {}

    def add(name: str, help_text: str, labels: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        series.setdefault(name, (help_text, []))[1].append(f"{name}{labels} {float(value)!r}")

    for rank in sorted(set(samples) | set(progress)):
        sample, prog = samples.get(rank, {}), progress.get(rank, {})
        host = sample.get("host") or prog.get("host", "")
        labels = _labels(run=run, rank=rank, host=host)
        merged = {**{k: prog.get(k) for k in ("epoch", "step", "step_time_s", "images_per_s")},
                  **{k: v for k, v in sample.items() if k in GAUGES}}
        for key, value in merged.items():
            name, help_text = GAUGES[key]
            add(name, help_text, labels, value)
        for key, value in sample.items():
            if key.startswith("gpu") and "_" in key:
                index, _, what = key[3:].partition("_")
                if what in GPU_GAUGES and index.isdigit():
                    name, help_text = GPU_GAUGES[what]
                    add(name, help_text, _labels(run=run, rank=rank, host=host, gpu=index), value)
        if "progress_at" in prog:
            add("autocnnp_rank_last_progress_timestamp_seconds",
                "wall time of the rank's last step, validation step or epoch end", labels,
                prog["progress_at"])
    lines = []
    for name, (help_text, values) in series.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", *values]
    return "\n".join(lines) + "\n"


class MetricsExporter(threading.Thread):
    """Writes ``metrics/autocnnp.prom`` every ``interval_s`` and serves it over HTTP when a
    port is configured (see the module docstring)."""

    def __init__(self, run_dir: Path, *, port: int | None, interval_s: float = 5.0,
                 say: Callable[[str], Any] | None = None) -> None:
        super().__init__(name="autocnnp-metrics", daemon=True)
        self.run_dir = Path(run_dir)
        self.interval_s = max(interval_s, 1.0)
        self.tail = SystemMetricsTail(run_dir)
        self.text = "\n"
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.server: ThreadingHTTPServer | None = None
        self.url: str | None = None
        if port is not None:
            self.server = ThreadingHTTPServer(("0.0.0.0", port), self._handler())
            self.server.daemon_threads = True
            self.url = f"http://{socket.gethostname()}:{self.server.server_address[1]}/metrics"
            threading.Thread(target=self.server.serve_forever, name="autocnnp-prometheus",
                             daemon=True).start()
            if say:
                say(f"autocnnp: Prometheus metrics at {self.url}")
            rundir.record_state(self.run_dir, prometheus_url=self.url)

    @property
    def port(self) -> int | None:
        return self.server.server_address[1] if self.server else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404, "only /metrics is served here")
                    return
                body = exporter.refresh().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # scrapes are not news
                pass

        return Handler

    def refresh(self) -> str:
        """Read the ranks' latest records and rebuild the text (also what a scrape gets)."""
        with self.lock:
            self.text = prometheus_text(self.run_dir.name, self.tail.update(),
                                        read_progress(self.run_dir))
            return self.text

    def write_textfile(self) -> None:
        rundir.atomic_write(self.run_dir / PROM_FILE, self.refresh().encode(), sync=False)

    def run(self) -> None:
        while not self.stop_event.wait(self.interval_s):
            try:
                self.write_textfile()
            except Exception:  # noqa: BLE001 - metrics never fail the job
                continue

    def stop(self) -> None:
        self.stop_event.set()
        try:
            self.write_textfile()
        except Exception:  # noqa: BLE001
            pass
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
