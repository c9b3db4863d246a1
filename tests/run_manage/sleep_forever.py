"""A checkpoint plugin used by the hang tests: rank ``rank`` sleeps forever in the middle of
epoch ``epoch`` (after training step ``step``), as a rank stuck in a dead NFS read or a
deadlocked data loader would. Not a test module."""

import time

from autocnnp.generator import ActionPlugin


def stuck_here():
    while True:  # the frame the hang watch must name
        time.sleep(3600)


class SleepForever(ActionPlugin):
    type = "checkpoint"

    def run(self, ctx):
        import tensorflow as tf

        rank = ctx.values["communicator"].rank
        target_rank = int(self.options.get("rank", 1))
        epoch_at, step_at = int(self.options.get("epoch", 2)), int(self.options.get("step", 2))

        class Sleeper(tf.keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch + 1

            def on_train_batch_end(self, batch, logs=None):
                if rank == target_rank and self.epoch == epoch_at and batch + 1 == step_at:
                    stuck_here()

        ctx.values.setdefault("callbacks", []).append(Sleeper())
