"""The torch engine in the pure layer: dist_strategy torch_ddp in validation, assembly, plan
and describe; the architecture-file checks between engines; engine/ and generator/ never
import torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from autocnnp.cli import main
from autocnnp.engine.plan import JobPlan, MachineInfo, RankSlot, build_plan, torch_master_port
from autocnnp.engine.spec import Backend, Launcher
from autocnnp.errors import ConfigError
from autocnnp.generator.assembly import assemble, load_checked_spec

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART_TORCH = ROOT / "configs" / "quickstart-torch.xml"
LISTING_TORCH = ROOT / "configs" / "thesis-listing-4.1-torch" / "config.xml"

TORCH_DDP = ('<CNN-Parallelism-Generator><module name="train_strategy_def">'
             '<action class="extensible" type="dist_strategy"><value>{}</value></action>'
             '</module>{}</CNN-Parallelism-Generator>')

CONFIG = """<system_config>
  <task name="imaging_segmentation">
    <parallelism-degree>2</parallelism-degree>
    <CNN_archi>{archi}</CNN_archi>
    {generator}
    <data><train><path>data</path></train></data>
    <hyperparameters><property name="lr">1e-3</property></hyperparameters>
    {extra}
  </task>
</system_config>
"""


def write(folder: Path, strategy: str = "torch_ddp", archi: str = "<name>unet</name>",
          extra: str = "", more: str = "") -> Path:
    (folder / "data").mkdir(exist_ok=True)
    path = folder / "c.xml"
    path.write_text(CONFIG.format(archi=archi, generator=TORCH_DDP.format(strategy, more),
                                  extra=extra))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_checked_spec(path)
    return [str(p) for p in info.value.problems]


def test_torch_ddp_swaps_the_engine_specific_actions(tmp_path: Path) -> None:
    spec = load_checked_spec(write(tmp_path))
    assert spec.engine == "torch"
    actions = {name: (node.implementation, node.cls.__module__)
               for name, node in assemble(spec, load_plugins=False).actions().items()}
    assert actions["train_env_def.communication_init"] == (
        "torch_distributed", "autocnnp.components.torch_actions")
    for name in ("train_env_def.seeding", "train_env_def.device_placement",
                 "train_env_def.memory_allocation", "train_strategy_def.dist_strategy",
                 "train_strategy_def.checkpoint", "train_strategy_def.hyperparameters",
                 "injection.architecture"):
        assert actions[name][1] == "autocnnp.components.torch_actions", name
    for name in ("injection.task_definition", "injection.dataset"):
        assert actions[name][1] == "autocnnp.components.actions", name
    horovod = load_checked_spec(write(tmp_path, "ring_allreduce"))
    assert horovod.engine == "horovod"
    assert assemble(horovod, load_plugins=False).actions()[
        "train_env_def.communication_init"].implementation == "horovod"


def test_a_horovod_action_with_torch_ddp_is_a_located_error(tmp_path: Path) -> None:
    more = ('<module name="train_env_def"><action class="non_extensible" '
            'type="communication_init"><value>horovod</value></action></module>')
    path = write(tmp_path, more=more)
    assert problems(path) == [
        f'{path}:5: <action type="communication_init">: communication_init implementation '
        f"'horovod' belongs to the horovod engine, but dist_strategy torch_ddp runs the torch "
        f"engine; on it communication_init takes: torch_distributed"]


def test_a_keras_architecture_file_with_torch_ddp_is_an_error_at_its_line(tmp_path: Path) -> None:
    archi = tmp_path / "keras_unet.py"
    archi.write_text("import tensorflow as tf\n\ndef build_model(input_shape, num_classes):\n"
                     "    return tf.keras.Sequential()\n")
    path = write(tmp_path, archi=f"<path>{archi.name}</path>")
    assert problems(path) == [
        f"{path}:4: <CNN_archi/path>: keras_unet.py builds a Keras model (tf.keras.Model) (it "
        f"imports tensorflow), but dist_strategy torch_ddp runs the torch engine, which needs "
        f"a torch.nn.Module from build_model; use dist_strategy ring_allreduce for this file, "
        f"or write its build_model for the torch engine (docs/torch.md)"]
    assert main(["validate", str(path)]) == 2


def test_a_torch_architecture_file_with_ring_allreduce_is_an_error_at_its_line(
        tmp_path: Path) -> None:
    archi = tmp_path / "torch_unet.py"
    archi.write_text("from torch import nn\n\ndef build_model(input_shape, num_classes):\n"
                     "    return nn.Identity()\n")
    path = write(tmp_path, "ring_allreduce", archi=f"<path>{archi.name}</path>")
    assert problems(path) == [
        f"{path}:4: <CNN_archi/path>: torch_unet.py builds a torch.nn.Module (it imports "
        f"torch), but dist_strategy ring_allreduce runs the horovod engine, which needs a Keras "
        f"model (tf.keras.Model) from build_model; use dist_strategy torch_ddp for this file, "
        f"or write its build_model for the horovod engine (docs/torch.md)"]
    # the same file on its own engine is valid
    assert load_checked_spec(write(tmp_path, archi=f"<path>{archi.name}</path>")).engine == "torch"


def test_the_thesis_listing_files_are_told_apart(tmp_path: Path) -> None:
    keras_listing = ROOT / "configs" / "thesis-listing-4.1" / "archi" / "U-Net.py"
    path = write(tmp_path, archi=f"<path>{keras_listing}</path>")
    assert "(it imports autocnnp.components.models.unet)" in problems(path)[0]


def test_the_launcher_the_torch_engine_has_no_plan_for(tmp_path: Path) -> None:
    path = write(tmp_path, extra='<deployment backend="local"><property name="launcher">'
                                 'horovodrun</property></deployment>')
    assert problems(path) == [
        f"{path}:8: <deployment>: launcher horovodrun starts Horovod ranks; dist_strategy "
        f"torch_ddp runs the torch engine: use launcher mpirun (the default)"]


def test_a_torch_slurm_job_starts_plain_srun_ranks_that_meet_on_the_first_node(
        tmp_path: Path) -> None:
    from autocnnp.engine.plan import MachineInfo, torch_master_port
    from autocnnp.engine.plan_slurm import build_slurm_plan

    path = write(tmp_path, extra='<deployment backend="slurm"><property name="partition">cpu'
                                 '</property></deployment>')
    spec = load_checked_spec(path)  # valid
    run_dir = tmp_path / "runs" / "r"
    plan = build_slurm_plan(spec, run_dir, MachineInfo(cpus=4, python="/py"))
    script = plan.script()
    assert f"srun --kill-on-bad-exit=1 /py -m autocnnp.run_manage.worker {run_dir} $resume" \
        in script
    assert "--mpi=pmix" not in script and "HOROVOD_STALL" not in script
    assert f"export MASTER_PORT={torch_master_port(run_dir)}\n" in script
    assert 'export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"\n' \
           'if [ -z "$MASTER_ADDR" ]; then\n' in script
    assert str(plan).startswith("backend:   slurm (srun, torch engine)\n")


def test_a_torch_swarm_job_runs_the_torch_image_unless_the_config_names_one(tmp_path: Path) -> None:
    spec = load_checked_spec(write(tmp_path, extra='<deployment backend="swarm"/>'))
    assert (spec.engine, spec.deployment.image) == ("torch", "autocnnp:cpu-torch")
    named = write(tmp_path, extra='<deployment backend="swarm"><property name="image">'
                                  'registry.lab/autocnnp:gpu-torch</property></deployment>')
    assert load_checked_spec(named).deployment.image == "registry.lab/autocnnp:gpu-torch"
    horovod = write(tmp_path, "ring_allreduce", extra='<deployment backend="swarm"/>')
    assert load_checked_spec(horovod).deployment.image == "autocnnp:cpu"


def test_the_local_plan_of_the_torch_quickstart_is_exact() -> None:
    spec = load_checked_spec(QUICKSTART_TORCH)
    plan = build_plan(spec, Path("/runs/q"), MachineInfo(cpus=2, python="py"))
    env = dict(AUTOCNNP_INTER_OP_THREADS="1", AUTOCNNP_INTRA_OP_THREADS="1", OMP_NUM_THREADS="1",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_btl_vader_single_copy_mechanism="none", PYTHONUNBUFFERED="1",
               TF_CPP_MIN_LOG_LEVEL="2", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(torch_master_port(Path("/runs/q"))))
    assert plan == JobPlan(
        backend=Backend.LOCAL, launcher=Launcher.MPIRUN,
        ranks=(RankSlot(0, "localhost", 0), RankSlot(1, "localhost", 1)), threads_per_rank=1,
        command=("mpirun", "-np", "2", "--bind-to", "none", "--map-by", "slot", "--oversubscribe",
                 *[a for k in sorted(env) for a in ("-x", k)],
                 "py", "-m", "autocnnp.run_manage.worker", "/runs/q"),
        env=tuple(sorted(env.items())), run_dir=Path("/runs/q"), engine="torch")
    assert "engine:    torch" in str(plan)
    assert 29500 <= torch_master_port(Path("/runs/q")) < 49500
    assert torch_master_port(Path("/runs/a")) != torch_master_port(Path("/runs/b"))


def test_hosts_plan_meets_on_the_first_host(tmp_path: Path) -> None:
    text = QUICKSTART_TORCH.read_text().replace(
        '<deployment backend="local">',
        '<deployment backend="hosts"><property name="hosts">node1:1,node2:1</property>')
    config = QUICKSTART_TORCH.parent / "hosts-torch-tmp.xml"
    config.write_text(text)
    try:
        spec = load_checked_spec(config)
    finally:
        config.unlink()
    plan = build_plan(spec, Path("/r"), MachineInfo(cpus=2, python="py"))
    assert plan.env_dict()["MASTER_ADDR"] == "node1"
    assert ("-H", "node1:1,node2:1") == plan.command[plan.command.index("-H"):][:2]


def test_plan_and_describe_say_which_engine_runs(capsys: pytest.CaptureFixture) -> None:
    assert main(["plan", str(LISTING_TORCH)]) == 0
    out = capsys.readouterr().out
    assert ("engine:    torch (PyTorch DistributedDataParallel (Gloo on CPU, NCCL on GPU)); "
            "PyTorch implementations of communication_init, seeding, device_placement, "
            "memory_allocation, dist_strategy, checkpoint, hyperparameters, architecture; "
            "shared with the Horovod engine: task_definition, dataset") in out
    assert "communication_init: torch_distributed" in out
    assert "ranks:     3" in out
    assert main(["describe", "dist_strategy"]) == 0
    out = capsys.readouterr().out
    assert "implementations: ring_allreduce, torch_ddp (default ring_allreduce)" in out
    assert "  ring_allreduce: horovod (Horovod ring-allreduce on TensorFlow 2.15 / Keras 2.15)" in out
    assert "  torch_ddp: torch (PyTorch DistributedDataParallel" in out
    assert main(["describe", "dist_strategy.torch_ddp"]) == 0
    assert "sync_callbacks: TorchSync: ddp" in capsys.readouterr().out
    assert main(["plan", str(LISTING_TORCH), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["plan"]["engine"] == "torch"


def test_engine_and_generator_do_not_import_torch() -> None:
    code = ("import sys; from autocnnp.cli import main; main(['plan', sys.argv[1]]); "
            "heavy = [m for m in ('torch', 'tensorflow', 'horovod') if m in sys.modules]; "
            "print('HEAVY', heavy)")
    proc = subprocess.run([sys.executable, "-c", code, str(LISTING_TORCH)], capture_output=True,
                          text=True, cwd=str(ROOT), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_precision_is_a_torch_engine_setting(tmp_path: Path) -> None:
    extra_props = '<property name="lr">1e-3</property><property name="precision">bf16</property>'
    path = write(tmp_path, "ring_allreduce")
    path.write_text(path.read_text().replace('<property name="lr">1e-3</property>', extra_props))
    assert problems(path) == [
        f'{path}:7: <property name="precision">: precision bf16 is implemented on the torch '
        f"engine (dist_strategy torch_ddp) at this version; the Horovod engine trains in fp32"]
    path = write(tmp_path)
    path.write_text(path.read_text().replace('<property name="lr">1e-3</property>', extra_props))
    assert load_checked_spec(path).hyperparameters.precision == "bf16"
    path.write_text(path.read_text().replace(">bf16<", ">fp8<"))
    assert problems(path) == [f"{path}:7: <property name=\"precision\">: 'fp8' is not one of "
                              f"fp32, bf16, fp16"]


def test_components_lists_the_torch_engine(capsys: pytest.CaptureFixture) -> None:
    assert main(["components"]) == 0
    out = capsys.readouterr().out
    assert ("        - torch_ddp          torch engine "
            "autocnnp.components.torch_actions:TorchDDP") in out
    assert ("        - torch_distributed  torch engine "
            "autocnnp.components.torch_actions:TorchDistributedInit") in out
