"""The plan of a Slurm job, as data: the exact batch script ``sbatch`` will get (pure).

:func:`build_slurm_plan` turns a spec with ``<deployment backend="slurm">`` into a
:class:`SlurmPlan` whose :meth:`~SlurmPlan.script` is the batch script, byte for byte, that
``autocnnp plan`` prints and ``autocnnp run`` submits. Nothing here reads the environment or
talks to Slurm; the backend (:mod:`autocnnp.run_manage.slurm`) checks the cluster and submits.

The script asks for ``parallelism-degree`` tasks (one rank per task, ``threads_per_rank`` CPUs
each, ``gpus_per_rank`` GPUs each), spread over ``nodes`` nodes when given. Ranks start with
``srun --mpi=pmix`` (Debian's Open MPI and Slurm 22.05 share PMIx; Horovod's MPI controller
initialises from it) or with ``mpirun`` inside the allocation (``launcher`` ``mpirun``).
Torch ranks (``dist_strategy`` ``torch_ddp``) start with plain ``srun`` and read their place
from Slurm's ``SLURM_PROCID``/``SLURM_NTASKS``; they meet at ``MASTER_ADDR``:``MASTER_PORT``,
the first node of the allocation (the script asks ``scontrol``) and a port derived from the
run directory.

Preemption and time limits: the job is requeueable and asks Slurm for ``SIGUSR1``
``signal_before_s`` seconds before it is killed. The signal reaches every rank, which
checkpoints at the next step boundary and exits with :data:`PREEMPTED_EXIT`; the script then
asks Slurm to requeue the job, and a requeued job (``SLURM_RESTART_COUNT`` > 0) resumes from
that checkpoint by itself.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from autocnnp.engine.plan import (WORKER_MODULE, MachineInfo, horovod_stall_env, rank_env,
                                  threads_per_rank, torch_master_port)
from autocnnp.engine.spec import Launcher, TrainingSpec, spec_to_dict
#: the exit status of a rank that checkpointed on Slurm's warning signal and stopped
#: (sysexits' TEMPFAIL; :class:`autocnnp.components.preemption.PreemptedError`)
PREEMPTED_EXIT = 75
#: the signal Slurm sends before the time limit or a preemption (``--signal``), and the
#: variable that names it to the ranks (:mod:`autocnnp.components.preemption`)
WARNING_SIGNAL = "USR1"
WARNING_SIGNAL_ENV = "AUTOCNNP_WARNING_SIGNAL"
#: the batch script, written into the run directory
SCRIPT_FILE = "slurm.sbatch"


@dataclass(frozen=True)
class SlurmPlan:
    """Everything a Slurm job will run; :meth:`script` is exactly what is submitted."""

    job_name: str
    run_dir: Path
    tasks: int
    nodes: int | None
    tasks_per_node: int | None
    cpus_per_task: int
    gpus_per_task: int
    partition: str | None
    time_limit: str | None
    account: str | None
    qos: str | None
    signal_before_s: int
    sbatch_lines: tuple[str, ...]
    modules: tuple[str, ...]
    container: str | None
    launcher: Launcher
    python: str
    env: tuple[tuple[str, str], ...]
    resume: bool = False
    #: the training engine (``TrainingSpec.engine``): ``horovod`` or ``torch``
    engine: str = "horovod"

    @property
    def output(self) -> Path:
        """Where Slurm writes the batch script's stdout and stderr."""
        return self.run_dir / "logs" / "slurm-%j.out"

    def sbatch_options(self) -> list[str]:
        """The ``#SBATCH`` options, in the order the script writes them."""
        opts = [f"--job-name={self.job_name}", f"--ntasks={self.tasks}",
                f"--cpus-per-task={self.cpus_per_task}"]
        if self.nodes:
            opts.append(f"--nodes={self.nodes}")
        if self.tasks_per_node:
            opts.append(f"--ntasks-per-node={self.tasks_per_node}")
        if self.gpus_per_task:
            opts.append(f"--gpus-per-task={self.gpus_per_task}")
        for flag, value in (("partition", self.partition), ("time", self.time_limit),
                            ("account", self.account), ("qos", self.qos)):
            if value:
                opts.append(f"--{flag}={value}")
        opts += [f"--output={self.output}", "--open-mode=append", "--requeue",
                 f"--signal={WARNING_SIGNAL}@{self.signal_before_s}"]
        return opts

    def rank_command(self) -> list[str]:
        """How the batch script starts the ranks (before the ``--resume`` it may add)."""
        worker = [self.python, "-m", WORKER_MODULE, str(self.run_dir)]
        if self.container:
            worker = ["apptainer", "exec", "--bind", str(self.run_dir), self.container] + worker
        if self.launcher is Launcher.MPIRUN:
            return ["mpirun", "-np", str(self.tasks), "--bind-to", "none"] + worker
        if self.engine == "torch":  # no MPI: the ranks meet at MASTER_ADDR:MASTER_PORT
            return ["srun", "--kill-on-bad-exit=1"] + worker
        return ["srun", "--mpi=pmix", "--kill-on-bad-exit=1"] + worker

    def script(self) -> str:
        """The batch script (``RUN_DIR/slurm.sbatch``)."""
        lines = ["#!/bin/bash", f"# autocnnp job for {self.run_dir} (written by autocnnp plan/run)"]
        lines += [f"#SBATCH {opt}" for opt in self.sbatch_options()]
        lines += [line if line.startswith("#SBATCH") else f"#SBATCH {line}"
                  for line in self.sbatch_lines]
        lines += ["set -uo pipefail"]
        lines += [f"module load {shlex.quote(m)}" for m in self.modules]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in self.env]
        if self.engine == "torch":
            lines += ["# the torch ranks' rendezvous: the allocation's first node",
                      'export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" '
                      '| head -n 1)"',
                      'if [ -z "$MASTER_ADDR" ]; then',
                      '  echo "autocnnp: cannot name the first node of $SLURM_JOB_NODELIST '
                      '(scontrol show hostnames)" >&2',
                      "  exit 1",
                      "fi"]
        resume = "--resume" if self.resume else ""
        lines += [
            "# a requeued job (time limit, preemption, scontrol requeue) resumes by itself",
            f'resume="{resume}"',
            'if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then resume="--resume"; fi',
            f"{shlex.join(self.rank_command())} $resume",
            "status=$?",
            f"if [ $status -eq {PREEMPTED_EXIT} ]; then",
            '  echo "autocnnp: checkpointed on the warning signal; requeueing job $SLURM_JOB_ID"',
            '  scontrol requeue "$SLURM_JOB_ID"',
            "fi",
            "exit $status",
        ]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        return spec_to_dict(self) | {"script": self.script()}

    def __str__(self) -> str:
        return (f"backend:   slurm ({self.launcher.value}"
                + (", torch engine" if self.engine == "torch" else "") + ")\n"
                f"ranks:     {self.tasks} tasks, {self.cpus_per_task} CPU(s)"
                + (f" and {self.gpus_per_task} GPU(s)" if self.gpus_per_task else "")
                + " each\n"
                f"run dir:   {self.run_dir}" + ("  (resume)" if self.resume else "") + "\n"
                f"submit:    sbatch {self.run_dir / SCRIPT_FILE}\n"
                f"--- {SCRIPT_FILE} ---\n{self.script()}")


