"""The torch engine's collectives on 2 real Gloo ranks (two processes, one file rendezvous):
``allreduce`` leaves the caller's array alone, so the weight guard's max and min see the
ranks differ, and ``check_weights_identical`` stops ranks whose buffers differ."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[2]

RANK = """
import json, sys
import numpy as np, torch, torch.distributed as dist
from autocnnp.components.torch_runtime import (TorchCommunicator, allreduce,
                                               check_weights_identical, leave_process_group)

rank, store, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
comm = TorchCommunicator(rank=rank, size=2, local_rank=rank, local_size=2, hostname="here")
values = np.array([1.0 + rank, 5.0 - rank])
high, low = allreduce(values, comm, "max"), allreduce(values, comm, "min")
result = {"values": values.tolist(), "high": high.tolist(), "low": low.tolist()}
torch.manual_seed(0)
model = torch.nn.BatchNorm2d(2)  # equal weights, running mean differing by rank
model.running_mean.fill_(0.5 + 1e-3 * rank)
result["trainable"] = check_weights_identical(model, comm, "epoch 1")
try:
    check_weights_identical(model, comm, "training", trainable_only=False)
except Exception as exc:
    result["error"] = [type(exc).__name__, exc.message]
json.dump(result, open(out, "w"))
leave_process_group()  # as the engine does: exiting with Gloo alive can abort (exit -6)
"""


def test_guard_sees_two_gloo_ranks_differ(tmp_path: Path) -> None:
    from autocnnp.components.rank_runtime import divergence_message

    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    ranks = [subprocess.Popen([sys.executable, "-c", RANK, str(rank), str(tmp_path / "store"),
                               str(tmp_path / f"rank-{rank}.json")], env=env,
                              stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    for proc in ranks:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
    results = [json.loads((tmp_path / f"rank-{rank}.json").read_text()) for rank in (0, 1)]
    for rank, result in enumerate(results):
        assert result["values"] == [1.0 + rank, 5.0 - rank]  # the caller's array, untouched
        assert result["high"] == [2.0, 5.0] and result["low"] == [1.0, 4.0]
        assert result["trainable"] == 0.0  # the parameters are equal
        name, message = result["error"]
        assert name == "WeightDivergenceError"
        spread = float(message.split("by a relative ")[1].split(")")[0])
        assert spread > 1e-7
        assert message == divergence_message("training", 2, spread, "torch")


def test_ranks_started_by_srun_read_their_place_from_slurm() -> None:
    from autocnnp.components.torch_runtime import rank_environment

    # plain srun, 2 nodes of 3 tasks: the step's tasks per node, "3(x2)"
    slurm = {"SLURM_PROCID": "4", "SLURM_NTASKS": "6", "SLURM_LOCALID": "1",
             "SLURM_STEP_TASKS_PER_NODE": "3(x2)"}
    assert rank_environment(slurm) == (4, 6, 1, 3)
    # mpirun inside an allocation: every process inherits SLURM_PROCID=0, Open MPI's wins
    assert rank_environment({**slurm, "SLURM_PROCID": "0", "OMPI_COMM_WORLD_RANK": "5",
                             "OMPI_COMM_WORLD_SIZE": "6", "OMPI_COMM_WORLD_LOCAL_RANK": "2",
                             "OMPI_COMM_WORLD_LOCAL_SIZE": "3"}) == (5, 6, 2, 3)
