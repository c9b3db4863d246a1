"""A checkpoint plugin used by the streaming tests: every rank records its data.

It wraps the rank's training source so that ``RUN_DIR/samples/rank-K.json`` lists, at the end
of ``fit``, the names of the samples planned for each epoch (``plan``: epoch -> batches) and
of every batch actually read (``read``, in no particular order: reads run in parallel and
ahead). With ``corrupt_epoch`` set (a param), rank ``corrupt_rank`` overwrites, at the end of
that epoch, the image of the first sample of its last batch of the next epoch, and writes its
path to ``RUN_DIR/corrupted.txt``: a file that goes bad in the middle of training.
"""

import json
import threading
from pathlib import Path

from autocnnp.generator import ActionPlugin


class RecordSamples(ActionPlugin):
    type = "checkpoint"

    def run(self, ctx):
        import tensorflow as tf

        rank = ctx.values["communicator"].rank
        plan, read, lock = {}, [], threading.Lock()
        out = Path(ctx.run_dir) / "samples"
        out.mkdir(exist_ok=True)
        corrupt_epoch = int(self.options.get("corrupt_epoch", -1))
        corrupt_rank = int(self.options.get("corrupt_rank", 0))
        run_dir = Path(ctx.run_dir)
        state = {}

        def wrap():
            # the dataset is injected after this action; fit's pipeline looks both methods
            # up on every call and starts reading after on_train_begin
            data = ctx.values["dataset"]
            names = data.train.names
            planned, reader = data.train_batches, data.train.read_batch

            def train_batches(epoch):
                batches = planned(epoch)
                with lock:
                    plan[epoch] = [[names[i] for i in b] for b in batches]
                return batches

            def read_batch(indices):
                with lock:
                    read.append([names[int(i)] for i in indices])
                return reader(indices)

            data.train_batches = train_batches
            data.train.read_batch = read_batch
            state.update(data=data, planned=planned)

        class Record(tf.keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                wrap()

            def on_epoch_end(self, epoch, logs=None):
                if epoch == corrupt_epoch and rank == corrupt_rank:
                    data, planned = state["data"], state["planned"]
                    victim = Path(data.train.refs[int(planned(epoch + 1)[-1][0])].image)
                    victim.write_bytes(b"not an npy file any more")
                    (run_dir / "corrupted.txt").write_text(str(victim))

            def on_train_end(self, logs=None):
                with lock:
                    record = {"plan": plan, "read": list(read)}
                (out / f"rank-{rank}.json").write_text(json.dumps(record))

        ctx.values.setdefault("callbacks", []).append(Record())
