"""The plan of a Docker Swarm job, as data (pure: no docker, no environment, no files).

:func:`build_swarm_plan` turns a swarm spec into a :class:`SwarmPlan`: one overlay network, one
per-job secret, a rendezvous service and the rank services. Ranks start without ssh or mpirun:
every rank task gets its rank environment from its ``{{.Task.Slot}}`` and the rank table of
its service (``containers/entrypoint.sh``): Horovod's ``HOROVOD_RANK``... for the Horovod
engine, torch's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE`` for the torch
engine (``TrainingSpec.engine``). The rendezvous service is what the ranks meet at: Horovod's
Gloo HTTP rendezvous initialised with the rank layout, or, for torch, the job's c10d TCP store
(``MASTER_ADDR``:``MASTER_PORT``), which every rank joins as a client, as under torchrun's
agent, so that no rank task needs an address known before it starts.

Placement. When the swarm's nodes are known (``nodes=``, what the backend passes at launch),
ranks are laid out node by node and each node gets its own rank service pinned to it, so the
plan says which rank runs on which node and GPU, ranks on one node share a Horovod host
(local rank = slot - 1) and NCCL/Horovod see the real topology. Without nodes (``autocnnp
plan`` offline), one rank service leaves placement to the Swarm scheduler and every task is
its own Horovod host. GPU ranks reserve ``gpus_per_rank`` generic resources of kind
``NVIDIA-GPU`` each (one rank per GPU); CPU ranks reserve none.

Mounts. Ranks see the run directory and the data at the same absolute paths as the launcher:
bind mounts on a one-node swarm, or the shared volume (a path mounted at the same place on
every node, e.g. NFS) that must hold the run directory and the data when ranks span nodes.

:func:`check_placement` refuses a job that cannot be placed, saying what is missing, before
anything is created; :func:`to_stack_yaml` writes the equivalent ``docker stack deploy`` file.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping

from autocnnp.engine.plan import WORKER_MODULE, horovod_stall_env, thread_env
from autocnnp.engine.spec import MonitoringSpec, TrainingSpec, spec_to_dict
from autocnnp.engine.vocabulary import NODE_ENV
from autocnnp.errors import EnvironmentProblemError

RENDEZVOUS_PORT = 29400
GPU_RESOURCE_KIND = "NVIDIA-GPU"
OVERLAY_IFACE = "eth0"        # a task's first network is the job's overlay network
SECRET_TARGET = "autocnnp_job_token"
JOB_LABEL = "autocnnp.job"
ROLE_LABEL = "autocnnp.role"


@dataclass(frozen=True)
class NodeInfo:
    """What placement needs to know about one swarm node."""

    name: str                                  # node.hostname
    labels: Mapping[str, str] = field(default_factory=dict)
    gpus: int = 0                              # generic resources of the GPU kind
    ready: bool = True                         # status ready and availability active
    role: str = "worker"
    id: str = ""
    is_self: bool = False                      # the node the launcher runs on
    addr: str = ""                             # its swarm address (Status.Addr)


@dataclass(frozen=True)
class Mount:
    """A bind mount (same path inside and outside) or a tmpfs."""

    source: str
    target: str
    type: str = "bind"
    read_only: bool = False

    def __str__(self) -> str:
        mode = "ro" if self.read_only else "rw"
        return f"{self.type} {self.source} -> {self.target} ({mode})"


@dataclass(frozen=True)
class RankSlot:
    """Where one rank runs and the Horovod topology it is given."""

    rank: int
    service: str
    slot: int                                  # the Swarm task slot (1-based)
    node: str | None                           # None: chosen by the Swarm scheduler
    local_rank: int
    local_size: int
    cross_rank: int
    cross_size: int
    horovod_hostname: str
    gpus: int = 0

    def table_entry(self) -> str:
        return (f"{self.rank}:{self.local_rank}:{self.local_size}:{self.cross_rank}:"
                f"{self.cross_size}:{self.horovod_hostname}")


@dataclass(frozen=True)
class ServiceSpec:
    """One Swarm service; ``command`` is the argument list given to the image entrypoint."""

    name: str
    role: str                                  # "rendezvous" or "ranks"
    image: str
    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    replicas: int
    # "replicated" with restart condition none: tasks run once, to completion. Not
    # "replicated-job": Docker 20.10's swarmkit numbers job slots from 0 and renders slot 0's
    # {{.Task.Slot}} as the node ID (measured here), which breaks rank = slot - 1.
    mode: str = "replicated"
    hostname: str = ""
    constraints: tuple[str, ...] = ()
    generic_resources: tuple[tuple[str, int], ...] = ()
    mounts: tuple[Mount, ...] = ()
    secrets: tuple[str, ...] = ()
    endpoint_mode: str = "dnsrr"               # the VIP mode fails here ("No route to host")
    restart_condition: str = "none"            # a Gloo ring cannot take a restarted rank back
    init: bool = True                          # tini as PID 1: SIGTERM reaches the worker
    stop_grace_s: int = 5                      # then SIGKILL; checkpoints are written atomically
    labels: tuple[tuple[str, str], ...] = ()

    def env_dict(self) -> dict[str, str]:
        return dict(self.env)


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    driver: str = "overlay"
    attachable: bool = False
    labels: tuple[tuple[str, str], ...] = ()
    external: bool = False          # the config names an existing network: used, never removed


@dataclass(frozen=True)
class SecretSpec:
    """A per-job Docker secret; its value is generated at launch and never planned or logged."""

    name: str
    target: str
    purpose: str
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SwarmPlan:
    """Everything a swarm job creates and runs; printing it shows exactly that."""

    job_id: str
    run_dir: Path
    image: str
    world_size: int
    gpus_per_rank: int
    gpu_resource_kind: str
    placement: str                             # "nodes" (laid out here) or "scheduler"
    network: NetworkSpec
    secrets: tuple[SecretSpec, ...]
    rendezvous: ServiceSpec
    rank_services: tuple[ServiceSpec, ...]
    ranks: tuple[RankSlot, ...]
    constraints: tuple[str, ...]               # the config's node constraints
    shared_volume: str | None
    rendezvous_timeout_s: int
    resume: bool = False
    node_docker: str | None = None             # each node's daemon, to deliver the image
    #: the engine the ranks run (``TrainingSpec.engine``): horovod or torch
    engine: str = "horovod"

    @property
    def size(self) -> int:
        return self.world_size

    @property
    def services(self) -> tuple[ServiceSpec, ...]:
        return (self.rendezvous, *self.rank_services)

    @property
    def gpus(self) -> int:
        return self.world_size * self.gpus_per_rank

    @property
    def nodes(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for slot in self.ranks:
            if slot.node is not None:
                seen[slot.node] = None
        return tuple(seen)

    def to_dict(self) -> dict[str, Any]:
        return spec_to_dict(self) | {"backend": "swarm", "size": self.size}

    def __str__(self) -> str:
        gpu = (f"{self.gpus_per_rank} {self.gpu_resource_kind} per rank"
               if self.gpus_per_rank else "CPU ranks (no GPU)")
        placed = ("laid out on the nodes below" if self.placement == "nodes"
                  else "chosen by the Swarm scheduler (nodes not known when planned)")
        lines = [
            f"backend:   swarm, job {self.job_id}",
            f"engine:    {self.engine}",
            f"image:     {self.image}",
            f"ranks:     {self.world_size}, {gpu}; placement {placed}",
            f"run dir:   {self.run_dir}" + ("  (resume)" if self.resume else ""),
            f"network:   {self.network.name} ({self.network.driver}"
            + (", existing: not created or removed)" if self.network.external else ")"),
            "secrets:   " + ", ".join(f"{s.name} -> /run/secrets/{s.target} ({s.purpose})"
                                      for s in self.secrets),
            f"shared:    {self.shared_volume or 'none (bind mounts: ranks on one node)'}",
            f"rendezvous timeout: {self.rendezvous_timeout_s} s",
            *([f"node docker: {self.node_docker} (the image is delivered to nodes lacking it)"]
              if self.node_docker else []),
            "rank layout:" + (" (each task's RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE; "
                              "MASTER_ADDR:MASTER_PORT is the rendezvous service's c10d store)"
                              if self.engine == "torch" else ""),
        ]
        for slot in self.ranks:
            where = slot.node or "(scheduler)"
            gpus = f", {slot.gpus} GPU" if slot.gpus else ""
            lines.append(f"  rank {slot.rank:>3}  node {where}  local {slot.local_rank}/"
                         f"{slot.local_size}  cross {slot.cross_rank}/{slot.cross_size}{gpus}  "
                         f"task {slot.service}.{slot.slot}")
        for svc in self.services:
            lines.append(f"service {svc.name} ({svc.role}): {svc.mode} x{svc.replicas}, "
                         f"endpoint {svc.endpoint_mode}, hostname {svc.hostname}")
            if svc.constraints:
                lines.append("  constraints: " + ", ".join(svc.constraints))
            if svc.generic_resources:
                lines.append("  reserves:    " + ", ".join(f"{k}={v}" for k, v in svc.generic_resources))
            for mount in svc.mounts:
                lines.append(f"  mount:       {mount}")
            lines.append("  env:         " + " ".join(f"{k}={v}" for k, v in svc.env))
            lines.append("  command:     " + shlex.join(svc.command))
        return "\n".join(lines)


# --------------------------------------------------------------------------- names

def resource_prefix(job_id: str) -> str:
    """``autocnnp-<job>`` made a valid DNS label (services are resolved by name)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", job_id.lower()).strip("-") or "job"
    return f"autocnnp-{slug}"[:48].rstrip("-")


