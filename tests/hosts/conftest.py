"""Fixtures of the ssh hosts tests: two real hosts (network and UTS namespaces, each running
its own sshd) started with ``scripts/ssh-hosts.sh up`` for the session and removed with
``down`` at its end, even when tests fail. They need root and ``ip netns``; a cluster that does
not come up fails the tests with the script's output."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "ssh-hosts.sh"
FOLDER = Path("/tmp/autocnnp-ssh-hosts-test")


@pytest.fixture(scope="session")
def ssh_hosts():
    """The folder of the running hosts acnp-h1 and acnp-h2 (ssh_config, admin_key, sshd logs);
    AUTOCNNP_SSH_CONFIG and AUTOCNNP_SSH_IDENTITY point at them while the tests run."""
    env = dict(os.environ, AUTOCNNP_SSH_HOSTS_DIR=str(FOLDER))
    proc = subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True, env=env,
                          timeout=300)
    try:
        if proc.returncode != 0:
            pytest.fail(f"ssh-hosts.sh up failed:\n{proc.stdout}\n{proc.stderr}")
        saved = {k: os.environ.get(k) for k in ("AUTOCNNP_SSH_CONFIG", "AUTOCNNP_SSH_IDENTITY")}
        os.environ["AUTOCNNP_SSH_CONFIG"] = str(FOLDER / "ssh_config")
        os.environ["AUTOCNNP_SSH_IDENTITY"] = str(FOLDER / "admin_key")
        try:
            yield FOLDER
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    finally:
        subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True, timeout=120)
