"""A checkpoint plugin used by the MPI tests: every rank saves its weights.

It appends a Keras callback to ``ctx.values["callbacks"]`` (the plugin hook of the training
loop) that writes ``RUN_DIR/weights/rank-K-begin.npz`` when ``fit`` starts (after rank 0's
variables were broadcast), ``rank-K-step2.npz`` after the second training step (before any
epoch end) and ``rank-K-end.npz`` when it ends. ``get_weights`` includes the non-trainable
variables (BatchNorm's moving statistics).
"""

from pathlib import Path

from autocnnp.generator import ActionPlugin


class SaveRankWeights(ActionPlugin):
    type = "checkpoint"

    def run(self, ctx):
        import numpy as np
        import tensorflow as tf

        rank = ctx.values["communicator"].rank
        out = Path(ctx.run_dir) / "weights"
        out.mkdir(exist_ok=True)

        class Save(tf.keras.callbacks.Callback):
            def _save(self, tag):
                arrays = {f"w{i:03d}": w for i, w in enumerate(self.model.get_weights())}
                np.savez(out / f"rank-{rank}-{tag}.npz", **arrays)

            def on_train_begin(self, logs=None):
                self.steps = 0
                self._save("begin")

            def on_train_batch_end(self, batch, logs=None):
                self.steps += 1
                if self.steps == 2:
                    self._save("step2")

            def on_train_end(self, logs=None):
                self._save("end")

        ctx.values.setdefault("callbacks", []).append(Save())