def build_slurm_plan(spec: TrainingSpec, run_dir: Path, machine: MachineInfo, *,
                     resume: bool = False) -> SlurmPlan:
    """The plan of a Slurm job (pure: starts nothing, reads nothing)."""
    d = spec.deployment
    threads = d.threads_per_rank or threads_per_rank(spec, machine)
    env = {**rank_env(threads), WARNING_SIGNAL_ENV: WARNING_SIGNAL}
    if spec.engine == "torch":
        env["MASTER_PORT"] = str(torch_master_port(run_dir))
    else:
        env.update(horovod_stall_env(spec.monitoring))
    # validation makes srun the slurm backend's default launcher and refuses horovodrun
    launcher = Launcher.MPIRUN if d.launcher is Launcher.MPIRUN else Launcher.SRUN
    return SlurmPlan(job_name=f"autocnnp-{run_dir.name}"[:64], run_dir=run_dir,
                     tasks=spec.parallelism_degree, nodes=d.nodes,
                     tasks_per_node=d.tasks_per_node, cpus_per_task=threads,
                     gpus_per_task=d.gpus_per_rank, partition=d.partition,
                     time_limit=d.time_limit, account=d.account, qos=d.qos,
                     signal_before_s=d.signal_before_s, sbatch_lines=d.sbatch_lines,
                     modules=d.modules, container=d.container, launcher=launcher,
                     python=machine.python, env=tuple(sorted(env.items())), resume=resume,
                     engine=spec.engine)
