"""Checkpoint plugin of the divergence test: from epoch ``from_epoch`` (default 3) the loss is
multiplied by ``scale`` (default 50) on every rank. Not a test module."""

import sys
from pathlib import Path

from autocnnp.generator import ActionPlugin


class RunAway(ActionPlugin):
    type = "checkpoint"

    def run(self, ctx):
        import tensorflow as tf

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from runaway_state import SCALE

        start, scale = int(self.options.get("from_epoch", 3)), float(self.options.get("scale", 50))

        class Raise(tf.keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                SCALE.assign(scale if epoch + 1 >= start else 1.0)

        ctx.values.setdefault("callbacks", []).append(Raise())
