"""Example extensible-action plugin: the thesis's custom training checkpoint "LRSchedule".

It extends the built-in ``checkpoint`` action (Listing 4.1: ``<action class="extensible"
type="Tr_Checkpoint"><value name="LRSchedule"><path>checkpoint/ckpt1.py</path></value>``):
on rank 0 it records the learning rate of every epoch to ``RUN_DIR/lr_schedule.csv`` and keeps
the model with the best validation loss in ``RUN_DIR/best_model.h5``.

Interface every plugin follows: subclass :class:`autocnnp.generator.ActionPlugin`, set ``type``
to the extensible action it plugs into, implement ``run(self, ctx)``. ``run`` executes on every
rank, right after the built-in action (``mode="extend"``, the default) or instead of it
(``mode="replace"``). Parameters come from ``<param name="...">`` as ``self.options``.
Import TensorFlow inside ``run``: ``autocnnp validate`` reads plugins without executing them.
"""

from autocnnp.generator import ActionPlugin


class LRSchedule(ActionPlugin):
    """Log the learning rate per epoch and keep the best model (rank 0 only)."""

    type = "checkpoint"

    def run(self, ctx):
        import tensorflow as tf

        if not ctx.is_chief:
            return
        run_dir = ctx.run_dir
        monitor = self.options.get("monitor", "val_loss")

        class _LRLog(tf.keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                path = run_dir / "lr_schedule.csv"
                if not path.exists():
                    path.write_text("epoch,lr\n")

            def on_epoch_end(self, epoch, logs=None):
                lr = float(tf.keras.backend.get_value(self.model.optimizer.lr))
                with open(run_dir / "lr_schedule.csv", "a") as handle:
                    handle.write(f"{epoch + 1},{lr:.8g}\n")

        best = tf.keras.callbacks.ModelCheckpoint(str(run_dir / "best_model.h5"), monitor=monitor,
                                                  save_best_only=True, verbose=0)
        ctx.callbacks.extend([_LRLog(), best])
