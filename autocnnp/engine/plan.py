"""Planning: what exactly a job will run, as data, before anything runs.

:func:`build_plan` is pure: from a spec, a run directory and a description of the machine it
returns a frozen :class:`JobPlan` (ranks, hosts, threads, the launcher command as a list of
arguments, the environment it adds). ``autocnnp plan`` prints it; the local and hosts backends
in :mod:`autocnnp.run_manage` execute it. The swarm backend has its own plan
(:mod:`autocnnp.engine.plan_swarm`).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from autocnnp.engine.spec import Backend, Launcher, MonitoringSpec, TrainingSpec, spec_to_dict
from autocnnp.engine.vocabulary import INTER_OP_THREADS_ENV, INTRA_OP_THREADS_ENV

WORKER_MODULE = "autocnnp.run_manage.worker"
#: the torch engine's rendezvous ports: MASTER_PORT is this plus a number from the run
#: directory's name, so that jobs started side by side on one host do not collide
TORCH_PORT_BASE = 29500
TORCH_PORT_SPAN = 20000


def torch_master_port(run_dir: Path) -> int:
    """The TCP port of a torch job's rendezvous on its first host (pure: from the path)."""
    import zlib

    return TORCH_PORT_BASE + zlib.crc32(str(run_dir).encode()) % TORCH_PORT_SPAN


def torch_env(spec: TrainingSpec, ranks: "tuple[RankSlot, ...]", run_dir: Path) -> dict[str, str]:
    """What torch.distributed needs besides the rank (which the worker reads from mpirun's
    ``OMPI_COMM_WORLD_*``): the rendezvous address and port, on the host of rank 0."""
    first = ranks[0].host if ranks else "localhost"
    addr = "127.0.0.1" if spec.deployment.backend == Backend.LOCAL or first == "localhost" \
        else first
    return {"MASTER_ADDR": addr, "MASTER_PORT": str(torch_master_port(run_dir))}


def thread_env(threads: int) -> dict[str, str]:
    """The environment that gives a rank ``threads`` intra-op threads (0: TensorFlow's default)."""
    return {INTRA_OP_THREADS_ENV: str(threads), INTER_OP_THREADS_ENV: "1" if threads else "0",
            "OMP_NUM_THREADS": str(threads or 1)}


def rank_env(threads: int) -> dict[str, str]:
    """Every MPI rank's environment: its threads, a quiet TensorFlow, Open MPI as root."""
    return {**thread_env(threads), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1",
            "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
            "OMPI_MCA_btl_vader_single_copy_mechanism": "none"}


