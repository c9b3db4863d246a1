"""The names a config may use for the things training is made of, and the pinned stack.

One source for each list: validation offers them (with did-you-mean), the spec defaults to
them, and the rank-side code that builds the optimizer, loss and metrics accepts exactly them.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import socket
from pathlib import Path

#: ``<CNN_archi><name>``: the built-in architectures (both engines)
ARCHITECTURES = ("unet", "fcn")
#: ``<CNN_archi><name>monai.UNet</name>``: a network of MONAI (torch engine, optional extra)
MONAI_PREFIX = "monai."

#: ``<deployment backend="...">``: each backend a config may name -> the class that runs it
#: (``module:Class``, imported only when a job starts). A new backend is one module and one line
#: here (:mod:`autocnnp.run_manage.backend` reads this table).
BACKENDS = {
    "local": "autocnnp.run_manage.local:LocalBackend",
    "hosts": "autocnnp.run_manage.local:HostsBackend",
    "swarm": "autocnnp.run_manage.swarm:SwarmBackend",
    "slurm": "autocnnp.run_manage.slurm:SlurmBackend",
}

#: ``<property name="optimizer">``
OPTIMIZERS = ("sgd", "adam", "rmsprop", "adamw")
#: ``<property name="loss">``
LOSSES = ("dice", "crossentropy", "dice_crossentropy")
#: ``<property name="precision">``
PRECISIONS = ("fp32", "bf16", "fp16")
#: ``<evaluation><metrics>``: SegEval metrics computed on the test split (all by default)
METRICS = ("dice", "pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou", "sensitivity",
           "specificity", "hd95")

#: the Horovod release the Horovod engine is built and tested with (TensorFlow 2.15 / Keras 2)
HOROVOD_VERSION = "0.28.1"

#: the images ``autocnnp image build`` makes: the Horovod engine's, and the same with the CPU
#: build of torch (``--torch``), which swarm jobs of the torch engine run by default
CPU_IMAGE = "autocnnp:cpu"
TORCH_CPU_IMAGE = "autocnnp:cpu-torch"

#: environment variables through which a launcher gives each rank its thread counts
INTRA_OP_THREADS_ENV = "AUTOCNNP_INTRA_OP_THREADS"
INTER_OP_THREADS_ENV = "AUTOCNNP_INTER_OP_THREADS"

#: set by the swarm backend to the node a task runs on (a container's own host name names
#: the task, not the machine)
NODE_ENV = "AUTOCNNP_TASK_NODE"


def rank_host() -> str:
    """The machine a rank runs on, as its user names it: the swarm node of a task, otherwise
    the host name. Failure records, heartbeats and the communicator's log line use it."""
    return os.environ.get(NODE_ENV) or socket.gethostname()


def monai_networks() -> tuple[str, ...] | None:
    """The network classes ``monai.networks.nets`` offers, read from its ``__init__.py``
    without importing MONAI (which imports torch); None when MONAI is not installed."""
    spec = importlib.util.find_spec("monai")
    if spec is None or not spec.submodule_search_locations:
        return None
    init = Path(list(spec.submodule_search_locations)[0]) / "networks" / "nets" / "__init__.py"
    try:
        tree = ast.parse(init.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return None
    return tuple(sorted(alias.asname or alias.name for node in tree.body
                        if isinstance(node, ast.ImportFrom) for alias in node.names
                        if (alias.asname or alias.name)[:1].isupper()))
