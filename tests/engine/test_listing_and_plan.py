"""The thesis's Listing 4.1, the shipped configs, the job plan and the small CLI commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autocnnp import __version__
from autocnnp.cli import main
from autocnnp.engine.plan import JobPlan, MachineInfo, RankSlot, build_plan
from autocnnp.engine.spec import Backend, Launcher, TrainingSpec, spec_from_dict, spec_to_dict
from autocnnp.generator.assembly import load_checked_spec

ROOT = Path(__file__).resolve().parents[2]
LISTING = ROOT / "configs" / "thesis-listing-4.1" / "config.xml"


def test_listing_4_1_validates_with_alias_warnings(capsys):
    assert main(["validate", str(LISTING)]) == 0
    err = capsys.readouterr().err
    for alias, canonical in [("optimiser", "optimizer"), ("minibarch_size", "minibatch_size"),
                             ("train_srategy_def", "train_strategy_def"), ("Tr_Checkpoint", "checkpoint")]:
        assert f"'{alias}' is accepted as an alias; write '{canonical}'" in err


def test_listing_4_1_plan_shows_plugin_and_ring_allreduce_on_3_ranks(capsys):
    assert main(["plan", str(LISTING)]) == 0
    out = capsys.readouterr().out
    assert "strategy:  ring_allreduce, 3 ranks" in out
    assert "├── dist_strategy: ring_allreduce  [extensible]" in out
    assert f"├── checkpoint: periodic  [extensible]  + plugin LRSchedule ({LISTING.parent / 'checkpoint' / 'ckpt1.py'}, extend)" in out
    assert "│   │   ├── device_placement: local_rank" in out
    assert "│   │   └── memory_allocation: soft_placement" in out
    assert "ranks:     3  localhost: ranks 0, 1, 2" in out
    assert "command:   mpirun -np 3 --bind-to none --map-by slot" in out


def test_plan_json_is_complete_for_tools(capsys):
    assert main(["plan", str(LISTING), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["plan"]["size"] == 3
    assert data["spec"]["hyperparameters"]["minibatch_size"] == 10
    assert data["spec"]["hyperparameters"]["optimizer"] == "sgd"
    assert "train_strategy_def.checkpoint" in data["generator"]["order"]
    assert data["plan"]["command"][:3] == ["mpirun", "-np", "3"]


@pytest.mark.parametrize("config", sorted(p.relative_to(ROOT / "configs").as_posix()
                                          for p in (ROOT / "configs").rglob("*.xml")))
def test_every_shipped_config_validates(config, capsys):
    assert main(["validate", str(ROOT / "configs" / config)]) == 0


def test_spec_round_trips_through_json():
    spec = load_checked_spec(LISTING)
    again = spec_from_dict(json.loads(json.dumps(spec_to_dict(spec))))
    assert again == spec
    assert isinstance(again, TrainingSpec)


def test_local_plan_is_exact():
    spec = load_checked_spec(ROOT / "configs" / "quickstart.xml")
    plan = build_plan(spec, Path("/runs/q"), MachineInfo(cpus=2, python="py"))
    env = dict(AUTOCNNP_INTER_OP_THREADS="1", AUTOCNNP_INTRA_OP_THREADS="1", OMP_NUM_THREADS="1",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_btl_vader_single_copy_mechanism="none", PYTHONUNBUFFERED="1",
               TF_CPP_MIN_LOG_LEVEL="2",
               # Horovod's stall check warns at half the automatic hang threshold's floor
               HOROVOD_STALL_CHECK_TIME_SECONDS="150")
    assert plan == JobPlan(
        backend=Backend.LOCAL, launcher=Launcher.MPIRUN,
        ranks=(RankSlot(0, "localhost", 0), RankSlot(1, "localhost", 1)), threads_per_rank=1,
        command=("mpirun", "-np", "2", "--bind-to", "none", "--map-by", "slot", "--oversubscribe",
                 *[a for k in sorted(env) for a in ("-x", k)],
                 "py", "-m", "autocnnp.run_manage.worker", "/runs/q"),
        env=tuple(sorted(env.items())), run_dir=Path("/runs/q"))


def test_oversubscribe_and_resume_flags():
    spec = load_checked_spec(LISTING)
    plan = build_plan(spec, Path("/r"), MachineInfo(cpus=2, python="py"), resume=True)
    assert "--oversubscribe" in plan.command
    assert plan.command[-2:] == ("/r", "--resume")


def test_hosts_backend_spreads_ranks_over_hosts(tmp_path):
    text = LISTING.read_text().replace(
        "</hyperparameters>",
        '</hyperparameters><deployment backend="hosts"><property name="hosts">node1:2,node2:2</property></deployment>')
    config = LISTING.parent / "hosts-tmp.xml"
    config.write_text(text)
    try:
        spec = load_checked_spec(config)
    finally:
        config.unlink()
    plan = build_plan(spec, Path("/r"), MachineInfo(cpus=2, python="py"))
    assert plan.ranks == (RankSlot(0, "node1", 0), RankSlot(1, "node1", 1), RankSlot(2, "node2", 0))
    i = plan.command.index("-H")
    assert plan.command[i + 1] == "node1:2,node2:1"


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"autocnnp {__version__}"


def test_components_lists_origin(capsys):
    assert main(["components"]) == 0
    out = capsys.readouterr().out
    assert "      dist_strategy        extensible      default ring_allreduce" in out
    assert "        - ring_allreduce     builtin      autocnnp.components.actions:RingAllreduce" in out


def test_describe_names_parameters_and_dependents(capsys):
    assert main(["describe", "device_placement"]) == 0
    out = capsys.readouterr().out
    assert "intra_op_threads (int, default 0): TensorFlow intra-op threads (0: auto)" in out
    assert main(["describe", "dist_strategy"]) == 0
    assert ("bound to (check these when replacing it): injection.architecture, train_env_def.communication_init, "
            "train_strategy_def.checkpoint, train_strategy_def.hyperparameters, trainer") in capsys.readouterr().out


def test_describe_unknown_gives_a_hint(capsys):
    assert main(["describe", "dist_stratgy"]) == 1
    assert "unknown component 'dist_stratgy'; did you mean 'dist_strategy'?" in capsys.readouterr().err


def test_reference_page_matches_the_schema(capsys):
    assert main(["schema", "--reference"]) == 0
    generated = capsys.readouterr().out
    committed = (ROOT / "docs" / "config-reference.md").read_text()
    assert generated == committed, "regenerate with: autocnnp schema --reference > docs/config-reference.md"


def test_reference_example_validates(tmp_path):
    from autocnnp.engine.schema_doc import EXAMPLE
    for split in ("train", "valid", "test"):
        (tmp_path / "data" / split).mkdir(parents=True)
    (tmp_path / "c.xml").write_text(EXAMPLE)
    spec = load_checked_spec(tmp_path / "c.xml")
    assert spec.lr_policy.name.value == "grescale"


def test_gpu_swarm_plan_on_paper(capsys):
    config = ROOT / "configs" / "swarm-gpu.xml"
    assert main(["plan", str(config), "--assume-nodes", "3x2"]) == 0
    out = capsys.readouterr().out
    for rank, node, local, cross in [(0, 1, 0, 0), (1, 1, 1, 0), (2, 2, 0, 1), (3, 2, 1, 1), (4, 3, 0, 2), (5, 3, 1, 2)]:
        assert f"rank   {rank}  node node{node}  local {local}/2  cross {cross}/3, 1 GPU" in out
    assert out.count("reserves:    NVIDIA-GPU=1") == 3
    assert "constraints: node.labels.gpu==true, node.id==node2" in out


def test_gpu_swarm_plan_refuses_too_few_gpus(capsys):
    config = ROOT / "configs" / "swarm-gpu.xml"
    assert main(["plan", str(config), "--assume-nodes", "2x2"]) == 3
    assert "6 ranks x 1 NVIDIA-GPU need 6 GPUs on ready n" in capsys.readouterr().err
