"""The Slurm plan (pure): the batch script exactly, launchers, GPUs, extra #SBATCH lines,
modules and containers, and the deployment settings' validation. Real Slurm jobs are in
tests/run_manage/test_slurm_e2e.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from autocnnp.cli import main
from autocnnp.engine.plan import MachineInfo
from autocnnp.engine.plan_slurm import PREEMPTED_EXIT, build_slurm_plan
from autocnnp.engine.spec import Launcher
from autocnnp.engine.validate import load_spec
from autocnnp.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
MACHINE = MachineInfo(cpus=2, hostname="login1", python="/opt/autocnnp/.venv/bin/python")
RUN_DIR = Path("/scratch/runs/unet-1")


def slurm_config(tmp_path: Path, properties: str, degree: int = 2,
                 backend: str = "slurm") -> Path:
    text = (ROOT / "configs" / "slurm.xml").read_text()
    text = text.replace("<parallelism-degree>2</parallelism-degree>",
                        f"<parallelism-degree>{degree}</parallelism-degree>")
    start = text.index('<deployment backend="slurm">')
    end = text.index("</deployment>") + len("</deployment>")
    text = (text[:start] + f'<deployment backend="{backend}">\n{properties}\n    </deployment>'
            + text[end:])
    text = text.replace("../data/mni152", str(ROOT / "data" / "mni152"))
    path = tmp_path / "slurm.xml"
    path.write_text(text)
    return path


def prop(name: str, value: str) -> str:
    return f'      <property name="{name}">{value}</property>'


def test_the_shipped_config_plans_this_exact_script() -> None:
    plan = build_slurm_plan(load_spec(ROOT / "configs" / "slurm.xml"), RUN_DIR, MACHINE)
    assert plan.launcher is Launcher.SRUN
    assert plan.script() == """#!/bin/bash
# autocnnp job for /scratch/runs/unet-1 (written by autocnnp plan/run)
#SBATCH --job-name=autocnnp-unet-1
#SBATCH --ntasks=2
#SBATCH --cpus-per-task=1
#SBATCH --partition=debug
#SBATCH --time=0:30:00
#SBATCH --output=/scratch/runs/unet-1/logs/slurm-%j.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=USR1@120
set -uo pipefail
export AUTOCNNP_INTER_OP_THREADS=1
export AUTOCNNP_INTRA_OP_THREADS=1
export AUTOCNNP_WARNING_SIGNAL=USR1
export HOROVOD_STALL_CHECK_TIME_SECONDS=150
export OMPI_ALLOW_RUN_AS_ROOT=1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMP_NUM_THREADS=1
export PYTHONUNBUFFERED=1
export TF_CPP_MIN_LOG_LEVEL=2
# a requeued job (time limit, preemption, scontrol requeue) resumes by itself
resume=""
if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then resume="--resume"; fi
srun --mpi=pmix --kill-on-bad-exit=1 /opt/autocnnp/.venv/bin/python -m autocnnp.run_manage.worker /scratch/runs/unet-1 $resume
status=$?
if [ $status -eq 75 ]; then
  echo "autocnnp: checkpointed on the warning signal; requeueing job $SLURM_JOB_ID"
  scontrol requeue "$SLURM_JOB_ID"
fi
exit $status
"""
    from autocnnp.components import preemption
    assert PREEMPTED_EXIT == preemption.PreemptedError.exit_code == 75


def test_a_gpu_cluster_job_with_every_setting(tmp_path: Path) -> None:
    config = slurm_config(tmp_path, "\n".join([
        prop("partition", "gpu"), prop("nodes", "2"), prop("tasks_per_node", "4"),
        prop("gpus_per_rank", "1"), prop("threads_per_rank", "8"),
        prop("time_limit", "1-12:00:00"), prop("account", "lab42"), prop("qos", "high"),
        prop("sbatch", "--mail-type=END\n#SBATCH --exclusive"),
        prop("modules", "cuda/12.4, openmpi/4.1"), prop("signal_before", "300")]), degree=8)
    plan = build_slurm_plan(load_spec(config), RUN_DIR, MACHINE, resume=True)
    script = plan.script()
    header = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert header == ["#SBATCH --job-name=autocnnp-unet-1", "#SBATCH --ntasks=8",
                      "#SBATCH --cpus-per-task=8", "#SBATCH --nodes=2",
                      "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-task=1",
                      "#SBATCH --partition=gpu", "#SBATCH --time=1-12:00:00",
                      "#SBATCH --account=lab42", "#SBATCH --qos=high",
                      "#SBATCH --output=/scratch/runs/unet-1/logs/slurm-%j.out",
                      "#SBATCH --open-mode=append", "#SBATCH --requeue",
                      "#SBATCH --signal=USR1@300", "#SBATCH --mail-type=END",
                      "#SBATCH --exclusive"]
    assert "module load cuda/12.4\nmodule load openmpi/4.1\n" in script
    assert 'resume="--resume"\n' in script  # autocnnp run --resume on a slurm run


def test_mpirun_inside_the_allocation_and_a_container(tmp_path: Path) -> None:
    config = slurm_config(tmp_path, prop("launcher", "mpirun"))
    plan = build_slurm_plan(load_spec(config), RUN_DIR, MACHINE)
    assert plan.rank_command() == ["mpirun", "-np", "2", "--bind-to", "none",
                                   "/opt/autocnnp/.venv/bin/python", "-m",
                                   "autocnnp.run_manage.worker", str(RUN_DIR)]
    config = slurm_config(tmp_path, prop("container", "/images/autocnnp.sif"))
    plan = build_slurm_plan(load_spec(config), RUN_DIR, MACHINE)
    assert plan.rank_command()[:8] == ["srun", "--mpi=pmix", "--kill-on-bad-exit=1",
                                       "apptainer", "exec", "--bind", str(RUN_DIR),
                                       "/images/autocnnp.sif"]


@pytest.mark.parametrize("properties, backend, message", [
    (prop("time_limit", "two hours"), "slurm",
     "<property name=\"time_limit\">: 'two hours' is not a Slurm time limit (MINUTES, HH:MM:SS "
     "or DAYS-HH[:MM[:SS]], e.g. 2:00:00 or 1-12)"),
    (prop("launcher", "horovodrun"), "slurm",
     "<deployment>: launcher horovodrun cannot run inside a Slurm allocation; use srun "
     "(default) or mpirun"),
    (prop("launcher", "srun"), "local",
     '<deployment>: launcher srun needs backend="slurm" (backend is local)'),
    (prop("partition", "gpu") + "\n" + prop("qos", "high"), "local",
     '<deployment>: partition, qos only apply to backend="slurm" (backend is local)'),
    (prop("nodes", "1") + "\n" + prop("tasks_per_node", "1"), "slurm",
     "<deployment>: nodes x tasks_per_node = 1 tasks, fewer than parallelism-degree 2"),
])
def test_bad_slurm_settings_are_refused_at_the_config_line(tmp_path: Path, properties: str,
                                                           backend: str, message: str) -> None:
    config = slurm_config(tmp_path, properties, backend=backend)
    with pytest.raises(ConfigError) as info:
        load_spec(config)
    assert any(message in str(p) for p in info.value.problems), \
        "\n".join(str(p) for p in info.value.problems)


def test_plan_prints_the_batch_script() -> None:
    assert main(["validate", str(ROOT / "configs" / "slurm.xml")]) == 0
