"""The hosts backend over real ssh: two hosts in network namespaces running sshd
(scripts/ssh-hosts.sh), ranks started on them by mpirun with the job's own key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.mpi, pytest.mark.ssh]

HOSTS_DEPLOYMENT = ('<deployment backend="hosts"><property name="hosts">{hosts}</property>'
                    '<property name="threads_per_rank">1</property></deployment>')


def hosts_config(small_config, hosts: str, epochs: int) -> Path:
    config = small_config(ranks=2, epochs=epochs)
    config.write_text(config.read_text().replace(
        '<deployment backend="local"><property name="threads_per_rank">1</property></deployment>',
        HOSTS_DEPLOYMENT.format(hosts=hosts)))
    return config


def run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autocnnp", *args], capture_output=True,
                          text=True, env=dict(os.environ), timeout=timeout)


def job_keys_left() -> list[str]:
    keys = Path.home() / ".ssh" / "authorized_keys"
    if not keys.exists():
        return []
    return [line for line in keys.read_text().splitlines() if "autocnnp-job-" in line]


def accepted_fingerprints(folder: Path) -> set[str]:
    """Fingerprints of the keys the hosts' sshd accepted."""
    found = set()
    for log in folder.glob("acnp-h*/sshd.log"):
        for line in log.read_text().splitlines():
            if "Accepted publickey" in line:
                found.add(line.rsplit(" ", 1)[-1])
    return found


def fingerprint(public_key: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", str(public_key)], capture_output=True, text=True)
    return out.stdout.split()[1]


def test_two_rank_job_trains_across_two_ssh_hosts_with_its_own_key(ssh_hosts, small_config):
    config = hosts_config(small_config, "acnp-h1:1,acnp-h2:1", epochs=2)
    result = run("run", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1].removeprefix("run directory: "))
    assert "epoch 2/2" in result.stdout and "Test metrics" in result.stdout
    # each rank ran on its own host (the hosts have their own hostname)
    assert "rank 0/2" in (run_dir / "logs" / "rank-0.log").read_text()
    logs = [(run_dir / "logs" / f"rank-{r}.log").read_text() for r in (0, 1)]
    assert "acnp-h1" in logs[0] and "acnp-h2" in logs[1], logs
    # mpirun reached the hosts with a key that is not the administrator's, and it is gone
    admin = fingerprint(ssh_hosts / "admin_key.pub")
    assert accepted_fingerprints(ssh_hosts) - {admin}, "no login with the job's own key"
    assert job_keys_left() == []
    assert not (run_dir / ".ssh-job").exists()
    assert json.loads((run_dir / "plan.json").read_text())["backend"] == "hosts"


def test_an_unreachable_host_is_refused_before_anything_starts(ssh_hosts, small_config, tmp_path):
    config = hosts_config(small_config, "acnp-h1:1,acnp-h9:1", epochs=1)
    result = run("run", str(config), timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "cannot reach 1 of 2 host(s) over ssh: host acnp-h9:" in result.stderr
    assert "`ssh HOST true` works without a password" in result.stderr
    assert not list((tmp_path / "runs").glob("small-*")), "a refused run leaves no run directory"
    assert job_keys_left() == []


def test_killing_one_hosts_rank_fails_fast_naming_the_host(ssh_hosts, small_config, tmp_path):
    config = hosts_config(small_config, "acnp-h1:1,acnp-h2:1", epochs=40)
    proc = subprocess.Popen([sys.executable, "-m", "autocnnp", "run", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    victim = None
    while victim is None and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for candidate in psutil.process_iter(["cmdline"]):
            cmd = candidate.info["cmdline"] or []
            if "autocnnp.run_manage.worker" in cmd and str(tmp_path / "runs") in " ".join(cmd):
                try:
                    if candidate.environ().get("OMPI_COMM_WORLD_RANK") == "1":
                        victim = candidate
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
        time.sleep(0.5)
    assert victim is not None, "rank 1 never started"
    run_dir = next((tmp_path / "runs").glob("small-*"))
    while time.monotonic() < deadline and not (run_dir / "metrics" / "epochs.jsonl").exists():
        time.sleep(0.5)
    killed = time.monotonic()
    victim.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    assert time.monotonic() - killed < 30
    assert "rank 1" in err and "acnp-h2" in err and "killed by signal 9" in err, err
    assert job_keys_left() == []


TORCH_GENERATOR = ('<CNN-Parallelism-Generator><module name="train_strategy_def"><action '
                   'class="extensible" type="dist_strategy"><value>torch_ddp</value></action>'
                   '</module></CNN-Parallelism-Generator>\n    <data format="pairs">')


def test_the_torch_engine_trains_across_two_ssh_hosts(ssh_hosts, small_config):
    """Issue 12 on the hosts backend across machines: mpirun starts the torch ranks over ssh,
    rank 1 (on acnp-h2) reaches the Gloo rendezvous on rank 0's host acnp-h1 by name, the
    weights end identical (the weight guard would stop the job otherwise) and no key is left."""
    config = hosts_config(small_config, "acnp-h1:1,acnp-h2:1", epochs=2)
    config.write_text(config.read_text().replace('<data format="pairs">', TORCH_GENERATOR))
    result = run("run", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1].removeprefix("run directory: "))
    assert "epoch 2/2" in result.stdout and "Test metrics" in result.stdout
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["engine"] == "torch" and dict(plan["env"])["MASTER_ADDR"] == "acnp-h1"
    logs = [(run_dir / "logs" / f"rank-{r}.log").read_text() for r in (0, 1)]
    assert "acnp-h1" in logs[0] and "acnp-h2" in logs[1], logs
    assert job_keys_left() == []
