"""A real Prometheus (Debian's package) scrapes a running job (issue 14): the launcher serves
every rank's CPU and memory in the text format on the port the config names."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from mpi_runs import mpirun_available

pytestmark = [pytest.mark.slow, pytest.mark.mpi,
              pytest.mark.skipif(not mpirun_available(), reason="needs mpirun (openmpi-bin)"),
              pytest.mark.skipif(shutil.which("prometheus") is None,
                                 reason="needs Debian's prometheus: bash scripts/monitoring-tools.sh")]

CONFIG = """<system_config>
  <task name="imaging_segmentation">
    <parallelism-degree>2</parallelism-degree>
    <CNN_archi><name>unet</name><param name="depth">2</param><param name="base_filters">8</param></CNN_archi>
    <data format="pairs">
      <train><path>{data}/train</path></train>
      <valid><path>{data}/valid</path></valid>
      <classes>background grey_matter white_matter</classes>
    </data>
    <hyperparameters>
      <property name="lr">1e-3</property>
      <property name="optimizer">adam</property>
      <property name="minibatch_size">2</property>
      <property name="end_epoch">{epochs}</property>
    </hyperparameters>
    <deployment backend="local"><property name="threads_per_rank">1</property></deployment>
    <monitoring>
      <property name="metrics_interval">1</property>
      <property name="prometheus_port">{port}</property>
      <property name="tensorboard">false</property>
    </monitoring>
    <run_root>{runs}</run_root>
  </task>
</system_config>
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture
def prometheus(tmp_path):
    """Start a real Prometheus scraping ``targets`` every second; stopped afterwards."""
    started: list[subprocess.Popen] = []

    def start(targets: list[str]) -> str:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                          "scrape_configs:\n  - job_name: autocnnp\n    static_configs:\n"
                          f"      - targets: {json.dumps(targets)}\n")
        proc = subprocess.Popen(["prometheus", f"--config.file={config}",
                                 f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prom.log", "w"))
        started.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return url
            except OSError:
                time.sleep(0.3)
            assert proc.poll() is None, (tmp_path / "prom.log").read_text()
        raise AssertionError("prometheus did not become ready")

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(timeout=30)


def query(url: str, expr: str) -> list[dict]:
    data = get_json(f"{url}/api/v1/query?query={urllib.parse.quote(expr)}")
    assert data["status"] == "success", data
    return data["data"]["result"]


def test_a_real_prometheus_scrapes_per_rank_cpu_and_memory_of_a_running_job(
        small_dataset, cli_env, tmp_path, prometheus):
    port = free_port()
    url = prometheus([f"127.0.0.1:{port}"])
    config = tmp_path / "prom.xml"
    config.write_text(CONFIG.format(data=small_dataset, runs=tmp_path / "runs", port=port,
                                    epochs=40))
    job = subprocess.Popen([sys.executable, "-m", "autocnnp", "run", str(config)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env)
    try:
        found: dict[str, list[dict]] = {}
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and job.poll() is None:
            found = {name: query(url, name) for name in
                     ("autocnnp_rank_cpu_percent", "autocnnp_rank_memory_rss_bytes",
                      "autocnnp_rank_epoch")}
            # both ranks in training (their sampler starts before TensorFlow is imported)
            training = [s for s in found["autocnnp_rank_epoch"] if float(s["value"][1]) >= 2]
            if len(training) == 2 and all(len(series) == 2 for series in found.values()):
                break
            time.sleep(1)
        assert job.poll() is None, "the job ended before Prometheus saw both ranks"
        run = next((tmp_path / "runs").glob("prom-*")).name
        for name in ("autocnnp_rank_cpu_percent", "autocnnp_rank_memory_rss_bytes"):
            series = sorted(found[name], key=lambda s: s["metric"]["rank"])
            assert [s["metric"]["rank"] for s in series] == ["0", "1"], found
            for s in series:
                assert s["metric"]["job"] == "autocnnp"  # Prometheus's own scrape job label
                assert s["metric"]["run"] == run
                assert s["metric"]["host"] == socket.gethostname()
        # the memory of a rank running TensorFlow is real: more than 100 MB resident
        assert all(float(s["value"][1]) > 100e6 for s in found["autocnnp_rank_memory_rss_bytes"])
        # a training rank uses CPU: the ranks' CPU series over the last seconds are not all 0
        busy = query(url, "max_over_time(autocnnp_rank_cpu_percent[30s])")
        assert sorted(float(s["value"][1]) > 5 for s in busy) == [True, True], busy
        targets = get_json(f"{url}/api/v1/targets")["data"]["activeTargets"]
        assert [t["health"] for t in targets] == ["up"], targets
    finally:
        job.terminate()
        out, err = job.communicate(timeout=120)
    assert f"autocnnp: Prometheus metrics at http://{socket.gethostname()}:{port}/metrics" in out