# --------------------------------------------------------------------------- constraints

_CONSTRAINT = re.compile(r"^\s*([\w.\-]+)\s*(==|!=)\s*(.*?)\s*$")


def node_matches(node: NodeInfo, constraints: Iterable[str]) -> bool:
    """Evaluate Swarm placement constraints on ``node`` (keys we cannot see are accepted)."""
    for constraint in constraints:
        match = _CONSTRAINT.match(constraint)
        if not match:
            continue
        key, op, want = match.groups()
        if key.startswith("node.labels."):
            have = node.labels.get(key[len("node.labels."):])
        elif key == "node.hostname":
            have = node.name
        elif key == "node.role":
            have = node.role
        elif key == "node.id":
            have = node.id
        else:
            continue
        if (have == want) != (op == "=="):
            return False
    return True


def _eligible(nodes: Iterable[NodeInfo], constraints: tuple[str, ...]) -> list[NodeInfo]:
    return [n for n in nodes if n.ready and node_matches(n, constraints)]


def _describe_nodes(nodes: Iterable[NodeInfo]) -> str:
    parts = []
    for n in nodes:
        state = "" if n.ready else " (not ready)"
        parts.append(f"{n.name}: {n.gpus}{state}")
    return ", ".join(parts) or "none"


def placement_problems(*, world_size: int, gpus_per_rank: int, constraints: tuple[str, ...],
                       nodes: list[NodeInfo], gpu_resource_kind: str = GPU_RESOURCE_KIND,
                       pinned: Mapping[str, int] | None = None) -> list[str]:
    """What is missing to place ``world_size`` ranks on ``nodes`` (empty: it fits)."""
    where = f" matching {', '.join(constraints)}" if constraints else ""
    eligible = _eligible(nodes, constraints)
    if not eligible:
        seen = ", ".join(f"{n.name}{'' if n.ready else ' (not ready)'}" for n in nodes) or "none"
        return [f"no ready swarm node{where} (nodes: {seen})"]
    problems = []
    if gpus_per_rank > 0:
        need = world_size * gpus_per_rank
        have = sum(n.gpus for n in eligible)
        capacity = sum(n.gpus // gpus_per_rank for n in eligible)
        if capacity < world_size:
            msg = (f"{world_size} ranks x {gpus_per_rank} {gpu_resource_kind} need {need} GPUs on "
                   f"ready nodes{where}, but the swarm has {have} ({_describe_nodes(eligible)})")
            if capacity * gpus_per_rank != have:
                msg += f", room for {capacity} ranks of {gpus_per_rank} GPUs"
            missing = need - capacity * gpus_per_rank
            problems.append(f"{msg}; missing {missing} GPU{'s' if missing != 1 else ''}")
    if pinned:
        by_name = {n.name: n for n in eligible}
        for name, ranks in pinned.items():
            node = by_name.get(name)
            if node is None:
                problems.append(f"node {name}, planned for {ranks} rank(s), is not a ready "
                                f"swarm node{where}")
            elif gpus_per_rank and node.gpus < ranks * gpus_per_rank:
                problems.append(f"node {name} has {node.gpus} {gpu_resource_kind}, planned ranks "
                                f"need {ranks * gpus_per_rank}")
    return problems


def check_placement(plan: SwarmPlan, nodes: list[NodeInfo]) -> None:
    """Refuse ``plan`` (EnvironmentProblemError) when ``nodes`` cannot run it."""
    pinned: dict[str, int] = {}
    if plan.placement == "nodes":
        for slot in plan.ranks:
            pinned[slot.node] = pinned.get(slot.node, 0) + 1  # type: ignore[index]
    problems = placement_problems(world_size=plan.world_size, gpus_per_rank=plan.gpus_per_rank,
                                  constraints=plan.constraints, nodes=nodes,
                                  gpu_resource_kind=plan.gpu_resource_kind, pinned=pinned)
    if problems:
        raise _refusal(plan.job_id, problems, plan.gpus_per_rank, plan.gpu_resource_kind,
                       capacity=_capacity(nodes, plan.constraints, plan.gpus_per_rank))


def _capacity(nodes: list[NodeInfo], constraints: tuple[str, ...], gpus_per_rank: int) -> int:
    if not gpus_per_rank:
        return 0
    return sum(n.gpus // gpus_per_rank for n in _eligible(nodes, constraints))


def _refusal(job_id: str, problems: list[str], gpus_per_rank: int, kind: str,
             capacity: int) -> EnvironmentProblemError:
    if gpus_per_rank:
        remedy = (f"add GPU nodes to the swarm (declare their GPUs as {kind} generic resources "
                  f"in /etc/docker/daemon.json and label them, see containers/README.md)")
        if capacity:
            remedy += f", or lower parallelism-degree to {capacity}"
    else:
        remedy = "join a node (docker swarm join) or fix the node constraints of the config"
    return EnvironmentProblemError(f"cannot place swarm job {job_id}: " + "; ".join(problems),
                                   remedy=remedy)


# --------------------------------------------------------------------------- layout

def _layout(world_size: int, gpus_per_rank: int, eligible: list[NodeInfo],
            spread: bool) -> list[tuple[NodeInfo, int]]:
    """Ranks per node, non-increasing, so a node's cross rank is its index."""
    if gpus_per_rank > 0:
        ordered = sorted(eligible, key=lambda n: (-(n.gpus // gpus_per_rank), n.name))
        layout, left = [], world_size
        for node in ordered:
            take = min(left, node.gpus // gpus_per_rank)
            if take:
                layout.append((node, take))
                left -= take
        return layout
    if not spread:  # no shared volume: bind mounts exist on one node only, the launcher's
        home = next((n for n in eligible if n.is_self), None) or sorted(eligible, key=lambda n: n.name)[0]
        return [(home, world_size)]
    ordered = sorted(eligible, key=lambda n: (not n.is_self, n.name))[:world_size]
    base, extra = divmod(world_size, len(ordered))
    return [(node, base + (1 if i < extra else 0)) for i, node in enumerate(ordered)]


def _paths_of(spec: TrainingSpec, run_dir: Path) -> tuple[list[str], list[str]]:
    """(read-write, read-only) absolute paths the ranks need."""
    base = PurePosixPath(str(spec.source)).parent

    def absolute(p: Path | str) -> str:
        pp = PurePosixPath(str(p))
        return str(pp if pp.is_absolute() else base / pp)

    rw = [str(run_dir)]
    ro: list[str] = []
    for p in (spec.data.train, spec.data.valid, spec.data.test, spec.architecture.path):
        if p is not None:
            ro.append(absolute(p))
    for module in spec.generator:
        for action in module.actions:
            if action.plugin_path is not None:
                ro.append(absolute(action.plugin_path))
    if spec.preprocessing is not None:
        rw.append(absolute(spec.preprocessing.output))
    return rw, ro


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _mounts(spec: TrainingSpec, run_dir: Path) -> tuple[tuple[Mount, ...], list[str]]:
    shared = spec.deployment.shared_volume
    rw, ro = _paths_of(spec, run_dir)
    if shared:
        if not PurePosixPath(shared).is_absolute():
            return (), [f"shared_volume {shared!r} must be an absolute path mounted at the same "
                        f"place on every node (e.g. an NFS mount)"]
        outside = [p for p in rw + ro if not _under(p, shared)]
        problems = [f"{p} is not under the shared volume {shared}: ranks on other nodes cannot "
                    f"read it" for p in outside]
        return (Mount(shared, shared),), problems
    mounts: list[Mount] = []
    chosen: list[str] = []
    for path, read_only in [(p, False) for p in rw] + [(p, True) for p in ro]:
        if any(_under(path, c) for c in chosen):
            continue
        chosen.append(path)
        mounts.append(Mount(path, path, read_only=read_only))
    return tuple(sorted(mounts, key=lambda m: m.target)), []


def build_swarm_plan(spec: TrainingSpec, run_dir: Path, job_id: str,
                     nodes: list[NodeInfo] | None = None, *, resume: bool = False,
                     gpu_resource_kind: str = GPU_RESOURCE_KIND,
                     rendezvous_port: int = RENDEZVOUS_PORT) -> SwarmPlan:
    """The plan of a swarm job (pure). With ``nodes``, ranks are laid out on them and a job
    that does not fit is refused (EnvironmentProblemError naming what is missing)."""
    dep = spec.deployment
    n = spec.parallelism_degree
    gpus_per_rank = dep.gpus_per_rank
    prefix = resource_prefix(job_id)
    labels = ((JOB_LABEL, job_id),)
    network = (NetworkSpec(name=dep.network, labels=(), external=True) if dep.network
               else NetworkSpec(name=prefix, labels=labels))
    secret = SecretSpec(name=f"{prefix}-token", target=SECRET_TARGET,
                        purpose="per-job token; ranks check the run directory belongs to the job",
                        labels=labels)
    rdv_name = f"{prefix}-rdv"
    user_constraints = tuple(dep.node_constraints)
    mounts, mount_problems = _mounts(spec, run_dir)
    if mount_problems:
        raise EnvironmentProblemError(f"cannot plan swarm job {job_id}: " + "; ".join(mount_problems),
                                      remedy="put the run root and the data on the shared volume")

    # --- rank layout
    services_layout: list[tuple[str, NodeInfo | None, int]] = []   # (service, node, ranks)
    if nodes is not None:
        problems = placement_problems(world_size=n, gpus_per_rank=gpus_per_rank,
                                      constraints=user_constraints, nodes=nodes,
                                      gpu_resource_kind=gpu_resource_kind)
        if problems:
            raise _refusal(job_id, problems, gpus_per_rank, gpu_resource_kind,
                           capacity=_capacity(nodes, user_constraints, gpus_per_rank))
        layout = _layout(n, gpus_per_rank, _eligible(nodes, user_constraints),
                         spread=bool(dep.shared_volume))
        if len(layout) > 1 and not dep.shared_volume:
            raise EnvironmentProblemError(
                f"cannot plan swarm job {job_id}: its {n} ranks need {len(layout)} nodes, and "
                f"ranks on several nodes need a shared volume for the run directory and data",
                remedy="set shared_volume in <deployment> to a path mounted on every node (NFS)")
        for i, (node, count) in enumerate(layout):
            services_layout.append((f"{prefix}-n{i}", node, count))
        placement = "nodes"
    else:
        services_layout.append((f"{prefix}-ranks", None, n))
        placement = "scheduler"

    ranks: list[RankSlot] = []
    offset = 0
    counts = [count for _, _, count in services_layout]
    for index, (service, node, count) in enumerate(services_layout):
        for local in range(count):
            rank = offset + local
            if node is None:
                slot = RankSlot(rank, service, local + 1, None, 0, 1, rank, n,
                                f"{prefix}-rank-{rank}", gpus_per_rank)
            else:
                cross_size = sum(1 for c in counts if c > local)
                slot = RankSlot(rank, service, local + 1, node.name, local, count, index,
                                cross_size, node.name, gpus_per_rank)
            ranks.append(slot)
        offset += count

    # --- environment
    common_env: dict[str, str] = {
        "AUTOCNNP_JOB_ID": job_id,
        "AUTOCNNP_RUN_DIR": str(run_dir),
        "AUTOCNNP_WORLD_SIZE": str(n),
        "AUTOCNNP_TASK_SLOT": "{{.Task.Slot}}",
        NODE_ENV: "{{.Node.Hostname}}",
        "PYTHONUNBUFFERED": "1",
    }
    torch = spec.engine == "torch"
    common_env |= (_torch_env(rdv_name, rendezvous_port, dep.rendezvous_timeout_s) if torch else
                   _horovod_env(rdv_name, rendezvous_port, dep.rendezvous_timeout_s,
                                spec.monitoring))
    if dep.threads_per_rank:
        common_env |= thread_env(dep.threads_per_rank)
    if gpus_per_rank > 0:
        common_env |= {
            "AUTOCNNP_GPU_RESOURCE": gpu_resource_kind,
            "NCCL_SOCKET_IFNAME": OVERLAY_IFACE,
            "NCCL_IB_DISABLE": "1",          # overlay (VXLAN) networks carry TCP only
            "NCCL_DEBUG": "WARN",
        }
        if not torch:
            common_env |= {"HOROVOD_GPU_OPERATIONS": "NCCL", "TF_FORCE_GPU_ALLOW_GROWTH": "true"}

    worker = ("python", "-m", WORKER_MODULE, str(run_dir)) + (("--resume",) if resume else ())
    rank_services = []
    for service, node, count in services_layout:
        table = ";".join(s.table_entry() for s in ranks if s.service == service)
        constraints = user_constraints
        if node is not None:
            constraints += ((f"node.id=={node.id}",) if node.id else (f"node.hostname=={node.name}",))
        rank_services.append(ServiceSpec(
            name=service, role="ranks", image=dep.image, command=worker,
            env=tuple(sorted((common_env | {"AUTOCNNP_RANK_TABLE": table}).items())),
            replicas=count,
            hostname=f"{service}-{{{{.Task.Slot}}}}",
            constraints=constraints,
            generic_resources=((gpu_resource_kind, gpus_per_rank),) if gpus_per_rank else (),
            mounts=mounts, secrets=(secret.name,),
            labels=labels + ((ROLE_LABEL, "ranks"),)))

    serve = ("python", "-m", "autocnnp.run_manage.swarm", "rendezvous")
    if torch:   # the c10d TCP store of the job, for its world size
        command = serve + ("--engine", "torch", "--port", str(rendezvous_port),
                           "--world-size", str(n))
        rdv_env: tuple[tuple[str, str], ...] = ()
    else:       # Horovod's Gloo HTTP rendezvous, initialised with the rank layout
        host_plan = [[s.horovod_hostname, s.rank, s.local_rank, s.cross_rank, n, s.local_size,
                      s.cross_size] for s in ranks]
        command = serve + ("--port", str(rendezvous_port))
        rdv_env = (("AUTOCNNP_HOST_PLAN", json.dumps(host_plan, separators=(",", ":"))),)
    rendezvous = ServiceSpec(
        name=rdv_name, role="rendezvous", image=dep.image, command=command,
        env=rdv_env + (("AUTOCNNP_JOB_ID", job_id), ("PYTHONUNBUFFERED", "1")),
        replicas=1, hostname=rdv_name,
        constraints=("node.role==manager",), secrets=(secret.name,),
        labels=labels + ((ROLE_LABEL, "rendezvous"),))

    return SwarmPlan(job_id=job_id, run_dir=run_dir, image=dep.image, world_size=n,
                     gpus_per_rank=gpus_per_rank, gpu_resource_kind=gpu_resource_kind,
                     placement=placement, network=network, secrets=(secret,),
                     rendezvous=rendezvous, rank_services=tuple(rank_services),
                     ranks=tuple(ranks), constraints=user_constraints,
                     shared_volume=dep.shared_volume,
                     rendezvous_timeout_s=dep.rendezvous_timeout_s, resume=resume,
                     node_docker=dep.node_docker, engine=spec.engine)


def _horovod_env(rdv_name: str, port: int, timeout_s: int,
                 monitoring: MonitoringSpec) -> dict[str, str]:
    """Horovod ranks: Gloo controller and operations, the rendezvous, the overlay interface."""
    return {
        "HOROVOD_CONTROLLER": "gloo",
        "HOROVOD_CPU_OPERATIONS": "gloo",
        "HOROVOD_GLOO_RENDEZVOUS_ADDR": rdv_name,
        "HOROVOD_GLOO_RENDEZVOUS_PORT": str(port),
        "HOROVOD_GLOO_IFACE": OVERLAY_IFACE,
        "HOROVOD_GLOO_TIMEOUT_SECONDS": str(timeout_s),
        "OMPI_MCA_btl_tcp_if_include": OVERLAY_IFACE,
        "OMPI_MCA_oob_tcp_if_include": OVERLAY_IFACE,
        "TF_CPP_MIN_LOG_LEVEL": "2",
    } | horovod_stall_env(monitoring)


def _torch_env(rdv_name: str, port: int, timeout_s: int) -> dict[str, str]:
    """torch ranks: the entrypoint exports RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE from
    the rank table; they join the c10d store the rendezvous service holds (as clients: torch
    lets no rank host the store when TORCHELASTIC_USE_AGENT_STORE is True, as under torchrun's
    agent); Gloo binds the overlay interface (NCCL too, on GPU ranks)."""
    return {
        "AUTOCNNP_ENGINE": "torch",
        "AUTOCNNP_RENDEZVOUS_TIMEOUT_S": str(timeout_s),
        "GLOO_SOCKET_IFNAME": OVERLAY_IFACE,
        "MASTER_ADDR": rdv_name,
        "MASTER_PORT": str(port),
        "TORCHELASTIC_USE_AGENT_STORE": "True",
    }


# --------------------------------------------------------------------------- stack file

def to_stack_dict(plan: SwarmPlan) -> dict[str, Any]:
    """The plan as a compose (stack) document."""
    secret_key = plan.secrets[0].target if plan.secrets else None
    services: dict[str, Any] = {}
    for svc in plan.services:
        deploy: dict[str, Any] = {
            "mode": svc.mode,
            "endpoint_mode": svc.endpoint_mode,
            "restart_policy": {"condition": svc.restart_condition},
            "labels": dict(svc.labels),
        }
        deploy["replicas"] = svc.replicas
        if svc.constraints:
            deploy["placement"] = {"constraints": list(svc.constraints)}
        if svc.generic_resources:
            deploy["resources"] = {"reservations": {"generic_resources": [
                {"discrete_resource_spec": {"kind": kind, "value": value}}
                for kind, value in svc.generic_resources]}}
        entry: dict[str, Any] = {
            "image": svc.image,
            "command": list(svc.command),
            "hostname": svc.hostname,
            "init": svc.init,
            "stop_grace_period": f"{svc.stop_grace_s}s",
            "environment": dict(svc.env),
            "networks": [plan.network.name],
            "deploy": deploy,
        }
        if svc.mounts:
            entry["volumes"] = [{"type": m.type, "source": m.source, "target": m.target,
                                 "read_only": m.read_only} for m in svc.mounts]
        if svc.secrets and secret_key:
            entry["secrets"] = [{"source": secret_key, "target": secret_key}]
        services[svc.name] = entry
    doc: dict[str, Any] = {
        "version": "3.9",
        "services": services,
        "networks": {plan.network.name: (
            {"external": True, "name": plan.network.name} if plan.network.external else
            {"driver": plan.network.driver, "name": plan.network.name,
             "labels": dict(plan.network.labels)})},
    }
    if secret_key:
        doc["secrets"] = {secret_key: {"file": f"./{secret_key}",
                                       "name": plan.secrets[0].name,
                                       "labels": dict(plan.secrets[0].labels)}}
    return doc


def to_stack_yaml(plan: SwarmPlan) -> str:
    """An equivalent Docker stack file for ``docker stack deploy -c FILE STACK``."""
    import yaml

    header = (
        f"# autocnnp swarm job {plan.job_id}: {plan.world_size} ranks, image {plan.image}\n"
        f"# Deploy with:\n"
        f"#   head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > {SECRET_TARGET}\n"
        f"#   sha256sum < {SECRET_TARGET} | cut -d ' ' -f 1 > {plan.run_dir}/swarm-token.sha256\n"
        f"#   docker stack deploy -c this-file.yml {resource_prefix(plan.job_id)}\n"
        f"# The run directory ({plan.run_dir}) must exist and hold spec.json "
        f"(autocnnp run prepares it).\n"
        f"# When the ranks' tasks are complete, remove the stack: docker stack rm STACK\n")
    return header + yaml.safe_dump(to_stack_dict(plan), sort_keys=False, default_flow_style=False,
                                   width=100)
