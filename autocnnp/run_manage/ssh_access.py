"""ssh for the hosts backend: reach every host before a job starts, and give each job its own
key, installed on the hosts for the job and removed after it.

The user's own ssh access (their keys, agent and ``~/.ssh/config``, or the ssh_config file
named by ``AUTOCNNP_SSH_CONFIG``) is used for two things only: the pre-flight ``ssh HOST true``
and installing/removing the job's public key in the hosts' ``~/.ssh/authorized_keys``. mpirun
starts its daemons with the job's key (``OMPI_MCA_plm_rsh_agent``), so what the job can do on
the hosts ends with it. The key pair lives in ``RUN_DIR/.ssh-job/`` (mode 0700) while the job
runs and is deleted after it, whatever the outcome. A launcher killed by SIGKILL cannot remove
it: the line carries the comment ``autocnnp-job-<run>``, which the next job on the same run
directory (``--resume``) removes first.

Open MPI picks its TCP interfaces itself; on hosts with several networks (docker bridges,
management networks) it may pick one the other hosts cannot reach. The job's network is the
one this machine uses to reach the first remote host (``ip route get``), given to Open MPI as a
CIDR, unless ``OMPI_MCA_oob_tcp_if_include`` / ``OMPI_MCA_btl_tcp_if_include`` are set.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from autocnnp.errors import EnvironmentProblemError

#: an ssh_config file for the hosts (the test hosts of scripts/ssh-hosts.sh print theirs)
SSH_CONFIG_ENV = "AUTOCNNP_SSH_CONFIG"
#: the key that already reaches the hosts, when it is not one ssh finds by itself
SSH_IDENTITY_ENV = "AUTOCNNP_SSH_IDENTITY"
KEY_DIR = ".ssh-job"
CONNECT_TIMEOUT_S = 5


def is_this_machine(host: str) -> bool:
    """Whether ``host`` names this machine (no ssh needed to start ranks there)."""
    return host in ("localhost", "127.0.0.1", "::1", socket.gethostname(),
                    socket.gethostname().split(".")[0])


def ssh_options(identity: Path | None = None) -> list[str]:
    """``ssh`` and its options without prompts (batch mode, a short connect timeout), through
    the ssh_config of ``AUTOCNNP_SSH_CONFIG`` when set; with the user's access (their keys, or
    ``AUTOCNNP_SSH_IDENTITY``), or with ``identity`` alone when given (the job's key)."""
    command = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}"]
    config = os.environ.get(SSH_CONFIG_ENV)
    if config:
        command += ["-F", config]
    if identity is None and os.environ.get(SSH_IDENTITY_ENV):
        command += ["-i", os.environ[SSH_IDENTITY_ENV]]
    if identity is not None:
        command += ["-i", str(identity), "-o", "IdentitiesOnly=yes"]
    return command


def ssh_command(host: str, *remote: str) -> list[str]:
    """:func:`ssh_options` (the user's access) to ``host``, running ``remote``."""
    return ssh_options() + [host, *remote]


def _run(command: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, input=stdin, capture_output=True, text=True,
                          timeout=CONNECT_TIMEOUT_S + 25)


def _each(hosts: list[str], work) -> dict[str, subprocess.CompletedProcess | Exception]:
    """``work(host)`` on every host at once; what each returned or raised."""
    def guarded(host: str) -> subprocess.CompletedProcess | Exception:
        try:
            return work(host)
        except (OSError, subprocess.SubprocessError) as exc:
            return exc
    with ThreadPoolExecutor(max_workers=max(len(hosts), 1)) as pool:
        return dict(zip(hosts, pool.map(guarded, hosts)))


def _why(result: subprocess.CompletedProcess | Exception) -> str | None:
    """None when ``result`` succeeded, else ssh's own last words."""
    if isinstance(result, subprocess.TimeoutExpired):
        return "no answer in time"
    if isinstance(result, Exception):
        return str(result)
    if result.returncode == 0:
        return None
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"ssh exited with code {result.returncode}"


