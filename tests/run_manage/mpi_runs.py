"""Helpers of the MPI tests: small run directories and real ``mpirun`` worker launches.

Not a test module; the tests import it (pytest puts this folder on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from autocnnp.engine.spec import (ActionChoice, ArchitectureSpec, DataCache, DataSpec,
                                  DeploymentSpec,
                                  Hyperparameters, LRPolicyName, LRPolicySpec, ModuleChoice,
                                  MonitoringSpec, ReproducibilitySpec, TrainingSpec,
                                  spec_to_dict)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CLASSES = ("background", "grey matter", "white matter")


def mpirun_available() -> bool:
    return shutil.which("mpirun") is not None


def write_run(run_dir: Path, data: Path, *, lr: float, batch: int, epochs: int = 1,
              optimizer: str = "sgd", momentum: float = 0.0, policy: str = "linear_scaling",
              ranks: int = 2, plugins: tuple[ActionChoice, ...] = (), valid: bool = False,
              test: bool = False, checkpoint_every: int = 0,
              arch_params: dict[str, Any] | None = None, cache: str = "auto",
              seed: int = 7, architecture: ArchitectureSpec | None = None,
              keep: int = 3, tensorboard: bool = False) -> Path:
    """Write ``run_dir/spec.json`` for a tiny U-Net on the demo data in ``data``."""
    modules = (ModuleChoice(name="train_strategy_def", actions=plugins),) if plugins else ()
    spec = TrainingSpec(
        source=run_dir / "config.xml", task="imaging_segmentation", parallelism_degree=ranks,
        architecture=architecture or ArchitectureSpec(
            name="unet", params={"depth": 3, "base_filters": 4, **(arch_params or {})}),
        data=DataSpec(train=data / "train", valid=data / "valid" if valid else None,
                      test=data / "test" if test else None, classes=CLASSES,
                      cache=DataCache(cache)),
        hyperparameters=Hyperparameters(lr=lr, optimizer=optimizer, loss="dice_crossentropy",
                                        minibatch_size=batch, start_epoch=0, end_epoch=epochs,
                                        momentum=momentum),
        generator=modules,
        lr_policy=LRPolicySpec(name=LRPolicyName(policy)),
        deployment=DeploymentSpec(threads_per_rank=1),
        reproducibility=ReproducibilitySpec(seed=seed),
        monitoring=MonitoringSpec(tensorboard=tensorboard, checkpoint_every=checkpoint_every,
                                  keep_checkpoints=keep))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "spec.json").write_text(json.dumps(spec_to_dict(spec), indent=1))
    return run_dir


def launch(run_dir: Path, ranks: int, *extra: str, timeout: float = 120,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the real worker on ``ranks`` MPI ranks (what the launcher does); ``env`` adds to
    the ranks' environment."""
    env = dict(os.environ, AUTOCNNP_INTRA_OP_THREADS="1", AUTOCNNP_INTER_OP_THREADS="1",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               **(env or {}))
    cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", str(ranks),
           sys.executable, "-m", "autocnnp.run_manage.worker", str(run_dir), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=str(REPO))


def torch_launch(run_dir: Path, ranks: int, *extra: str) -> subprocess.CompletedProcess:
    """:func:`launch` for the torch engine: the rendezvous address the plan sets in real jobs
    (the tests start mpirun themselves)."""
    from autocnnp.engine.plan import torch_master_port

    return launch(run_dir, ranks, *extra, timeout=300,
                  env={"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(torch_master_port(run_dir))})


def plugin(action_type: str, path: Path, class_name: str, mode: str = "extend",
           implementation: str | None = None, **params: Any) -> ActionChoice:
    return ActionChoice(type=action_type, implementation=implementation, plugin_path=path,
                        plugin_class=class_name, mode=mode,
                        params={k: str(v) for k, v in params.items()})
