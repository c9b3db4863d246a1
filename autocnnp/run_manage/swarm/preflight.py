"""Swarm pre-flight: everything checked before anything is created.

The swarm is active here (``init`` makes a one-node one), the nodes have the ranks' GPUs (the
plan is laid out on them, or refused with what is missing), the image is on the nodes (with
``node_docker``, compared by id on each node's daemon and delivered where it lacks, see
:mod:`.images`; without, a one-task probe job on each remote node), the run directory, data
and named network exist.
"""

from __future__ import annotations

import time
from pathlib import Path

from autocnnp.engine import rundir
from autocnnp.engine.plan_swarm import (GPU_RESOURCE_KIND, JOB_LABEL, NodeInfo, SwarmPlan,
                                        build_swarm_plan, check_placement)
from autocnnp.engine.spec import TrainingSpec
from autocnnp.engine.vocabulary import TORCH_CPU_IMAGE
from autocnnp.errors import EnvironmentProblemError
from autocnnp.run_manage.docker_api import docker_call
from autocnnp.run_manage.swarm.session import FAILED, NODE_GRACE_S, POLL_S, SwarmSession


class Preflight(SwarmSession):
    """The checks :meth:`preflight` runs, and the swarm's nodes as planning sees them."""

    def ensure_swarm(self) -> dict:
        """The swarm this daemon manages; with ``init``, a one-node swarm is made when absent."""
        state = self.swarm_state()
        if state.get("LocalNodeState") != "active":
            if not self.init:
                raise EnvironmentProblemError(
                    "this Docker daemon is not part of a swarm",
                    remedy="run on a swarm manager, or make a one-node swarm here with "
                           "`docker swarm init --advertise-addr 127.0.0.1` (autocnnp run --init)")
            self.say("making a one-node swarm: docker swarm init --advertise-addr 127.0.0.1")
            with docker_call("cannot make a one-node swarm (docker swarm init)",
                         remedy="run `docker swarm init --advertise-addr 127.0.0.1` yourself and "
                                "read its error, or join this node to a swarm"):
                self.client.swarm.init(advertise_addr="127.0.0.1")
            state = self.swarm_state()
        if not state.get("ControlAvailable"):
            raise EnvironmentProblemError(
                "this node is a swarm worker; services can only be created on a manager",
                remedy="run autocnnp on a manager node (docker node ls shows them)")
        return state

    def preflight(self, plan: SwarmPlan, spec: TrainingSpec | None = None) -> tuple[SwarmPlan, list[NodeInfo]]:
        """Check everything before anything is created; returns the plan laid out on the nodes."""
        self.ensure_swarm()
        nodes = self.nodes(plan.gpu_resource_kind)
        if plan.node_docker:
            nodes = self._answering(nodes, plan.node_docker, plan.gpu_resource_kind)
        if spec is not None and plan.placement != "nodes":
            plan = build_swarm_plan(spec, plan.run_dir, plan.job_id, nodes, resume=plan.resume,
                                    gpu_resource_kind=plan.gpu_resource_kind)
        check_placement(plan, nodes)
        run_dir = plan.run_dir
        if not (run_dir / rundir.SPEC_FILE).exists():
            raise EnvironmentProblemError(f"{run_dir} has no {rundir.SPEC_FILE}: not a prepared run "
                                          f"directory")
        for svc in plan.rank_services:
            for mount in svc.mounts:
                if mount.type == "bind" and not Path(mount.source).exists():
                    raise EnvironmentProblemError(
                        f"{mount.source} (mounted into the ranks) does not exist on this node",
                        remedy="fix the data paths of the config, or mount the shared volume here")
        self._check_network(plan)
        self._check_image(plan, nodes)
        return plan, nodes

    def _answering(self, nodes: list[NodeInfo], template: str, kind: str) -> list[NodeInfo]:
        """``nodes`` once those whose own daemon does not answer are settled: a node that just
        died still reads ready in the swarm for about 16 s, so wait up to NODE_GRACE_S for the
        manager to mark them down (then the layout leaves them out). One still ready then is
        kept, and the image check refuses it with the reason (a wrong node_docker, a firewall)."""
        from autocnnp.run_manage.swarm.images import node_client

        silent = []
        for node in nodes:
            if node.ready and not node.is_self:
                try:
                    node_client(template, node, timeout_s=5).close()
                except EnvironmentProblemError:
                    silent.append(node.name)
        if not silent:
            return nodes
        silent.sort()
        self.say(f"node(s) {', '.join(silent)} do not answer at {template}; waiting up to "
                 f"{NODE_GRACE_S} s for the swarm to mark them down")
        deadline = time.monotonic() + NODE_GRACE_S
        while time.monotonic() < deadline:
            time.sleep(POLL_S)
            nodes = self.nodes(kind)
            if not any(n.ready for n in nodes if n.name in silent):
                self.say(f"node(s) {', '.join(silent)} down: left out of the plan")
                break
        return nodes

    def _check_network(self, plan: SwarmPlan) -> None:
        """A network the config names must exist and be usable by services."""
        import docker.errors

        net = plan.network
        if not net.external:
            return
        drop = "or remove the network property of <deployment> so autocnnp makes one per job"
        create = f"create it: docker network create --driver overlay --attachable {net.name}; {drop}"
        try:
            with docker_call(f"cannot look up network {net.name} (the network property of "
                         f"<deployment>)"):
                found = self.client.networks.get(net.name)
        except EnvironmentProblemError as exc:
            if isinstance(exc.__cause__, docker.errors.NotFound):
                raise EnvironmentProblemError(
                    f"network {net.name} (the network property of <deployment>) does not exist "
                    f"on this swarm", remedy=create) from None
            raise
        scope = (found.attrs or {}).get("Scope")
        if scope and scope != "swarm":
            raise EnvironmentProblemError(
                f"network {net.name} (the network property of <deployment>) is a {scope} "
                f"network ({(found.attrs or {}).get('Driver', '?')} driver); swarm services "
                f"can only join swarm-scoped networks",
                remedy=f"name an overlay network (docker network ls --filter scope=swarm); {drop}")

    def _check_image(self, plan: SwarmPlan, nodes: list[NodeInfo]) -> None:
        import docker.errors

        by_name = {n.name: n for n in nodes}
        here = next((n for n in nodes if n.is_self), None)
        targets = set(plan.nodes) or ({here.name} if here else set())
        remote = sorted(t for t in targets if not (here and t == here.name))
        if here is not None and (here.name in targets or plan.rendezvous.constraints):
            try:
                with docker_call(f"cannot look up image {plan.image} on this node ({here.name})"):
                    image = self.client.images.get(plan.image)
            except EnvironmentProblemError as exc:
                if isinstance(exc.__cause__, docker.errors.ImageNotFound):
                    build = ("autocnnp image build --torch" if plan.engine == "torch" else
                             "autocnnp image build" + (" --gpu" if plan.gpus_per_rank else ""))
                    raise EnvironmentProblemError(
                        f"image {plan.image} is not on this node ({here.name})",
                        remedy=f"build it: {build}") from None
                raise
            _check_engine_in_image(plan, image.labels or {})
        if remote and plan.node_docker:
            from autocnnp.run_manage.swarm.images import ensure_image

            lacking = ensure_image(self.client, plan.image,
                                   [by_name[name] for name in remote if name in by_name],
                                   plan.node_docker, say=self.say)
            if lacking:
                raise EnvironmentProblemError(
                    f"image {plan.image} is not on node(s) {', '.join(sorted(lacking))} and could "
                    f"not be delivered: " + "; ".join(f"{n}: {why}" for n, why in sorted(lacking.items())),
                    remedy=f"fix what is named, or load it there yourself: docker save {plan.image} "
                           f"| docker -H NODE load; then retry")
        elif remote:
            missing = self.probe_image(plan, [by_name[name] for name in remote if name in by_name])
            if missing:
                raise EnvironmentProblemError(
                    f"image {plan.image} cannot start on node(s): " + "; ".join(missing),
                    remedy="push it to a registry the nodes can pull from, or copy it: "
                           f"docker save {plan.image} | ssh NODE docker load")

    def probe_image(self, plan: SwarmPlan, nodes: list[NodeInfo], timeout_s: float = 120) -> list[str]:
        """Run ``true`` from the image on each remote node (a one-task job per node)."""
        import docker.types

        probes = []
        labels = {JOB_LABEL: plan.job_id, "autocnnp.role": "probe"}
        try:
            for i, node in enumerate(nodes):
                name = f"{plan.rendezvous.name[:-4]}-probe{i}"
                with docker_call(f"cannot create the image probe service {name} (node {node.name})",
                             conflict=f"a service named {name} exists: remove it with "
                                      f"`docker service rm {name}` and retry"):
                    probes.append((node, self.client.services.create(
                        plan.image, args=["true"], name=name,
                        constraints=[f"node.id=={node.id}"], labels=labels,
                        container_labels=labels,
                        mode=docker.types.ServiceMode("replicated-job", replicas=1),
                        restart_policy=docker.types.RestartPolicy(condition="none"))))
            missing: dict[str, str] = {}
            deadline = time.monotonic() + timeout_s
            pending = {node.name for node, _ in probes}
            while pending and time.monotonic() < deadline:
                for node, svc in probes:
                    with docker_call(f"cannot read the tasks of the image probe on {node.name}"):
                        tasks = svc.tasks()
                    for task in tasks:
                        state = task["Status"]["State"]
                        if state == "complete":
                            pending.discard(node.name)
                        elif state in FAILED:
                            missing[node.name] = task["Status"].get("Err") or state
                            pending.discard(node.name)
                time.sleep(POLL_S)
            for name in pending:
                missing[name] = f"did not start within {timeout_s:.0f} s"
            return [f"{name}: {why}" for name, why in sorted(missing.items())]
        finally:
            for _, svc in probes:
                try:
                    svc.remove()
                except Exception:
                    pass
            try:
                left = self.client.containers.list(all=True, filters={"label": [
                    f"{JOB_LABEL}={plan.job_id}", "autocnnp.role=probe"]})
            except Exception:
                left = []
            for container in left:
                try:
                    container.remove(force=True)
                except Exception:
                    pass


