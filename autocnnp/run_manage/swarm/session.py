"""What every part of the swarm backend shares: the docker client, the terminal, the names."""

from __future__ import annotations

import os
from typing import Any, TextIO

from autocnnp.engine.plan_swarm import GPU_RESOURCE_KIND, NodeInfo
from autocnnp.run_manage.backend import Backend
from autocnnp.run_manage.docker_api import docker_call

#: the launcher's record of a swarm job in its run directory (job id, plan, what it created)
SWARM_FILE = "swarm.json"
TOKEN_HASH_FILE = "swarm-token.sha256"
POLL_S = 1.0
FAILED = {"failed", "rejected", "orphaned", "remove"}
ENDED_BY_SWARM = {"shutdown"}
#: how long to wait for the manager to mark down a node whose ranks or daemon went silent
#: (Docker's default heartbeat marks a dead node down after about 16 s)
NODE_GRACE_S = 25


class SwarmSession(Backend):
    """The docker client (made on first use) and the output of one swarm command."""

    name = "swarm"
    uses_image = True

    def __init__(self, client: Any = None, *, init: bool | None = None,
                 out: TextIO | None = None) -> None:
        super().__init__(out=out)
        self._client = client
        self.init = (os.environ.get("AUTOCNNP_SWARM_INIT") == "1") if init is None else init

    @property
    def client(self):
        if self._client is None:
            from autocnnp.run_manage.docker_api import docker_client

            self._client = docker_client()
        return self._client

    def swarm_state(self) -> dict:
        with docker_call("cannot ask the Docker daemon for its swarm state (docker info)"):
            return self.client.info().get("Swarm") or {}

    def nodes(self, kind: str = GPU_RESOURCE_KIND) -> list[NodeInfo]:
        self_id = self.swarm_state().get("NodeID", "")
        found = []
        with docker_call("cannot list the swarm nodes (docker node ls)"):
            listed = self.client.api.nodes()
        for node in listed:
            spec, desc = node.get("Spec", {}), node.get("Description", {})
            gpus = 0
            for res in (desc.get("Resources", {}).get("GenericResources") or []):
                discrete, named = res.get("DiscreteResourceSpec"), res.get("NamedResourceSpec")
                if discrete and discrete.get("Kind") == kind:
                    gpus += int(discrete.get("Value", 0))
                elif named and named.get("Kind") == kind:
                    gpus += 1
            # a manager's Status.Addr may read 0.0.0.0; its ManagerStatus has the address
            addr = node.get("Status", {}).get("Addr") or ""
            if addr in ("", "0.0.0.0"):
                addr = (node.get("ManagerStatus") or {}).get("Addr", "").rpartition(":")[0]
            found.append(NodeInfo(
                name=desc.get("Hostname", node["ID"][:12]), addr=addr,
                labels=dict(spec.get("Labels") or {}),
                gpus=gpus,
                ready=node.get("Status", {}).get("State") == "ready"
                and spec.get("Availability") == "active",
                role=spec.get("Role", "worker"), id=node["ID"], is_self=node["ID"] == self_id))
        return found

    def _node_name(self, node_id: str | None) -> str:
        if not node_id:
            return "(not scheduled)"
        try:
            return self.client.api.inspect_node(node_id)["Description"]["Hostname"]
        except Exception:
            return node_id[:12]
