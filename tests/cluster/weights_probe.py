"""Test plugin for the swarm tests: every rank records a hash of its weights after each epoch.

``RUN_DIR/weights/rank-K.txt`` gets one line per epoch: ``EPOCH SHA256 LOSS``. The tests compare
the hashes across ranks (ring-allreduce keeps them bit-identical). ``SlowWeightsProbe`` also
sleeps after each epoch, slowing training down enough to kill a rank's container in the middle
of it.
"""

from autocnnp.generator import ActionPlugin


def _add_probe(ctx, sleep_s):
    import hashlib
    import time

    import numpy as np
    import tensorflow as tf

    out = ctx.run_dir / "weights"
    out.mkdir(exist_ok=True)
    path = out / f"rank-{ctx.rank}.txt"

    class _Probe(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            digest = hashlib.sha256()
            for weights in self.model.get_weights():
                digest.update(np.ascontiguousarray(weights).tobytes())
            with open(path, "a") as handle:
                handle.write(f"{epoch + 1} {digest.hexdigest()} {(logs or {}).get('loss')}\n")
            if sleep_s:
                time.sleep(sleep_s)

    ctx.values.setdefault("callbacks", []).append(_Probe())


class WeightsProbe(ActionPlugin):
    """Hash every rank's weights at the end of each epoch (all ranks, not only rank 0)."""

    type = "checkpoint"

    def run(self, ctx):
        _add_probe(ctx, 0.0)


class SlowWeightsProbe(ActionPlugin):
    """WeightsProbe that sleeps 1.5 s after every epoch."""

    type = "checkpoint"

    def run(self, ctx):
        _add_probe(ctx, 1.5)
