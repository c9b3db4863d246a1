"""Fixtures of the Slurm tests: a real one-node Slurm (munge, slurmctld, slurmd) started with
``scripts/slurm-local.sh up`` for the session and stopped with ``down`` at its end, even when
tests fail. They skip only when Debian's slurm-wlm is not installed at all (``scripts/test.sh``
installs it); a Slurm that does not come up fails the tests, with its logs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "slurm-local.sh"


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """The SLURM_CONF of a running one-node Slurm (partitions debug and long)."""
    if shutil.which("slurmctld") is None or shutil.which("sbatch") is None:
        pytest.skip("Slurm is not installed (bash scripts/slurm-local.sh install)")
    # one Slurm per machine (fixed ports, the node is this host): reuse one a user started
    folder = Path(os.environ.get("AUTOCNNP_SLURM_DIR", "/tmp/autocnnp-slurm"))
    env = dict(os.environ, AUTOCNNP_SLURM_DIR=str(folder))
    ours = not (folder / "slurm.conf").exists()
    proc = subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True, env=env,
                          timeout=180)
    if proc.returncode != 0:
        if ours:
            subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True,
                           timeout=120)
        pytest.fail(f"slurm-local.sh up failed:\n{proc.stdout}\n{proc.stderr}")
    conf = folder / "slurm.conf"
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    try:
        yield conf
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        if ours:
            subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True,
                           timeout=120)
            assert not folder.exists()
