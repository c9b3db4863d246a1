"""The thesis's custom training checkpoint "LRSchedule" for the torch engine.

It extends the built-in ``checkpoint`` action as the Horovod listing's plugin does: on rank 0
it records the learning rate of every epoch to ``RUN_DIR/lr_schedule.csv`` and keeps the model
with the best validation loss in ``RUN_DIR/best_model.pt`` (a state dict).

The torch training loop calls the objects in ``ctx.values["callbacks"]`` with Keras's method
names (``on_train_begin(logs)``, ``on_epoch_end(epoch, logs)``...), after setting
``callback.model`` to the ``torch.nn.Module``; ``logs`` holds the epoch's averaged metrics and
``lr``. Import torch inside ``run``: ``autocnnp validate`` reads plugins without executing them.
"""

import math

from autocnnp.generator import ActionPlugin


class LRSchedule(ActionPlugin):
    """Log the learning rate per epoch and keep the best model (rank 0 only)."""

    type = "checkpoint"

    def run(self, ctx):
        import torch

        if not ctx.is_chief:
            return
        run_dir = ctx.run_dir
        monitor = self.options.get("monitor", "val_loss")

        class LRLogAndBest:
            model = None
            best = math.inf

            def on_train_begin(self, logs=None):
                path = run_dir / "lr_schedule.csv"
                if not path.exists():
                    path.write_text("epoch,lr\n")

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                with open(run_dir / "lr_schedule.csv", "a") as handle:
                    handle.write(f"{epoch + 1},{logs['lr']:.8g}\n")
                value = logs.get(monitor)
                if value is not None and value < self.best:
                    self.best = value
                    torch.save(self.model.state_dict(), run_dir / "best_model.pt")

        ctx.callbacks.append(LRLogAndBest())