def check_hosts(hosts: list[str]) -> None:
    """Pre-flight: every remote host answers ``ssh HOST true``; otherwise an
    EnvironmentProblemError that names each host that did not and why."""
    if not hosts:
        return
    if shutil.which("ssh") is None:
        raise EnvironmentProblemError("ssh not found on PATH: the hosts backend starts ranks over ssh",
                                      remedy="install the ssh client (apt-get install openssh-client)")
    results = _each(hosts, lambda host: _run(ssh_command(host, "true")))
    failed = {host: why for host, result in results.items() if (why := _why(result))}
    if failed:
        lines = "; ".join(f"host {host}: {why}" for host, why in failed.items())
        raise EnvironmentProblemError(
            f"cannot reach {len(failed)} of {len(hosts)} host(s) over ssh: {lines}",
            remedy="check that each host is up and that `ssh HOST true` works without a password "
                   f"(keys or agent; an ssh_config can be given in {SSH_CONFIG_ENV})")


def job_network(host: str) -> str | None:
    """The network (CIDR) this machine reaches ``host`` on, or None when unknown."""
    resolved = _run(ssh_options() + ["-G", host])
    name = host
    for line in resolved.stdout.splitlines():
        if line.startswith("hostname "):
            name = line.split(None, 1)[1]
    try:
        address = socket.gethostbyname(name)
        route = _run(["ip", "-o", "route", "get", address]).stdout.split()
        device = route[route.index("dev") + 1]
        shown = _run(["ip", "-o", "-4", "addr", "show", "dev", device]).stdout.split()
        return str(ipaddress.ip_interface(shown[shown.index("inet") + 1]).network)
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def _tag(run_dir: Path) -> str:
    return f"autocnnp-job-{run_dir.name}"


def _remove_key(hosts: list[str], tag: str) -> dict[str, str]:
    """Remove every authorized_keys line ending in ``tag`` on ``hosts``; the hosts where it failed."""
    script = (f"f=~/.ssh/authorized_keys; [ -f \"$f\" ] || exit 0; "
              f"grep -v ' {tag}$' \"$f\" > \"$f.$$\" || true; cat \"$f.$$\" > \"$f\"; "
              f"rm -f \"$f.$$\"")
    # one host after the other: hosts that share a home directory share the file
    failed = {}
    for host in hosts:
        try:
            why = _why(_run(ssh_command(host, script)))
        except (OSError, subprocess.SubprocessError) as exc:
            why = str(exc)
        if why:
            failed[host] = why
    return failed


@contextmanager
def job_key(run_dir: Path, hosts: list[str]) -> Iterator[dict[str, str]]:
    """A key pair for this job, authorised on ``hosts`` while the ``with`` block runs; yields
    the environment that makes mpirun use it (and the job's network, see the module docs).
    The key is removed from the hosts and deleted here afterwards, whatever happened."""
    if not hosts:  # every rank on this machine: no ssh at all
        yield {}
        return
    tag = _tag(run_dir)
    folder = run_dir / KEY_DIR
    shutil.rmtree(folder, ignore_errors=True)
    _remove_key(hosts, tag)  # left by a launcher that was killed before it could clean up
    folder.mkdir(mode=0o700)
    key = folder / "id_ed25519"
    made = _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", tag, "-f", str(key)])
    if made.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise EnvironmentProblemError(f"ssh-keygen could not make the job's key: {_why(made)}",
                                      remedy="install openssh-client (apt-get install openssh-client)")
    public = key.with_suffix(".pub").read_text()
    install = "umask 077; mkdir -p ~/.ssh; cat >> ~/.ssh/authorized_keys"
    try:
        results = _each(hosts, lambda host: _run(ssh_command(host, install), stdin=public))
        failed = {host: why for host, result in results.items() if (why := _why(result))}
        if failed:
            lines = "; ".join(f"host {host}: {why}" for host, why in failed.items())
            raise EnvironmentProblemError(f"could not install the job's ssh key: {lines}",
                                          remedy="check that ~/.ssh/authorized_keys is writable on those hosts")
        env = {"OMPI_MCA_plm_rsh_agent": " ".join(ssh_options(identity=key))}
        if hosts and not ("OMPI_MCA_oob_tcp_if_include" in os.environ
                          or "OMPI_MCA_btl_tcp_if_include" in os.environ):
            network = job_network(hosts[0])
            if network:
                env["OMPI_MCA_oob_tcp_if_include"] = network
                env["OMPI_MCA_btl_tcp_if_include"] = network
        yield env
    finally:
        _remove_key(hosts, tag)
        shutil.rmtree(folder, ignore_errors=True)
