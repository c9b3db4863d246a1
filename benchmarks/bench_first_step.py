"""The first training step with and without the accumulators built before fit
(training.build_compiled_state): Keras creates the loss and metric variables inside the first
step otherwise, and a tf.function that creates variables is traced twice. One process, one
Horovod rank, the quickstart's U-Net at 128x128, batch 8, one thread; CPU seconds are the
figure to compare on a loaded machine (wall seconds follow the load)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = Path(__file__).resolve().parent / "first_step_trace_probe.py"


def run(quick: bool = False) -> list[dict]:
    rows = []
    for _ in range(1 if quick else 3):
        for mode in ("plain", "prebuild"):
            out = subprocess.run([sys.executable, str(PROBE), mode], capture_output=True,
                                 text=True, check=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            rows.append({"benchmark": "first_step", **row, "unit": "s"})
    return rows
