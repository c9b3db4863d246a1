"""The swarm backend, one concern a module (see :mod:`.backend`)."""

from autocnnp.run_manage.swarm.backend import SwarmBackend, assumed_nodes
from autocnnp.run_manage.swarm.preflight import discover_nodes
from autocnnp.run_manage.swarm.session import SWARM_FILE

__all__ = ["SWARM_FILE", "SwarmBackend", "assumed_nodes", "discover_nodes"]