def horovod_stall_env(monitoring: MonitoringSpec) -> dict[str, str]:
    """Horovod's own stall check, made to agree with the launcher's hang watch
    (:mod:`autocnnp.run_manage.watchdog`): it warns (naming the
    ranks that did not submit a tensor) at half the threshold, so that its warning is in the
    log when the watch acts, and with a fixed threshold it shuts Horovod down 30 s after it,
    should the launcher be gone."""
    if monitoring.hang_timeout_s == 0:
        return {}
    threshold = monitoring.hang_timeout_s or monitoring.hang_floor_s
    env = {"HOROVOD_STALL_CHECK_TIME_SECONDS": str(max(1, int(threshold // 2)))}
    if monitoring.hang_timeout_s is not None:
        env["HOROVOD_STALL_SHUTDOWN_TIME_SECONDS"] = str(int(threshold) + 30)
    return env


@dataclass(frozen=True)
class MachineInfo:
    """What planning needs to know about the machine that launches the job."""

    cpus: int
    hostname: str = "localhost"
    python: str = "python3"


@dataclass(frozen=True)
class RankSlot:
    """Where one rank runs."""

    rank: int
    host: str
    local_rank: int


@dataclass(frozen=True)
class JobPlan:
    """Everything a local or hosts job will run; printing it shows exactly that."""

    backend: str
    launcher: Launcher
    ranks: tuple[RankSlot, ...]
    threads_per_rank: int
    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    run_dir: Path
    resume: bool = False
    #: the engine the ranks run (``TrainingSpec.engine``): horovod or torch
    engine: str = "horovod"

    @property
    def size(self) -> int:
        return len(self.ranks)

    def env_dict(self) -> dict[str, str]:
        return dict(self.env)

    def to_dict(self) -> dict:
        return spec_to_dict(self) | {"size": self.size}

    def __str__(self) -> str:
        hosts: dict[str, list[int]] = {}
        for slot in self.ranks:
            hosts.setdefault(slot.host, []).append(slot.rank)
        lines = [f"backend:   {self.backend} ({self.launcher.value})",
                 f"engine:    {self.engine}",
                 f"ranks:     {self.size}  " + "  ".join(f"{h}: ranks {', '.join(map(str, r))}"
                                                       for h, r in hosts.items()),
                 f"threads:   {self.threads_per_rank} per rank",
                 f"run dir:   {self.run_dir}" + ("  (resume)" if self.resume else ""),
                 "env:       " + " ".join(f"{k}={v}" for k, v in self.env),
                 "command:   " + shlex.join(self.command)]
        return "\n".join(lines)


def _slots(spec: TrainingSpec, machine: MachineInfo) -> tuple[RankSlot, ...]:
    n = spec.parallelism_degree
    if spec.deployment.backend == Backend.HOSTS:
        slots: list[RankSlot] = []
        for entry in spec.deployment.hosts:
            host, _, count = entry.partition(":")
            for local in range(int(count or 1)):
                if len(slots) < n:
                    slots.append(RankSlot(len(slots), host, local))
        return tuple(slots)
    return tuple(RankSlot(r, machine.hostname, r) for r in range(n))


def threads_per_rank(spec: TrainingSpec, machine: MachineInfo) -> int:
    """Threads each rank may use: the config's value, else the cores shared out evenly."""
    if spec.deployment.threads_per_rank:
        return spec.deployment.threads_per_rank
    if spec.deployment.backend == Backend.HOSTS:
        return 0  # let TensorFlow decide on machines we cannot see
    return max(1, machine.cpus // spec.parallelism_degree)


def build_plan(spec: TrainingSpec, run_dir: Path, machine: MachineInfo, *,
               resume: bool = False) -> JobPlan:
    """The plan of a local or hosts job (pure: starts nothing, reads nothing)."""
    if spec.deployment.backend == Backend.SWARM:
        raise ValueError("swarm jobs are planned by autocnnp.engine.plan_swarm")
    ranks = _slots(spec, machine)
    n = len(ranks)
    if n != spec.parallelism_degree:
        raise ValueError(f"hosts offer {n} slots for {spec.parallelism_degree} ranks")
    threads = threads_per_rank(spec, machine)
    env = rank_env(threads)
    if spec.engine == "torch":
        env.update(torch_env(spec, ranks, run_dir))
    else:
        env.update(horovod_stall_env(spec.monitoring))
    worker = [machine.python, "-m", WORKER_MODULE, str(run_dir)] + (["--resume"] if resume else [])
    hosts: dict[str, int] = {}
    for slot in ranks:
        hosts[slot.host] = hosts.get(slot.host, 0) + 1
    host_list = ",".join(f"{h}:{c}" for h, c in hosts.items())
    # Open MPI counts physical cores as slots: a 2-vCPU machine may offer a single slot, so the
    # local backend always allows more ranks than slots (threads per rank are set explicitly).
    oversubscribe = spec.deployment.backend == Backend.LOCAL
    if spec.deployment.launcher is Launcher.HOROVODRUN:
        mpi_args = "--bind-to none" + (" --oversubscribe" if oversubscribe else "")
        command = ["horovodrun", "-np", str(n), "-H", host_list, "--mpi",
                   f"--mpi-args={mpi_args}"] + worker
    else:
        command = ["mpirun", "-np", str(n), "--bind-to", "none", "--map-by", "slot"]
        if oversubscribe:
            command.append("--oversubscribe")
        if spec.deployment.backend == Backend.HOSTS or machine.hostname != "localhost":
            command += ["-H", host_list]
        for key in sorted(env):
            command += ["-x", key]
        command += worker
    return JobPlan(backend=spec.deployment.backend, launcher=spec.deployment.launcher,
                   ranks=ranks, threads_per_rank=threads, command=tuple(command),
                   env=tuple(sorted(env.items())), run_dir=run_dir, resume=resume,
                   engine=spec.engine)
