"""Start-up cost: time from the command to the first training step, and the first epoch
against a steady one, for ``autocnnp run`` and for the hand-written Horovod script.

Both train the quickstart model (U-Net depth 3, 16 filters, batch 8 per rank, Adam) on the
quickstart data (150 MNI152 slices at 128x128), 2 ranks, 1 intra-op thread each, 4 epochs:

* ``autocnnp``: ``autocnnp run CONFIG`` (validation, data check, manifest, mpirun, the
  generator's actions, the weight guard...), with a checkpoint plugin
  (``first_step_probe.py``) that records when rank 0's first step ends; no validation or
  test split, so that both do the same training work.
* ``handwritten``: ``mpirun -np 2 benchmarks/handwritten_horovod.py`` (the textbook Horovod
  Keras recipe), which records the same moment.

Reported per path: seconds from the command to the first step; first-epoch time; the median
of the later epochs; their ratio. Best of ``repeats`` (interleaved).

    python benchmarks/run.py startup [--quick]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
EPOCHS = 4

CONFIG = """<system_config>
  <task name="imaging_segmentation">
    <parallelism-degree>2</parallelism-degree>
    <CNN_archi><name>unet</name><param name="depth">3</param><param name="base_filters">16</param></CNN_archi>
    <CNN-Parallelism-Generator>
      <module name="train_strategy_def">
        <action class="extensible" type="checkpoint">
          <value name="FirstStepProbe"><path>{probe}</path></value>
        </action>
      </module>
    </CNN-Parallelism-Generator>
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
    <lr_policy name="linear_scaling"/>
    <deployment backend="local"><property name="threads_per_rank">1</property></deployment>
    <monitoring><property name="tensorboard">false</property></monitoring>
    <run_root>{runs}</run_root>
  </task>
</system_config>
"""


def _env() -> dict[str, str]:
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", AUTOCNNP_INTRA_OP_THREADS="1",
                AUTOCNNP_INTER_OP_THREADS="1",
                PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def measure_autocnnp(root: Path, data: Path) -> dict[str, float]:
    runs = root / "runs"
    config = root / "startup.xml"
    config.write_text(CONFIG.format(probe=HERE / "first_step_probe.py", data=data,
                                    epochs=EPOCHS, runs=runs))
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "autocnnp", "run", str(config)],
                          capture_output=True, text=True, env=_env(), cwd=str(REPO), timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"autocnnp run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    run_dir = max(p for p in runs.iterdir() if p.is_dir())
    first = json.loads((run_dir / "first_step.json").read_text())["time"]
    epochs = [json.loads(l)["time_s"] for l in
              (run_dir / "metrics" / "epochs.jsonl").read_text().splitlines() if l.strip()]
    return {"to_first_step_s": first - start, "first_epoch_s": epochs[0],
            "steady_epoch_s": statistics.median(epochs[1:])}


def measure_handwritten(root: Path, data: Path) -> dict[str, float]:
    from bench_training import write_spec

    run_dir = write_spec(root / "hand", data, EPOCHS, 2)
    first_file = run_dir / "first_step.json"
    start = time.time()
    proc = subprocess.run(["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2",
                           sys.executable, str(HERE / "handwritten_horovod.py"), str(run_dir),
                           "--epochs", str(EPOCHS), "--threads", "1",
                           "--first-step-file", str(first_file)],
                          capture_output=True, text=True, env=_env(), cwd=str(REPO), timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"handwritten script failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    first = json.loads(first_file.read_text())["time"]
    return {"to_first_step_s": first - start, "first_epoch_s": result["first_epoch_s"],
            "steady_epoch_s": statistics.median(result["epoch_seconds"])}


def run(quick: bool = False) -> list[dict]:
    from autocnnp.components.demo_data import build_demo_dataset

    repeats = 1 if quick else 2
    best: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="autocnnp-startup-") as tmp:
        root = Path(tmp)
        data = root / "mni152"
        build_demo_dataset(data, size=128, n_slices=150)
        for rep in range(repeats):
            for name, measure in (("handwritten", measure_handwritten),
                                  ("autocnnp", measure_autocnnp)):
                sub = root / f"{name}-{rep}"
                sub.mkdir()
                got = measure(sub, data)
                if name not in best or got["to_first_step_s"] < best[name]["to_first_step_s"]:
                    best[name] = got
    rows = []
    for name, got in best.items():
        rows.append({"benchmark": f"startup_{name}", "to_first_step_s": round(got["to_first_step_s"], 2),
                     "first_epoch_s": round(got["first_epoch_s"], 2),
                     "steady_epoch_s": round(got["steady_epoch_s"], 2),
                     "first_over_steady": round(got["first_epoch_s"] / got["steady_epoch_s"], 2),
                     "unit": "s"})
    rows.append({"benchmark": "startup_autocnnp_vs_handwritten",
                 "to_first_step_s": round(best["autocnnp"]["to_first_step_s"]
                                          / best["handwritten"]["to_first_step_s"], 3),
                 "unit": "ratio (lower is better)"})
    return rows


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(json.dumps(row))
