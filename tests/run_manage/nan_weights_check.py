"""Run by test_faults.py under mpirun: rank 1 puts a NaN into its weights, then every rank
calls the weight guard's check. Writes ``<exception type>: <message>`` to OUT/rank-K.txt.

Usage: nan_weights_check.py NAN_RANK OUT"""

import sys
from pathlib import Path

import horovod.tensorflow.keras as hvd
import numpy as np
import tensorflow as tf

from autocnnp.components.rank_runtime import check_weights_identical
from autocnnp.generator.context import Communicator

hvd.init()
comm = Communicator(rank=hvd.rank(), size=hvd.size(), local_rank=hvd.local_rank(),
                    local_size=hvd.local_size(), hostname="test", hvd=hvd)
tf.random.set_seed(1)
model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(3)])
weights = model.get_weights()
if comm.rank == int(sys.argv[1]):
    weights[0][0, 0] = np.nan
model.set_weights(weights)
try:
    check_weights_identical(model, comm, "training step 2")
    result = "passed"
except Exception as exc:  # noqa: BLE001 - the test reads what was raised
    result = f"{type(exc).__name__}: {exc.message}"
(Path(sys.argv[2]) / f"rank-{comm.rank}.txt").write_text(result)
