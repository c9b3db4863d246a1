"""The cost of monitoring (issue 14): the quickstart model trained through the real launcher
(`autocnnp run`) with monitoring on and off, interleaved.

* ``on``: the defaults (hang watch with its progress reports every step, system metrics every
  5 s into metrics/system.jsonl, the launcher's exporter writing metrics/autocnnp.prom) plus
  the Prometheus port served;
* ``off``: ``hang_timeout`` 0 and ``metrics_interval`` 0 (no callback, no thread, no file).

Both train the quickstart model (U-Net depth 3, 16 filters, 128x128 MNI152 demo slices, Adam,
batch 8 per rank, 2 ranks, 1 intra-op thread each), no validation split. Throughput is images
per epoch over the median epoch time (``time_s`` of metrics/epochs.jsonl, the first epoch left
out). ``pairs`` on/off runs alternate, so that other load on the machine hits both alike; the
overhead is 1 - on/off of the median of each side (target < 2%), with the spread of the
per-pair ratios as the measure of noise.

    python benchmarks/bench_monitoring.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = 0.02

CONFIG = """<system_config>
  <task name="imaging_segmentation">
    <parallelism-degree>2</parallelism-degree>
    <CNN_archi><name>unet</name><param name="depth">3</param><param name="base_filters">16</param></CNN_archi>
    <data format="pairs">
      <train><path>{data}/train</path></train>
      <classes>background grey_matter white_matter</classes>
    </data>
    <hyperparameters>
      <property name="lr">1e-3</property>
      <property name="optimizer">adam</property>
      <property name="loss">dice_crossentropy</property>
      <property name="minibatch_size">8</property>
      <property name="end_epoch">{epochs}</property>
    </hyperparameters>
    <deployment backend="local"><property name="threads_per_rank">1</property></deployment>
    <monitoring>
      <property name="tensorboard">false</property>
{monitoring}
    </monitoring>
    <run_root>{runs}</run_root>
  </task>
</system_config>
"""
SETTINGS = {
    "on": '      <property name="prometheus_port">auto</property>',
    "off": '      <property name="hang_timeout">0</property>\n'
           '      <property name="metrics_interval">0</property>',
}


def throughput(root: Path, data: Path, mode: str, index: int, epochs: int) -> float:
    runs = root / f"{mode}-{index}"
    config = root / f"{mode}-{index}.xml"
    config.write_text(CONFIG.format(data=data, epochs=epochs, runs=runs,
                                    monitoring=SETTINGS[mode]))
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "autocnnp", "run", str(config)],
                          capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    run_dir = next(runs.iterdir())
    records = [json.loads(l) for l in (run_dir / "metrics" / "epochs.jsonl").read_text().splitlines()]
    images = len(list((data / "train" / "images").iterdir()))
    per_epoch = math.ceil((images // 2) / 8) * 8 * 2
    return per_epoch / statistics.median(r["time_s"] for r in records[1:])


def reporter_seconds_per_step(steps: int = 20000) -> float:
    """What the progress reporter adds to one training step: Keras dispatching the
    callback's two batch hooks, and the board's bookkeeping (measured alone: load on a shared
    machine hardly disturbs a loop this short)."""
    import tensorflow as tf

    from autocnnp.components.progress import ProgressBoard, make_progress_reporter

    board = ProgressBoard()
    reporter = make_progress_reporter(board, end_epoch=1, steps_per_epoch=steps, global_batch=16)

    def loop(callbacks: list) -> float:
        hooks = tf.keras.callbacks.CallbackList(callbacks, model=tf.keras.Sequential())
        hooks.on_train_begin()
        hooks.on_epoch_begin(0)
        start = time.perf_counter()
        for step in range(steps):
            hooks.on_train_batch_begin(step)
            hooks.on_train_batch_end(step)
        return (time.perf_counter() - start) / steps

    base = min(loop([tf.keras.callbacks.Callback()]) for _ in range(3))
    with_reporter = min(loop([tf.keras.callbacks.Callback(), reporter]) for _ in range(3))
    return max(with_reporter - base, 0.0)


def heartbeat_cpu_fraction(seconds: float = 10.0) -> float:
    """CPU time of the heartbeat thread per second of wall time, sampling system metrics every
    second (5 times the default rate) and rewriting the progress file every second."""
    from autocnnp.components.progress import ProgressBoard
    from autocnnp.run_manage.heartbeat import Heartbeat

    class Timed(Heartbeat):
        def run(self) -> None:
            super().run()
            self.cpu_s = time.thread_time()  # this thread's CPU time, read by itself

    with tempfile.TemporaryDirectory(prefix="autocnnp-bench-heartbeat-") as tmp:
        board = ProgressBoard()
        beat = Timed(Path(tmp), 0, metrics_interval_s=1.0, board=board)
        beat.start()
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            board.begin_step()
            board.end_step()  # a step every 10 ms: the progress file changes every second
            time.sleep(0.01)
        beat.close()
        beat.join()
        return beat.cpu_s / (time.monotonic() - start)


def run(quick: bool = False) -> list[dict]:
    from autocnnp.components.demo_data import build_demo_dataset

    epochs, pairs = (4, 2) if quick else (6, 4)
    values: dict[str, list[float]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory(prefix="autocnnp-bench-monitoring-") as tmp:
        root = Path(tmp)
        data = root / "mni152"
        build_demo_dataset(data, size=128, n_slices=150)
        for index in range(pairs):
            order = ("off", "on") if index % 2 == 0 else ("on", "off")
            for mode in order:
                values[mode].append(throughput(root, data, mode, index, epochs))
    on, off = statistics.median(values["on"]), statistics.median(values["off"])
    ratios = [a / b for a, b in zip(values["on"], values["off"])]
    per_step = reporter_seconds_per_step()
    thread = heartbeat_cpu_fraction()
    step_s = 16 / on if on else float("nan")  # images per step (2 ranks x 8) / images per second
    return [
        {"benchmark": "progress_reporter_cost_per_step", "value": round(per_step * 1e6, 2),
         "unit": "microseconds", "fraction_of_a_training_step": round(per_step / step_s, 6)},
        {"benchmark": "heartbeat_thread_cpu", "value": round(thread, 5),
         "unit": "CPU seconds per second (metrics every 1 s, 5x the default)"},
        {"benchmark": "training_throughput_monitoring_on", "value": round(on, 2),
         "unit": "images/s", "runs": [round(v, 2) for v in values["on"]]},
        {"benchmark": "training_throughput_monitoring_off", "value": round(off, 2),
         "unit": "images/s", "runs": [round(v, 2) for v in values["off"]]},
        {"benchmark": "monitoring_overhead", "value": round(1 - on / off, 4),
         "unit": f"fraction of throughput (target < {TARGET})",
         "pair_ratios_on_over_off": [round(r, 3) for r in ratios]},
        {"benchmark": "monitoring_benchmark_setup",
         "value": f"{pairs} interleaved on/off pairs, {epochs} epochs each (median epoch, first "
                  f"left out), 2 ranks, {os.cpu_count()} CPU cores", "unit": "info"},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 epochs, 2 pairs")
    args = parser.parse_args()
    for row in run(quick=args.quick):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
