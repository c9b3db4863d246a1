"""Packing a group: 4 repeats of the quickstart packed two at a time vs one after another.

Both use the machine's 2 CPU slots (1 intra-op thread per rank):

* ``data_parallel``: the quickstart as it is, 2 Horovod ranks per training, the 4 trainings
  in turn (``group_mode`` data_parallel, the default);
* ``packed``: 1 rank per training, 2 trainings at once (``group_mode`` packed, ``slots`` 2),
  the next one starting when one ends.

The trainings are the quickstart's (U-Net depth 3, 16 filters, 128x128 MNI152 slices, Adam,
batch 8 per rank) with ``end_epoch`` cut to EPOCHS (3; 1 with --quick) so that both modes fit
in minutes. Reported: the group's wall time (the launcher's, start to folds summary), the mean
test Dice of the 4 runs, and the load average before and after (a shared machine: other
people's jobs count). Note that the two modes train differently: a global batch of 16 and a
learning rate scaled by 2 in data_parallel, batch 8 and the base rate packed.

    python benchmarks/run.py packing [--quick]
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _config(folder: Path, mode: str, epochs: int) -> Path:
    text = (REPO / "configs" / "quickstart.xml").read_text()
    text = text.replace("../data/mni152", str(REPO / "data" / "mni152"))
    text = re.sub(r'<property name="end_epoch">\d+</property>',
                  f'<property name="end_epoch">{epochs}</property>', text)
    text = text.replace('<property name="seed">42</property>',
                        '<property name="seed">42</property><property name="repeats">4</property>')
    deploy = '<property name="threads_per_rank">1</property>'
    if mode == "packed":
        text = text.replace("<parallelism-degree>2</parallelism-degree>",
                            "<parallelism-degree>1</parallelism-degree>")
        deploy += ('<property name="group_mode">packed</property>'
                   '<property name="slots">2</property>')
    text = text.replace('<property name="threads_per_rank">1</property>', deploy)
    text = text.replace("</task>", f"  <run_root>{folder / 'runs'}</run_root>\n  </task>")
    path = folder / f"quickstart-{mode}.xml"
    path.write_text(text)
    return path


def _measure(folder: Path, mode: str, epochs: int) -> dict:
    config = _config(folder, mode, epochs)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "autocnnp", "run", str(config)],
                          capture_output=True, text=True, timeout=3600,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    group = Path(done.stdout.strip().splitlines()[-1].removeprefix("run directory: ")
                 .split(" (")[0])
    summary = json.loads((group / "repeats.json").read_text())
    return {"mode": mode, "ranks_per_training": 1 if mode == "packed" else 2,
            "at_once": 2 if mode == "packed" else 1, "trainings": 4, "epochs": epochs,
            "wall_s": round(wall, 1),
            "test_dice_mean": round(summary["summary"]["mean_dice_foreground"]["mean"], 4),
            "load_before": round(load_before, 1), "load_after": round(os.getloadavg()[0], 1)}


def run(quick: bool = False) -> list[dict]:
    from autocnnp.components.demo_data import build_demo_dataset

    build_demo_dataset(REPO / "data" / "mni152", size=128)
    epochs = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="bench-packing-") as tmp:
        rows = [_measure(Path(tmp), "data_parallel", epochs), _measure(Path(tmp), "packed", epochs)]
    rows.append({"mode": "packed / data_parallel wall time",
                 "wall_s": round(rows[1]["wall_s"] / rows[0]["wall_s"], 3)})
    return rows


if __name__ == "__main__":
    from run import print_table  # type: ignore[import-not-found]

    print_table("packing", run(quick="--quick" in sys.argv))