def _check_engine_in_image(plan: SwarmPlan, labels: dict[str, str]) -> None:
    """An image ``autocnnp image build`` made (it carries ``org.autocnnp.flavour``) says by its
    ``org.autocnnp.torch`` label whether it has torch: a torch job is refused on one without,
    before anything is created (its ranks would fail at ``import torch``). Other images are
    the user's and are taken as they are."""
    flavour = labels.get("org.autocnnp.flavour")
    if plan.engine == "torch" and flavour and "org.autocnnp.torch" not in labels:
        raise EnvironmentProblemError(
            f"image {plan.image} is autocnnp's {flavour} image, without torch; dist_strategy "
            f"torch_ddp runs the torch engine",
            remedy=f"build the torch image with autocnnp image build --torch and drop the image "
                   f"property of <deployment> (its default for torch_ddp is {TORCH_CPU_IMAGE}), "
                   f"or name an image that has torch")


def discover_nodes(kind: str = GPU_RESOURCE_KIND) -> list[NodeInfo] | None:
    """The nodes of the swarm this machine manages, or None when there is none to ask
    (no docker SDK, no daemon, not a swarm manager). For ``autocnnp plan``: with nodes the
    plan shows which rank goes to which node and GPU."""
    try:
        backend = Preflight()
        state = backend.swarm_state()
        if state.get("LocalNodeState") != "active" or not state.get("ControlAvailable"):
            return None
        return backend.nodes(kind)
    except Exception:
        return None
