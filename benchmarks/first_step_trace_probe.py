"""One process, one Horovod rank: the quickstart U-Net's first training step, with (prebuild)
or without (plain) the loss and metric accumulators built before fit; prints one JSON line.
Used by bench_first_step.py."""

import json
import os
import sys
import time
from pathlib import Path

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import horovod.tensorflow.keras as hvd  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from autocnnp.components.losses import dice_metric  # noqa: E402
from autocnnp.components.models.unet import build_unet  # noqa: E402
from autocnnp.components.training import build_compiled_state  # noqa: E402


def main(mode: str) -> None:
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    hvd.init()
    model = build_unet((128, 128, 1), 3, depth=3, base_filters=16)  # the quickstart model
    optimizer = hvd.DistributedOptimizer(tf.keras.optimizers.legacy.Adam(1e-3))
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=[dice_metric])
    optimizer._create_all_weights(model.trainable_variables)  # as training.restore does
    if mode == "prebuild":
        build_compiled_state(model, (128, 128, 1))
    rng = np.random.default_rng(0)
    x = rng.random((8, 128, 128, 1), dtype=np.float32)
    y = rng.integers(0, 3, (8, 128, 128)).astype(np.int32)
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    model.fit(data, steps_per_epoch=1, epochs=1, verbose=0)
    wall1, cpu1 = time.perf_counter(), time.process_time()
    model.fit(data, steps_per_epoch=3, epochs=1, verbose=0)
    cpu2 = time.process_time()
    print(json.dumps({"mode": mode, "first_step_wall_s": wall1 - wall0,
                      "first_step_cpu_s": cpu1 - cpu0,
                      "traces": model.train_function.experimental_get_tracing_count(),
                      "steady_step_cpu_s": (cpu2 - cpu1) / 3}))


if __name__ == "__main__":
    main(sys.argv[1])
