"""A checkpoint plugin used by bench_startup: rank 0 records the wall time at which the
first training step ended (``RUN_DIR/first_step.json``)."""

import json
import time
from pathlib import Path

from autocnnp.generator import ActionPlugin


class FirstStepProbe(ActionPlugin):
    type = "checkpoint"

    def run(self, ctx):
        import tensorflow as tf

        if ctx.values["communicator"].rank != 0:
            return
        out = Path(ctx.run_dir) / "first_step.json"

        class Probe(tf.keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if not out.exists():
                    out.write_text(json.dumps({"time": time.time()}))

        ctx.values.setdefault("callbacks", []).append(Probe())
