"""The baseline of ``bench_training``: a plain Horovod Keras script, written by hand.

It trains the same model on the same data as an autocnnp run directory describes
(``spec.json``): the U-Net, the training split cut in per-rank shards, the same loss and
Dice metric, Adam (or SGD) with the learning rate times the number of ranks in
``hvd.DistributedOptimizer``, broadcast of the initial variables, metric averaging and a
``ModelCheckpoint`` on rank 0 every epoch - the recipe of Horovod's Keras example, nothing
else (no validation, no LR schedule callback, no weight guard). It prints one JSON line
from rank 0 with the time of every epoch after the first (which includes graph tracing) and
the images/s over them.

    mpirun -np 2 python benchmarks/handwritten_horovod.py RUN_DIR [--epochs 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--first-step-file", type=Path,
                        help="rank 0 writes the wall time its first step ended here")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf
    import horovod.tensorflow.keras as hvd

    hvd.init()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    spec = json.loads((args.run_dir / "spec.json").read_text())
    hp, data, arch = spec["hyperparameters"], spec["data"], spec["architecture"]
    tf.keras.utils.set_random_seed(spec["reproducibility"]["seed"])

    from autocnnp.components.datasets import load_split
    from autocnnp.components.losses import dice_metric, get_loss
    from autocnnp.components.models.unet import build_unet

    train = load_split(Path(data["train"]), num_classes=len(data["classes"]),
                       image_size=data["image_size"], split="train")
    n = len(train)
    idx = np.array_split(np.random.default_rng(0).permutation(n), hvd.size())[hvd.rank()]
    x, y = train.images[idx], train.masks[idx]
    batch = hp["minibatch_size"]
    steps = math.ceil((n // hvd.size()) / batch)
    ds = (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x)).repeat()
          .batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE))

    model = build_unet(x.shape[1:], len(data["classes"]),
                       **{k: int(v) for k, v in arch["params"].items()})
    base = tf.keras.optimizers.legacy.Adam(hp["lr"] * hvd.size()) \
        if hp["optimizer"].lower() == "adam" \
        else tf.keras.optimizers.legacy.SGD(hp["lr"] * hvd.size(), momentum=hp["momentum"])
    model.compile(optimizer=hvd.DistributedOptimizer(base), loss=get_loss(hp["loss"]),
                  metrics=[dice_metric])

    class Timer(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if args.first_step_file and hvd.rank() == 0 and not args.first_step_file.exists():
                args.first_step_file.write_text(json.dumps({"time": time.time()}))

        def on_epoch_end(self, epoch, logs=None):
            self.times = getattr(self, "times", []) + [time.perf_counter() - self.start]

    timer = Timer()
    callbacks = [hvd.callbacks.BroadcastGlobalVariablesCallback(0),
                 hvd.callbacks.MetricAverageCallback()]
    if hvd.rank() == 0:  # "save checkpoints only on worker 0" (Horovod's Keras example)
        ckpt_dir = args.run_dir / "handwritten-checkpoints"
        ckpt_dir.mkdir(exist_ok=True)
        callbacks.append(tf.keras.callbacks.ModelCheckpoint(
            str(ckpt_dir / "checkpoint-{epoch}.h5"), save_weights_only=True))
    callbacks.append(timer)  # last: its epoch time includes the checkpoint
    model.fit(ds, steps_per_epoch=steps, epochs=args.epochs, verbose=0, callbacks=callbacks)
    timed = timer.times[1:] or timer.times
    images = steps * batch * hvd.size() * len(timed)
    if hvd.rank() == 0:
        print(json.dumps({"ranks": hvd.size(), "steps_per_epoch": steps,
                          "images_per_epoch": steps * batch * hvd.size(),
                          "epoch_seconds": timed, "first_epoch_s": timer.times[0],
                          "images_per_s": images / sum(timed)}),
              flush=True)


if __name__ == "__main__":
    main()
