"""Fixtures of the docker tests: a running dockerd, a one-node swarm, the CPU image and the
torch image built on it.

They skip only when the docker CLI is missing altogether; anything else that is wrong
(dockerd does not start, the image does not build) fails the tests, with the reason.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
IMAGE = "autocnnp:cpu"
TORCH_IMAGE = "autocnnp:cpu-torch"


@pytest.fixture(scope="session")
def swarm():
    """dockerd running and this machine a swarm manager (.ci/docker.sh does both)."""
    if shutil.which("docker") is None:
        pytest.skip("the docker CLI is not installed")
    proc = subprocess.run(["bash", str(REPO / ".ci" / "docker.sh")], capture_output=True, text=True,
                          timeout=180)
    if proc.returncode != 0:
        pytest.fail(f".ci/docker.sh failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    import docker

    client = docker.from_env(timeout=600)
    yield client
    client.close()


@pytest.fixture(scope="session")
def cpu_image(swarm):
    """The CPU image, built (or brought up to date) with `autocnnp image build`."""
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "autocnnp", "image", "build", "--tag", IMAGE],
                          cwd=REPO, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        pytest.fail(f"autocnnp image build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    print(f"\nimage build: {time.monotonic() - started:.0f} s; {proc.stdout.strip().splitlines()[-1]}")
    return IMAGE


@pytest.fixture(scope="session")
def torch_image(cpu_image):
    """The torch engine's image, built with `autocnnp image build --torch` from the project's
    files: the CPU image (up to date after cpu_image) plus the pinned CPU torch."""
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "autocnnp", "image", "build", "--torch"],
                          cwd=REPO, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        pytest.fail(f"autocnnp image build --torch failed:\n{proc.stdout[-4000:]}\n"
                    f"{proc.stderr[-4000:]}")
    print(f"\ntorch image build: {time.monotonic() - started:.0f} s; "
          f"{proc.stdout.strip().splitlines()[-1]}")
    return TORCH_IMAGE


@pytest.fixture
def job_dir(tmp_path_factory):
    """A directory holding the small swarm config and its plugin; data is built on first use."""
    root = tmp_path_factory.mktemp("swarm-job")
    shutil.copy2(HERE / "swarm_small.xml", root / "swarm_small.xml")
    shutil.copy2(HERE / "weights_probe.py", root / "weights_probe.py")
    shutil.copy2(HERE / "weights_probe_torch.py", root / "weights_probe_torch.py")
    return root
