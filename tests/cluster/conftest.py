"""Fixtures of the cluster tests: three Docker nodes in network namespaces, one swarm.

``scripts/test-cluster.sh up`` makes the nodes (acnp-n1 manager, acnp-n2 and acnp-n3 workers
with 2 generic ``gpu`` resources each) once per session; ``down`` removes everything it made when
the session ends, failed tests or not. The job's image is built on this machine's own dockerd
(``autocnnp image build``, as for the docker tier) and copied to the manager only: the first
job's pre-flight delivers it to the workers. They skip only when the docker CLI or ``ip`` is
missing; anything else that is wrong fails the tests, with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
IMAGE = "autocnnp:cpu"
CLUSTER_DIR = Path(os.environ.get("AUTOCNNP_CLUSTER_DIR", "/tmp/autocnnp-cluster"))
NODES = ("acnp-n1", "acnp-n2", "acnp-n3")
MANAGER = "acnp-n1"
#: each node's daemon over TCP on its namespace address (test-cluster.sh listens there)
NODE_DOCKER = "tcp://{addr}:2375"


class Cluster:
    """The running test cluster: its folder, its nodes' clients, the env that targets it."""

    def __init__(self, root: Path) -> None:
        import docker

        self.root = root
        self.shared = root / "shared"
        self.clients = {n: docker.DockerClient(base_url=f"unix://{root / n / 'docker.sock'}",
                                               timeout=600) for n in NODES}
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{root / MANAGER / 'docker.sock'}",
                    "PYTHONPATH": str(REPO)}

    @property
    def manager(self):
        return self.clients[MANAGER]

    def alive(self) -> dict:
        """The clients of the nodes whose daemon still answers."""
        up = {}
        for name, client in self.clients.items():
            try:
                client.ping()
                up[name] = client
            except Exception:
                pass
        return up

    def script(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        proc = subprocess.run(["bash", str(REPO / "scripts" / "test-cluster.sh"), *args],
                              capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "AUTOCNNP_CLUSTER_DIR": str(self.root)})
        if proc.returncode != 0:
            pytest.fail(f"test-cluster.sh {' '.join(args)} failed ({proc.returncode}):\n"
                        f"{proc.stdout}\n{proc.stderr}")
        return proc


@pytest.fixture(scope="session")
def cluster():
    for tool in ("docker", "dockerd", "ip", "iptables"):
        if shutil.which(tool) is None:
            # scripts/test.sh installs them (test-cluster.sh install): missing is a broken setup
            pytest.fail(f"{tool} is not installed: run bash scripts/test-cluster.sh install "
                        f"(docker.io iproute2 iptables), or deselect with -m 'not cluster'")
    began = time.monotonic()
    up = subprocess.run(["bash", str(REPO / "scripts" / "test-cluster.sh"), "up"],
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, "AUTOCNNP_CLUSTER_DIR": str(CLUSTER_DIR)})
    try:
        if up.returncode != 0:
            pytest.fail(f"test-cluster.sh up failed ({up.returncode}):\n{up.stdout}\n{up.stderr}")
        print(f"\ncluster up: {time.monotonic() - began:.0f} s\n{up.stdout}")
        cluster = Cluster(CLUSTER_DIR)
        yield cluster
        for client in cluster.clients.values():
            client.close()
    finally:
        down = subprocess.run(["bash", str(REPO / "scripts" / "test-cluster.sh"), "down"],
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "AUTOCNNP_CLUSTER_DIR": str(CLUSTER_DIR)})
        print(f"cluster down ({down.returncode}): {down.stdout}{down.stderr}")


@pytest.fixture(scope="session")
def cluster_image(cluster):
    """The CPU image, built on this machine's dockerd and copied to the manager only."""
    from autocnnp.run_manage.swarm.images import deliver

    ready = subprocess.run(["bash", str(REPO / ".ci" / "docker.sh")], capture_output=True,
                           text=True, timeout=180)
    if ready.returncode != 0:
        pytest.fail(f".ci/docker.sh failed ({ready.returncode}):\n{ready.stdout}\n{ready.stderr}")
    started = time.monotonic()
    build = subprocess.run([sys.executable, "-m", "autocnnp", "image", "build", "--tag", IMAGE],
                           cwd=REPO, capture_output=True, text=True, timeout=3600,
                           env={k: v for k, v in cluster.env.items() if k != "DOCKER_HOST"})
    if build.returncode != 0:
        pytest.fail(f"autocnnp image build failed:\n{build.stdout[-4000:]}\n{build.stderr[-4000:]}")
    print(f"\nimage build: {time.monotonic() - started:.0f} s; {build.stdout.strip().splitlines()[-1]}")
    import docker

    host = docker.DockerClient(base_url="unix:///var/run/docker.sock", timeout=600)
    try:
        done = deliver(host, IMAGE, {MANAGER: cluster.manager})
    finally:
        host.close()
    assert done.failed == {}, done.failed
    print(f"image to the manager: {done.seconds:.0f} s, {done.bytes / 1e9:.2f} GB")
    return IMAGE


@pytest.fixture
def job_dir(cluster, request):
    """A folder on the shared volume with the cluster job's config and plugin."""
    root = cluster.shared / request.node.name[:40]
    root.mkdir(parents=True)
    text = (HERE / "cluster_job.xml").read_text()
    text = text.replace("SHARED", str(cluster.shared)).replace("NODE_DOCKER", NODE_DOCKER)
    (root / "cluster_job.xml").write_text(text)
    shutil.copy2(REPO / "tests" / "docker" / "weights_probe.py", root / "weights_probe.py")
    return root
