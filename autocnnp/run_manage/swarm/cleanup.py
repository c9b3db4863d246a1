"""Swarm cleanup: remove every service, network, secret and config a job created.

Everything a job creates carries the label ``autocnnp.job=<job>``; cleanup removes by that
label, so it also finds what a crashed launcher left, and it runs on success, on failure, on
Ctrl-C and from ``autocnnp stop`` in another process.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from autocnnp.engine.plan_swarm import JOB_LABEL
from autocnnp.errors import AutocnnpError, EnvironmentProblemError
from autocnnp.run_manage.docker_api import docker_errors, explain
from autocnnp.run_manage.swarm.session import SwarmSession


class Cleanup(SwarmSession):
    """Removal of what a swarm job created, by its label."""

    def cleanup(self, job_id: str, *, quiet: bool = False, timeout_s: float = 60) -> list[str]:
        """Remove every service, network, secret and config labelled with ``job_id``; returns
        what was removed. What could not be removed is tried to the end and then reported in
        one EnvironmentProblemError."""
        removed, problems = self._cleanup(job_id, quiet=quiet, timeout_s=timeout_s)
        if problems:
            raise self._cleanup_error(job_id, problems)
        return removed

    @staticmethod
    def _cleanup_error(job_id: str, problems: list[str], run_dir: Path | None = None
                       ) -> EnvironmentProblemError:
        again = f"autocnnp stop {run_dir}" if run_dir else "autocnnp stop RUN_DIR"
        return EnvironmentProblemError(
            f"could not remove everything swarm job {job_id} created: " + "; ".join(problems),
            remedy=f"run `{again}` again, or remove them by hand: docker service ls / "
                   f"docker network ls / docker secret ls --filter label={JOB_LABEL}={job_id}")

    def _cleanup(self, job_id: str, *, quiet: bool = False, timeout_s: float = 60,
                 node_docker: str | None = None, skip_nodes: set[str] | frozenset = frozenset()
                 ) -> tuple[list[str], list[str]]:
        """(removed, problems): removes all it can, never raises for a docker error."""
        began = time.monotonic()
        label = {"label": f"{JOB_LABEL}={job_id}"}
        removed: list[str] = []
        problems: list[str] = []
        try:
            client = self.client
            import docker.errors
            failures = docker_errors()
        except AutocnnpError as exc:       # no daemon, no SDK: nothing can be removed
            return removed, [exc.message]

        def listed(kind: str, collection: Any, **kw: Any) -> list:
            try:
                return collection.list(filters=label, **kw)
            except failures as exc:
                problems.append(f"cannot list the job's {kind}s ({explain(exc)})")
                return []

        def remove(kind: str, item: Any) -> None:
            try:
                item.remove()
                removed.append(f"{kind} {item.name}")
            except docker.errors.NotFound:
                pass
            except failures as exc:
                problems.append(f"{kind} {item.name} ({explain(exc)})")

        services = listed("service", client.services)
        for container in listed("container", client.containers):
            try:  # this node's tasks: no stop grace period, the job is over
                container.kill()
            except failures:
                pass
        for svc in services:
            remove("service", svc)
        # The swarm agent removes the containers of removed services asynchronously, and on
        # Docker 20.10 sometimes not at all (exited and never-started task containers stay);
        # the network is in use until they are gone, so remove this node's ones ourselves.
        deadline = time.monotonic() + timeout_s
        left: list = []
        while time.monotonic() < deadline:
            try:
                left = client.containers.list(all=True, filters=label)
            except failures as exc:
                problems.append(f"cannot list the job's containers ({explain(exc)})")
                left = []
                break
            if not left:
                break
            for container in left:
                try:
                    container.remove(force=True)
                except failures:
                    pass  # gone already, or "removal already in progress"
            time.sleep(0.5)
        for container in left:
            problems.append(f"container {container.name} (still there after {timeout_s:.0f} s)")
        for kind, collection in (("secret", client.secrets), ("config", client.configs)):
            for item in listed(kind, collection):
                remove(kind, item)
        for net in listed("network", client.networks):
            while True:
                try:
                    net.remove()
                    removed.append(f"network {net.name}")
                    break
                except docker.errors.NotFound:
                    break
                except failures as exc:   # in use until the containers are gone
                    if time.monotonic() > deadline:
                        problems.append(f"network {net.name} ({explain(exc)})")
                        break
                    time.sleep(0.5)
        if node_docker:
            self._cleanup_nodes(job_id, node_docker, deadline, problems, skip_nodes)
        if removed and not quiet:
            self.say(f"removed {', '.join(removed)} ({time.monotonic() - began:.1f} s)")
        return removed, problems

    def _cleanup_nodes(self, job_id: str, node_docker: str, deadline: float,
                       problems: list[str], skip_nodes: set[str] | frozenset = frozenset()) -> None:
        """The job's containers on the other nodes, through their own daemons: the swarm agent
        of a node removes a removed service's containers late, and on Docker 20.10 sometimes
        never. Then the node's copy of the job's network, which its agent drops a moment after
        the last container, is waited for. A node that is not ready (dead, drained away) or that
        the job found dead (``skip_nodes``) is not asked."""
        from autocnnp.run_manage.swarm.images import node_client

        failures = docker_errors()
        label = {"label": f"{JOB_LABEL}={job_id}"}
        try:
            nodes = [n for n in self.nodes() if not n.is_self and n.ready
                     and n.name not in skip_nodes]
        except AutocnnpError as exc:
            problems.append(exc.message)
            return

        def force_remove(container: Any) -> None:
            try:
                container.remove(force=True)
            except failures:
                pass

        for node in nodes:
            try:
                client = node_client(node_docker, node, timeout_s=30)
            except AutocnnpError as exc:
                problems.append(exc.message)
                continue
            try:
                containers = _until_gone(lambda: client.containers.list(all=True, filters=label),
                                         deadline, force_remove)
                networks = _until_gone(lambda: client.networks.list(filters=label), deadline)
                problems += [f"container {c.name} on node {node.name} (still there)"
                             for c in containers]
                problems += [f"network {n.name} on node {node.name} (still there)"
                             for n in networks]
            except failures as exc:
                problems.append(f"cannot list the job's containers on node {node.name} "
                                f"({explain(exc)})")
            finally:
                client.close()


def _until_gone(listing: Callable[[], list], deadline: float,
                act: Callable[[Any], None] = lambda _: None) -> list:
    """Call ``listing`` every 0.5 s, applying ``act`` to each item found, until it returns
    nothing or ``deadline`` passes; returns what was still listed then."""
    while left := listing():
        if time.monotonic() > deadline:
            return left
        for item in left:
            act(item)
        time.sleep(0.5)
    return []
