"""A checkpoint plugin used by the torch engine's MPI tests: every rank saves its weights.

The torch engine's twin of ``save_rank_weights.py``: it appends a callback to
``ctx.values["callbacks"]`` (the training loop sets ``callback.model`` to the
``torch.nn.Module``) that writes ``RUN_DIR/weights/rank-K-begin.npz`` when training starts
(after DistributedDataParallel broadcast rank 0's parameters), ``rank-K-step2.npz`` after the
second training step, ``rank-K-last.npz`` after the latest training step (rewritten at every
step: the last one's when training ends) and ``rank-K-end.npz`` when it ends. The state dict holds parameters and
buffers (BatchNorm's running statistics).
"""

from pathlib import Path

from autocnnp.generator import ActionPlugin


class SaveRankWeightsTorch(ActionPlugin):
    type = "checkpoint"

    def run(self, ctx):
        import numpy as np

        rank = ctx.values["communicator"].rank
        out = Path(ctx.run_dir) / "weights"
        out.mkdir(exist_ok=True)

        class Save:
            model = None

            def _save(self, tag):
                state = self.model.state_dict()
                arrays = {f"w{i:03d}": state[k].detach().cpu().numpy()
                          for i, k in enumerate(sorted(state))
                          if not k.endswith("num_batches_tracked")}
                np.savez(out / f"rank-{rank}-{tag}.npz", **arrays)

            def on_train_begin(self, logs=None):
                self.steps = 0
                self._save("begin")

            def on_train_batch_end(self, batch, logs=None):
                self.steps += 1
                if self.steps == 2:
                    self._save("step2")
                self._save("last")

            def on_train_end(self, logs=None):
                self._save("end")

        ctx.values.setdefault("callbacks", []).append(Save())
