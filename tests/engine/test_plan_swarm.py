"""The swarm plan (pure): rank layout, constraints, GPU resources, NCCL/MPI settings, mounts,
placement refusals and the stack file. The docker side is in tests/docker/."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from autocnnp.engine.plan_swarm import (Mount, NetworkSpec, NodeInfo, RankSlot, SecretSpec,
                                        ServiceSpec, SwarmPlan, build_swarm_plan,
                                        check_placement, to_stack_dict, to_stack_yaml)
from autocnnp.engine.spec import (ActionChoice, ArchitectureSpec, Backend, DataSpec,
                                  DeploymentSpec, ModuleChoice, TrainingSpec)
from autocnnp.errors import EnvironmentProblemError

REPO = Path(__file__).resolve().parents[2]
RUN_DIR = Path("/shared/runs/unet-6gpu")


def gpu_spec(ranks: int = 6, **deployment) -> TrainingSpec:
    dep = dict(backend=Backend.SWARM, gpus_per_rank=1, image="registry.lab/autocnnp:gpu",
               node_constraints=("node.labels.gpu==true",), shared_volume="/shared",
               rendezvous_timeout_s=300)
    dep.update(deployment)
    return TrainingSpec(
        source=Path("/shared/configs/unet.xml"), task="imaging_segmentation",
        parallelism_degree=ranks, architecture=ArchitectureSpec(name="unet"),
        data=DataSpec(train=Path("/shared/data/brats/train"), valid=Path("/shared/data/brats/valid"),
                      test=Path("/shared/data/brats/test")),
        deployment=DeploymentSpec(**dep))


def three_gpu_nodes() -> list[NodeInfo]:
    """A manager without GPUs and three workers with 2 GPUs each."""
    return [
        NodeInfo("manager", {}, gpus=0, role="manager", id="m0", is_self=True),
        NodeInfo("gpu-c", {"gpu": "true"}, gpus=2, id="c3"),
        NodeInfo("gpu-a", {"gpu": "true"}, gpus=2, id="a1"),
        NodeInfo("gpu-b", {"gpu": "true"}, gpus=2, id="b2"),
    ]


COMMON_GPU_ENV = {
    "AUTOCNNP_GPU_RESOURCE": "NVIDIA-GPU",
    "AUTOCNNP_JOB_ID": "unet-6gpu",
    "AUTOCNNP_RUN_DIR": "/shared/runs/unet-6gpu",
    "AUTOCNNP_TASK_NODE": "{{.Node.Hostname}}",
    "AUTOCNNP_TASK_SLOT": "{{.Task.Slot}}",
    "AUTOCNNP_WORLD_SIZE": "6",
    "HOROVOD_CONTROLLER": "gloo",
    "HOROVOD_CPU_OPERATIONS": "gloo",
    "HOROVOD_GLOO_IFACE": "eth0",
    "HOROVOD_GLOO_RENDEZVOUS_ADDR": "autocnnp-unet-6gpu-rdv",
    "HOROVOD_GLOO_RENDEZVOUS_PORT": "29400",
    "HOROVOD_GLOO_TIMEOUT_SECONDS": "300",
    "HOROVOD_GPU_OPERATIONS": "NCCL",
    "HOROVOD_STALL_CHECK_TIME_SECONDS": "150",  # half the automatic hang threshold's floor
    "NCCL_DEBUG": "WARN",
    "NCCL_IB_DISABLE": "1",
    "NCCL_SOCKET_IFNAME": "eth0",
    "OMPI_MCA_btl_tcp_if_include": "eth0",
    "OMPI_MCA_oob_tcp_if_include": "eth0",
    "PYTHONUNBUFFERED": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TF_FORCE_GPU_ALLOW_GROWTH": "true",
}


def test_plan_for_three_nodes_with_two_gpus_each():
    plan = build_swarm_plan(gpu_spec(), RUN_DIR, "unet-6gpu", three_gpu_nodes())

    labels = (("autocnnp.job", "unet-6gpu"),)
    worker = ("python", "-m", "autocnnp.run_manage.worker", "/shared/runs/unet-6gpu")
    ranks = []
    services = []
    for index, (node, node_id) in enumerate([("gpu-a", "a1"), ("gpu-b", "b2"), ("gpu-c", "c3")]):
        service = f"autocnnp-unet-6gpu-n{index}"
        mine = [RankSlot(rank=2 * index + local, service=service, slot=local + 1, node=node,
                         local_rank=local, local_size=2, cross_rank=index, cross_size=3,
                         horovod_hostname=node, gpus=1) for local in (0, 1)]
        ranks += mine
        table = f"{2 * index}:0:2:{index}:3:{node};{2 * index + 1}:1:2:{index}:3:{node}"
        services.append(ServiceSpec(
            name=service, role="ranks", image="registry.lab/autocnnp:gpu", command=worker,
            env=tuple(sorted((COMMON_GPU_ENV | {"AUTOCNNP_RANK_TABLE": table}).items())),
            replicas=2, mode="replicated", hostname=f"{service}-{{{{.Task.Slot}}}}",
            constraints=("node.labels.gpu==true", f"node.id=={node_id}"),
            generic_resources=(("NVIDIA-GPU", 1),),
            mounts=(Mount("/shared", "/shared"),), secrets=("autocnnp-unet-6gpu-token",),
            endpoint_mode="dnsrr", restart_condition="none",
            labels=labels + (("autocnnp.role", "ranks"),)))
    host_plan = [[r.horovod_hostname, r.rank, r.local_rank, r.cross_rank, 6, 2, 3] for r in ranks]
    expected = SwarmPlan(
        job_id="unet-6gpu", run_dir=RUN_DIR, image="registry.lab/autocnnp:gpu", world_size=6,
        gpus_per_rank=1, gpu_resource_kind="NVIDIA-GPU", placement="nodes",
        network=NetworkSpec("autocnnp-unet-6gpu", "overlay", False, labels),
        secrets=(SecretSpec("autocnnp-unet-6gpu-token", "autocnnp_job_token",
                            "per-job token; ranks check the run directory belongs to the job",
                            labels),),
        rendezvous=ServiceSpec(
            name="autocnnp-unet-6gpu-rdv", role="rendezvous", image="registry.lab/autocnnp:gpu",
            command=("python", "-m", "autocnnp.run_manage.swarm", "rendezvous", "--port", "29400"),
            env=(("AUTOCNNP_HOST_PLAN", json.dumps(host_plan, separators=(",", ":"))),
                 ("AUTOCNNP_JOB_ID", "unet-6gpu"), ("PYTHONUNBUFFERED", "1")),
            replicas=1, mode="replicated", hostname="autocnnp-unet-6gpu-rdv",
            constraints=("node.role==manager",), secrets=("autocnnp-unet-6gpu-token",),
            labels=labels + (("autocnnp.role", "rendezvous"),)),
        rank_services=tuple(services), ranks=tuple(ranks),
        constraints=("node.labels.gpu==true",), shared_volume="/shared",
        rendezvous_timeout_s=300, resume=False)
    assert plan == expected
    assert plan.nodes == ("gpu-a", "gpu-b", "gpu-c")
    check_placement(plan, three_gpu_nodes())  # fits: no exception

    text = str(plan)
    assert "rank   5  node gpu-c  local 1/2  cross 2/3, 1 GPU  task autocnnp-unet-6gpu-n2.2" in text
    assert "  reserves:    NVIDIA-GPU=1" in text


def test_resume_adds_the_flag_to_the_worker_command():
    plan = build_swarm_plan(gpu_spec(), RUN_DIR, "unet-6gpu", three_gpu_nodes(), resume=True)
    assert {svc.command for svc in plan.rank_services} == {
        ("python", "-m", "autocnnp.run_manage.worker", "/shared/runs/unet-6gpu", "--resume")}


def test_uneven_nodes_fill_the_largest_first_with_per_local_rank_cross_sizes():
    nodes = [NodeInfo("big", {"gpu": "true"}, gpus=4, id="b"),
             NodeInfo("small", {"gpu": "true"}, gpus=2, id="s")]
    plan = build_swarm_plan(gpu_spec(ranks=5), RUN_DIR, "j", nodes)
    layout = [(r.rank, r.node, r.local_rank, r.local_size, r.cross_rank, r.cross_size)
              for r in plan.ranks]
    assert layout == [(0, "big", 0, 4, 0, 2), (1, "big", 1, 4, 0, 1), (2, "big", 2, 4, 0, 1),
                      (3, "big", 3, 4, 0, 1), (4, "small", 0, 1, 1, 2)]


def test_more_gpus_than_the_swarm_has_is_refused_saying_what_is_missing():
    with pytest.raises(EnvironmentProblemError) as refused:
        build_swarm_plan(gpu_spec(ranks=8), RUN_DIR, "unet-8gpu", three_gpu_nodes())
    assert str(refused.value) == (
        "cannot place swarm job unet-8gpu: 8 ranks x 1 NVIDIA-GPU need 8 GPUs on ready nodes "
        "matching node.labels.gpu==true, but the swarm has 6 (gpu-c: 2, gpu-a: 2, gpu-b: 2); "
        "missing 2 GPUs\n"
        "  remedy: add GPU nodes to the swarm (declare their GPUs as NVIDIA-GPU generic resources "
        "in /etc/docker/daemon.json and label them, see containers/README.md), or lower "
        "parallelism-degree to 6")


def test_a_plan_made_offline_is_checked_against_the_swarm_before_launch():
    plan = build_swarm_plan(gpu_spec(ranks=6), RUN_DIR, "unet-6gpu")  # no nodes: scheduler
    assert plan.placement == "scheduler"
    nodes = three_gpu_nodes()
    nodes[1] = NodeInfo("gpu-c", {"gpu": "true"}, gpus=2, ready=False, id="c3")
    with pytest.raises(EnvironmentProblemError) as refused:
        check_placement(plan, nodes)
    assert refused.value.message == (
        "cannot place swarm job unet-6gpu: 6 ranks x 1 NVIDIA-GPU need 6 GPUs on ready nodes "
        "matching node.labels.gpu==true, but the swarm has 4 (gpu-a: 2, gpu-b: 2); missing 2 GPUs")


def test_two_gpus_per_rank_leave_an_odd_gpu_unused():
    nodes = [NodeInfo("a", {}, gpus=3, id="a"), NodeInfo("b", {}, gpus=3, id="b")]
    with pytest.raises(EnvironmentProblemError) as refused:
        build_swarm_plan(gpu_spec(ranks=3, gpus_per_rank=2, node_constraints=()), RUN_DIR, "j", nodes)
    assert refused.value.message == (
        "cannot place swarm job j: 3 ranks x 2 NVIDIA-GPU need 6 GPUs on ready nodes, but the "
        "swarm has 6 (a: 3, b: 3), room for 2 ranks of 2 GPUs; missing 2 GPUs")


def test_no_matching_node_is_refused():
    with pytest.raises(EnvironmentProblemError) as refused:
        build_swarm_plan(gpu_spec(node_constraints=("node.labels.gpu==a100",)), RUN_DIR, "j",
                         three_gpu_nodes())
    assert refused.value.message == (
        "cannot place swarm job j: no ready swarm node matching node.labels.gpu==a100 "
        "(nodes: manager, gpu-c, gpu-a, gpu-b)")


def cpu_spec(tmp: Path, **deployment) -> TrainingSpec:
    dep = dict(backend=Backend.SWARM, image="autocnnp:cpu", threads_per_rank=1)
    dep.update(deployment)
    return TrainingSpec(
        source=tmp / "cfg" / "small.xml", task="imaging_segmentation", parallelism_degree=2,
        architecture=ArchitectureSpec(name="unet"),
        data=DataSpec(train=Path("data/train"), valid=Path("data/valid"), test=None),
        deployment=DeploymentSpec(**dep))


def test_cpu_ranks_on_a_one_node_swarm_use_bind_mounts_at_the_same_paths(tmp_path):
    nodes = [NodeInfo("vm", {}, gpus=0, role="manager", id="n1", is_self=True)]
    plan = build_swarm_plan(cpu_spec(tmp_path), tmp_path / "runs" / "r1", "small-1", nodes)
    (svc,) = plan.rank_services
    assert svc.generic_resources == ()
    assert svc.constraints == ("node.id==n1",)
    assert svc.mounts == (Mount(str(tmp_path / "cfg/data/train"), str(tmp_path / "cfg/data/train"), read_only=True),
                          Mount(str(tmp_path / "cfg/data/valid"), str(tmp_path / "cfg/data/valid"), read_only=True),
                          Mount(str(tmp_path / "runs/r1"), str(tmp_path / "runs/r1")))
    env = svc.env_dict()
    assert "HOROVOD_GPU_OPERATIONS" not in env and "NCCL_SOCKET_IFNAME" not in env
    assert (env["OMP_NUM_THREADS"], env["AUTOCNNP_RANK_TABLE"]) == ("1", "0:0:2:0:1:vm;1:1:2:0:1:vm")


def test_cpu_ranks_on_several_nodes_need_a_shared_volume(tmp_path):
    nodes = [NodeInfo("a", {}, id="a", is_self=True), NodeInfo("b", {}, id="b")]
    plan = build_swarm_plan(cpu_spec(tmp_path), tmp_path / "runs" / "r1", "j", nodes)
    assert plan.nodes == ("a",)  # without a shared volume everything stays on the launcher's node
    with pytest.raises(EnvironmentProblemError) as refused:
        build_swarm_plan(cpu_spec(tmp_path, shared_volume="/nfs"), tmp_path / "runs" / "r1", "j", nodes)
    assert refused.value.message.startswith(
        f"cannot plan swarm job j: {tmp_path / 'runs/r1'} is not under the shared volume /nfs: "
        f"ranks on other nodes cannot read it")


def test_stack_yaml_round_trips_and_says_the_same_as_the_plan():
    plan = build_swarm_plan(gpu_spec(), RUN_DIR, "unet-6gpu", three_gpu_nodes())
    text = to_stack_yaml(plan)
    loaded = yaml.safe_load(text)
    assert loaded == to_stack_dict(plan)
    assert list(loaded["services"]) == ["autocnnp-unet-6gpu-rdv", "autocnnp-unet-6gpu-n0",
                                        "autocnnp-unet-6gpu-n1", "autocnnp-unet-6gpu-n2"]
    n1 = loaded["services"]["autocnnp-unet-6gpu-n1"]
    assert n1["deploy"] == {
        "mode": "replicated", "endpoint_mode": "dnsrr", "restart_policy": {"condition": "none"},
        "labels": {"autocnnp.job": "unet-6gpu", "autocnnp.role": "ranks"}, "replicas": 2,
        "placement": {"constraints": ["node.labels.gpu==true", "node.id==b2"]},
        "resources": {"reservations": {"generic_resources": [
            {"discrete_resource_spec": {"kind": "NVIDIA-GPU", "value": 1}}]}}}
    assert n1["command"] == ["python", "-m", "autocnnp.run_manage.worker", "/shared/runs/unet-6gpu"]
    assert n1["environment"]["AUTOCNNP_RANK_TABLE"] == "2:0:2:1:3:gpu-b;3:1:2:1:3:gpu-b"
    assert n1["volumes"] == [{"type": "bind", "source": "/shared", "target": "/shared", "read_only": False}]
    assert n1["secrets"] == [{"source": "autocnnp_job_token", "target": "autocnnp_job_token"}]
    assert loaded["networks"] == {"autocnnp-unet-6gpu": {
        "driver": "overlay", "name": "autocnnp-unet-6gpu", "labels": {"autocnnp.job": "unet-6gpu"}}}
    assert loaded["secrets"]["autocnnp_job_token"]["name"] == "autocnnp-unet-6gpu-token"


def test_entrypoint_turns_each_task_slot_into_the_planned_rank_and_pins_its_gpu(tmp_path):
    """Run containers/entrypoint.sh (no docker needed) for every task of the 3-node plan."""
    plan = build_swarm_plan(gpu_spec(), RUN_DIR, "unet-6gpu", three_gpu_nodes())
    seen = []
    for slot in plan.ranks:
        svc = next(s for s in plan.rank_services if s.name == slot.service)
        env = {k: v for k, v in svc.env_dict().items() if not k.startswith("HOROVOD_GLOO_RENDEZVOUS")}
        env |= {"PATH": os.environ["PATH"], "AUTOCNNP_TASK_SLOT": str(slot.slot),
                "DOCKER_RESOURCE_NVIDIA-GPU": f"GPU-uuid-{slot.rank}"}
        out = subprocess.run(["sh", str(REPO / "containers" / "entrypoint.sh"), "env"], env=env,
                             capture_output=True, text=True, check=True).stdout
        got = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        seen.append((int(got["HOROVOD_RANK"]), int(got["HOROVOD_SIZE"]), int(got["HOROVOD_LOCAL_RANK"]),
                     int(got["HOROVOD_LOCAL_SIZE"]), int(got["HOROVOD_CROSS_RANK"]),
                     int(got["HOROVOD_CROSS_SIZE"]), got["HOROVOD_HOSTNAME"], got["CUDA_VISIBLE_DEVICES"]))
    assert seen == [(r.rank, 6, r.local_rank, r.local_size, r.cross_rank, r.cross_size,
                     r.horovod_hostname, f"GPU-uuid-{r.rank}") for r in plan.ranks]


def test_the_stack_file_example_in_containers_is_what_the_plan_writes():
    plan = build_swarm_plan(gpu_spec(), RUN_DIR, "unet-6gpu", three_gpu_nodes())
    example = (REPO / "containers" / "stack.example.yml").read_text()
    header = ("# Example: `autocnnp plan --format stack` for 6 GPU ranks on 3 nodes with 2 GPUs each\n"
              "# (regenerated and checked by tests/engine/test_plan_swarm.py).\n")
    assert example == header + to_stack_yaml(plan)


def test_plan_format_stack_is_the_swarm_backends_and_refused_elsewhere():
    """`plan --format stack` asks the config's backend for the rendering; the local backend
    offers none and says which formats it has."""
    import sys

    def plan(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "autocnnp", "plan", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=120)

    swarm = plan("configs/swarm-gpu.xml", "--assume-nodes", "3x2", "--format", "stack")
    assert swarm.returncode == 0, swarm.stderr
    assert yaml.safe_load(swarm.stdout)["services"]
    local = plan("configs/quickstart.xml", "--format", "stack")
    assert local.returncode == 1 and local.stdout == ""
    assert local.stderr.strip() == (
        "autocnnp plan: error: --format stack is not offered by the local backend (it offers: "
        "text, json); stack is for swarm configs (<deployment backend=\"swarm\">)")


def swarm_gpu_config(tmp_path: Path, node_docker: str) -> Path:
    text = (REPO / "configs" / "swarm-gpu.xml").read_text().replace(
        '<property name="shared_volume">/shared/autocnnp</property>',
        '<property name="shared_volume">/shared/autocnnp</property>\n'
        f'      <property name="node_docker">{node_docker}</property>')
    path = tmp_path / "swarm-gpu.xml"
    path.write_text(text)
    return path


def test_node_docker_is_planned_and_printed(tmp_path):
    from autocnnp.engine.validate import load_spec

    spec = load_spec(swarm_gpu_config(tmp_path, "ssh://root@{addr}"))
    assert spec.deployment.node_docker == "ssh://root@{addr}"
    plan = build_swarm_plan(spec, Path("/shared/autocnnp/runs/unet-6gpu"), "unet-6gpu",
                            three_gpu_nodes())
    assert plan.node_docker == "ssh://root@{addr}"
    assert "node docker: ssh://root@{addr} (the image is delivered to nodes lacking it)" \
        in str(plan).splitlines()
    assert "node docker:" not in str(build_swarm_plan(gpu_spec(), RUN_DIR, "j", three_gpu_nodes()))


@pytest.mark.parametrize("value, message", [
    ("root@{addr}", "<property name=\"node_docker\">: 'root@{addr}' is not a Docker daemon URL "
                    "(ssh://USER@{addr}, tcp://{addr}:PORT or unix:///PATH/{hostname}.sock)"),
    ("ssh://root@gpu-a", "<property name=\"node_docker\">: 'ssh://root@gpu-a' names no node: put "
                         "{addr} (the node's swarm address) or {hostname} where each node's "
                         "address goes, e.g. ssh://root@{addr}"),
    ("tcp://{address}:2375", "<property name=\"node_docker\">: 'tcp://{address}:2375' names no "
                             "node"),
])
def test_a_bad_node_docker_is_refused_at_the_config_line(tmp_path, value, message):
    from autocnnp.engine.validate import load_spec
    from autocnnp.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_spec(swarm_gpu_config(tmp_path, value))
    assert any(message in str(p) for p in info.value.problems), \
        "\n".join(str(p) for p in info.value.problems)


def test_node_urls_fill_in_the_address_and_hostname():
    from autocnnp.run_manage.swarm.images import node_url

    node = NodeInfo(name="gpu-a", addr="10.1.2.3")
    assert node_url("ssh://root@{addr}", node) == "ssh://root@10.1.2.3"
    assert node_url("unix:///run/{hostname}.sock", node) == "unix:///run/gpu-a.sock"


# --------------------------------------------------------------------------- the torch engine

TORCH_DDP = (ModuleChoice("train_strategy_def", (ActionChoice("dist_strategy", "torch_ddp"),)),)


def test_torch_ranks_meet_at_the_rendezvous_services_store_over_the_overlay(tmp_path):
    """torch_ddp on swarm: the rendezvous service holds the job's c10d store and every rank
    joins it as a client (MASTER_ADDR is the service, TORCHELASTIC_USE_AGENT_STORE); Gloo binds
    the overlay interface; no Horovod, MPI or TensorFlow settings."""
    nodes = [NodeInfo("vm", {}, gpus=0, role="manager", id="n1", is_self=True)]
    spec = replace(cpu_spec(tmp_path, image="autocnnp:cpu-torch"), generator=TORCH_DDP)
    assert spec.engine == "torch"
    plan = build_swarm_plan(spec, tmp_path / "runs" / "r1", "small-1", nodes)

    assert plan.engine == "torch" and plan.image == "autocnnp:cpu-torch"
    (svc,) = plan.rank_services
    assert svc.env_dict() == {
        "AUTOCNNP_ENGINE": "torch",
        "AUTOCNNP_INTER_OP_THREADS": "1",
        "AUTOCNNP_INTRA_OP_THREADS": "1",
        "AUTOCNNP_JOB_ID": "small-1",
        "AUTOCNNP_RANK_TABLE": "0:0:2:0:1:vm;1:1:2:0:1:vm",
        "AUTOCNNP_RENDEZVOUS_TIMEOUT_S": "120",
        "AUTOCNNP_RUN_DIR": str(tmp_path / "runs" / "r1"),
        "AUTOCNNP_TASK_NODE": "{{.Node.Hostname}}",
        "AUTOCNNP_TASK_SLOT": "{{.Task.Slot}}",
        "AUTOCNNP_WORLD_SIZE": "2",
        "GLOO_SOCKET_IFNAME": "eth0",
        "MASTER_ADDR": "autocnnp-small-1-rdv",
        "MASTER_PORT": "29400",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "TORCHELASTIC_USE_AGENT_STORE": "True",
    }
    assert svc.image == "autocnnp:cpu-torch"
    assert svc.command == ("python", "-m", "autocnnp.run_manage.worker", str(tmp_path / "runs" / "r1"))
    assert plan.rendezvous == ServiceSpec(
        name="autocnnp-small-1-rdv", role="rendezvous", image="autocnnp:cpu-torch",
        command=("python", "-m", "autocnnp.run_manage.swarm", "rendezvous", "--engine", "torch",
                 "--port", "29400", "--world-size", "2"),
        env=(("AUTOCNNP_JOB_ID", "small-1"), ("PYTHONUNBUFFERED", "1")),
        replicas=1, hostname="autocnnp-small-1-rdv", constraints=("node.role==manager",),
        secrets=("autocnnp-small-1-token",),
        labels=(("autocnnp.job", "small-1"), ("autocnnp.role", "rendezvous")))
    text = str(plan).splitlines()
    assert text[1] == "engine:    torch"
    assert ("rank layout: (each task's RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE; "
            "MASTER_ADDR:MASTER_PORT is the rendezvous service's c10d store)") in text
    assert plan.to_dict()["engine"] == "torch"


def test_torch_gpu_ranks_get_nccl_on_the_overlay_and_no_horovod_settings():
    spec = replace(gpu_spec(), generator=TORCH_DDP)
    plan = build_swarm_plan(spec, RUN_DIR, "unet-6gpu", three_gpu_nodes())
    env = plan.rank_services[0].env_dict()
    assert {k: env[k] for k in ("AUTOCNNP_GPU_RESOURCE", "NCCL_SOCKET_IFNAME", "NCCL_IB_DISABLE",
                                "GLOO_SOCKET_IFNAME")} == {
        "AUTOCNNP_GPU_RESOURCE": "NVIDIA-GPU", "NCCL_SOCKET_IFNAME": "eth0",
        "NCCL_IB_DISABLE": "1", "GLOO_SOCKET_IFNAME": "eth0"}
    assert [k for k in env if k.startswith(("HOROVOD_", "OMPI_", "TF_"))] == []
    assert plan.rank_services[0].generic_resources == (("NVIDIA-GPU", 1),)


def run_entrypoint(env: dict[str, str], *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(REPO / "containers" / "entrypoint.sh"), *command],
                          env=env | {"PATH": os.environ["PATH"]}, capture_output=True, text=True,
                          timeout=60)


def test_entrypoint_gives_torch_ranks_their_torchrun_environment_and_waits_for_the_store():
    """containers/entrypoint.sh for every task of a torch plan on 3 GPU nodes: RANK,
    WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE from the slot, no Horovod rank variables, and the
    wait for MASTER_ADDR:MASTER_PORT (a real listener here, then a closed port)."""
    import socket

    plan = build_swarm_plan(replace(gpu_spec(), generator=TORCH_DDP), RUN_DIR, "unet-6gpu",
                            three_gpu_nodes())
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        seen = []
        for slot in plan.ranks:
            svc = next(s for s in plan.rank_services if s.name == slot.service)
            env = svc.env_dict() | {"AUTOCNNP_TASK_SLOT": str(slot.slot),
                                    "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
            proc = run_entrypoint(env, "env")
            assert proc.returncode == 0, proc.stderr
            got = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
            assert not [k for k in got if k.startswith("HOROVOD_")]
            seen.append(tuple(int(got[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK",
                                                     "LOCAL_WORLD_SIZE")))
    assert seen == [(r.rank, 6, r.local_rank, r.local_size) for r in plan.ranks]

    env = plan.rank_services[0].env_dict() | {
        "AUTOCNNP_TASK_SLOT": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
        "AUTOCNNP_RENDEZVOUS_TIMEOUT_S": "1"}
    proc = run_entrypoint(env, "echo", "never")   # the listener is closed now
    assert proc.returncode == 1 and "never" not in proc.stdout
    assert (f"autocnnp-entrypoint: rendezvous 127.0.0.1:{port} not reachable: [Errno 111] "
            f"Connection refused") in proc.stderr
