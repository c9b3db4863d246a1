"""The torch engine (``dist_strategy`` ``torch_ddp``) with the real worker on real MPI ranks:
real torch.distributed (Gloo), real DistributedDataParallel, real training steps.

The same proofs as the Horovod engine's (``test_data_parallel.py``): 2 ranks with per-rank
batch b and the lr scaled x2 take, after one step, the step one rank takes with batch 2b;
every rank ends with identical weights; 1 epoch + ``--resume`` for 1 more equals 2
uninterrupted epochs (model, optimizer momentum, RNG); a dead rank fails the job naming it;
and a user ``torch.nn.Module`` architecture file trains, and ``autocnnp predict`` rebuilds it
from its copy in ``model/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mpi_runs import HERE, mpirun_available, plugin, torch_launch, write_run

from autocnnp.components.demo_data import build_demo_dataset
from autocnnp.engine.spec import ActionChoice, ArchitectureSpec

pytest.importorskip("torch")

pytestmark = [pytest.mark.slow, pytest.mark.mpi,
              pytest.mark.skipif(not mpirun_available(), reason="needs mpirun (openmpi-bin)")]

BATCH = 6  # 12 training slices: 2 ranks x 6 = 1 rank x 12
LR_2 = 0.05
LR_1 = 0.1
TORCH_DDP = ActionChoice(type="dist_strategy", implementation="torch_ddp")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("torch-dp") / "mni"
    meta = build_demo_dataset(out, size=32, n_slices=20)
    assert meta["splits"]["train"] == 2 * BATCH
    return out


def saver() -> ActionChoice:
    return plugin("checkpoint", HERE / "save_rank_weights_torch.py", "SaveRankWeightsTorch")


def weights(run_dir: Path, rank: int, tag: str) -> np.ndarray:
    with np.load(run_dir / "weights" / f"rank-{rank}-{tag}.npz") as data:
        return np.concatenate([data[k].ravel().astype(np.float64) for k in sorted(data.files)])


def test_two_ranks_equal_one_rank_with_the_global_batch(demo: Path, tmp_path: Path) -> None:
    two = write_run(tmp_path / "two", demo, lr=LR_2, batch=BATCH, ranks=2,
                    plugins=(TORCH_DDP, saver()))
    one = write_run(tmp_path / "one", demo, lr=LR_1, batch=2 * BATCH, ranks=1,
                    plugins=(TORCH_DDP, saver()))
    for run_dir, ranks in ((two, 2), (one, 1)):
        proc = torch_launch(run_dir, ranks)
        assert proc.returncode == 0, proc.stderr[-3000:]

    log = (two / "logs" / "rank-0.log").read_text()
    assert "action train_strategy_def.dist_strategy (torch_ddp)" in log
    assert "action train_env_def.communication_init (torch_distributed)" in log
    assert "rank 0/2 (local 0/2)" in log and "gloo" in log
    assert "tensorflow" not in " ".join(json.loads(
        (two / "metrics" / "train_summary.json").read_text()))
    summary = json.loads((two / "metrics" / "train_summary.json").read_text())
    assert summary["ranks"] == 2
    records = [json.loads(line) for line in
               (two / "metrics" / "epochs.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1]
    assert records[0]["lr"] == pytest.approx(2 * LR_2)
    assert {"loss", "dice", "time_s", "train_s", "images_per_s"} <= set(records[0])

    start_two, start_one = weights(two, 0, "begin"), weights(one, 0, "begin")
    np.testing.assert_array_equal(start_two, start_one)  # same seed: same initial weights
    np.testing.assert_array_equal(weights(two, 1, "begin"), start_two)

    step_two = weights(two, 0, "end") - start_two
    step_one = weights(one, 0, "end") - start_one
    assert np.linalg.norm(step_one) > 1e-3  # the step is real, not a no-op
    rel = np.linalg.norm(step_two - step_one) / np.linalg.norm(step_one)
    assert rel < 1e-4, f"2-rank step differs from the 1-rank global-batch step by {rel:.2e}"
    # identical weights on all ranks at the end (bitwise: allreduce gives every rank one sum)
    np.testing.assert_array_equal(weights(two, 1, "end"), weights(two, 0, "end"))


def test_unscaled_lr_is_not_equivalent(demo: Path, tmp_path: Path) -> None:
    """Control: the comparison above can fail. With the constant policy 2 ranks take half
    the step of the scaled run."""
    const = write_run(tmp_path / "const", demo, lr=LR_1 / 2, batch=BATCH, ranks=2,
                      policy="constant", plugins=(TORCH_DDP, saver()))
    scaled = write_run(tmp_path / "scaled", demo, lr=LR_1 / 2, batch=BATCH, ranks=2,
                       plugins=(TORCH_DDP, saver()))
    for run_dir in (const, scaled):
        proc = torch_launch(run_dir, 2)
        assert proc.returncode == 0, proc.stderr[-3000:]
    step_const = weights(const, 0, "end") - weights(const, 0, "begin")
    step_scaled = weights(scaled, 0, "end") - weights(scaled, 0, "begin")
    half = step_scaled / 2
    assert np.linalg.norm(step_const - half) / np.linalg.norm(half) < 1e-3
    assert np.linalg.norm(step_scaled - step_const) > 0.4 * np.linalg.norm(step_scaled)


def test_resume_continues_the_same_training(demo: Path, tmp_path: Path) -> None:
    """1 epoch + resume for 1 more == 2 uninterrupted epochs, on 2 ranks, with SGD momentum
    and dropout (the optimizer's momentum buffers and every rank's RNG come from the
    checkpoint: without either, the resumed weights differ)."""
    common = dict(lr=LR_2, batch=BATCH, ranks=2, momentum=0.9, plugins=(TORCH_DDP, saver()),
                  checkpoint_every=1, arch_params={"dropout": 0.3})
    straight = write_run(tmp_path / "straight", demo, epochs=2, **common)
    assert torch_launch(straight, 2).returncode == 0
    resumed = write_run(tmp_path / "resumed", demo, epochs=1, **common)
    assert torch_launch(resumed, 2).returncode == 0
    checkpoint = resumed / "checkpoints" / "epoch-00001"
    assert (checkpoint / "state.pt").is_file() and (checkpoint / "manifest.json").is_file()
    assert json.loads((checkpoint / "state.json").read_text())["engine"] == "torch"
    epochs_log = resumed / "metrics" / "epochs.jsonl"
    first = epochs_log.read_text()
    epochs_log.write_text(first + json.dumps({"epoch": 2, "loss": 9.0}) + "\n")
    write_run(resumed, demo, epochs=2, **common)  # the user extends end_epoch, then resumes
    proc = torch_launch(resumed, 2, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[0] == "resuming from checkpoint epoch-00001 (epoch 1)"
    assert proc.stdout.splitlines()[1].startswith("epoch 2/2  loss ")
    records = [json.loads(line) for line in epochs_log.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[1]["loss"] != 9.0

    begin = weights(straight, 0, "begin")
    want = weights(straight, 0, "end") - begin
    for rank in (0, 1):
        got = weights(resumed, rank, "end") - begin
        rel = np.linalg.norm(got - want) / np.linalg.norm(want)
        assert rel < 1e-6, f"rank {rank}: resumed weights differ by {rel:.2e}"


def test_resume_without_the_optimizer_state_differs(demo: Path, tmp_path: Path) -> None:
    """Control for the resume test: a second run that starts from the first one's weights
    but a fresh optimizer (no momentum, other RNG) does not land on the same weights."""
    common = dict(lr=LR_2, batch=BATCH, ranks=2, momentum=0.9, plugins=(TORCH_DDP, saver()),
                  checkpoint_every=1, arch_params={"dropout": 0.3})
    straight = write_run(tmp_path / "straight", demo, epochs=2, **common)
    assert torch_launch(straight, 2).returncode == 0
    resumed = write_run(tmp_path / "resumed", demo, epochs=1, **common)
    assert torch_launch(resumed, 2).returncode == 0
    import torch

    state = torch.load(resumed / "checkpoints" / "epoch-00001" / "state.pt", weights_only=False)
    state["optimizer"]["state"] = {}  # what a weights-only checkpoint would restore
    torch.save(state, resumed / "checkpoints" / "epoch-00001" / "state.pt")
    manifest = json.loads((resumed / "checkpoints" / "epoch-00001" / "manifest.json").read_text())
    import hashlib
    blob = (resumed / "checkpoints" / "epoch-00001" / "state.pt").read_bytes()
    manifest["files"]["state.pt"] = {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    (resumed / "checkpoints" / "epoch-00001" / "manifest.json").write_text(json.dumps(manifest))
    write_run(resumed, demo, epochs=2, **common)
    assert torch_launch(resumed, 2, "--resume").returncode == 0
    begin = weights(straight, 0, "begin")
    want = weights(straight, 0, "end") - begin
    got = weights(resumed, 0, "end") - begin
    assert np.linalg.norm(got - want) / np.linalg.norm(want) > 1e-3


def test_a_torch_module_architecture_file_trains_and_evaluates(demo: Path,
                                                                tmp_path: Path) -> None:
    archi = tmp_path / "tiny_torch.py"
    archi.write_text(
        "import torch\n"
        "from torch import nn\n\n"
        "def build_model(input_shape, num_classes, width=4):\n"
        "    channels = input_shape[-1]\n"
        "    return nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),\n"
        "                         nn.Conv2d(width, num_classes, 1), nn.Softmax(dim=1))\n")
    run = write_run(tmp_path / "run", demo, lr=0.01, batch=BATCH, ranks=2, epochs=2,
                    optimizer="adam", plugins=(TORCH_DDP,), test=True, valid=True,
                    architecture=ArchitectureSpec(name=None, path=archi, params={"width": 6}))
    proc = torch_launch(run, 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "val_dice" in proc.stdout and "test dice" in proc.stdout
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics["engine"] == "torch" and metrics["samples"] > 0
    assert 0.0 <= metrics["means"]["mean_dice_foreground"] <= 1.0
    meta = json.loads((run / "model" / "autocnnp.json").read_text())
    assert meta["engine"] == "torch" and meta["params"] == {"width": 6}
    import torch
    state = torch.load(run / "model" / "model.pt")
    assert state["0.weight"].shape == (6, 1, 3, 3)  # the file's width param reached it

    # predict rebuilds the module from the file's copy in model/, without the original
    from autocnnp.cli import main
    from autocnnp.components.datasets import normalize_unit, read_image_file

    assert meta["architecture"] == str(archi) and meta["architecture_file"] == "architecture.py"
    assert (run / "model" / "architecture.py").read_text() == archi.read_text()
    archi.unlink()
    image = demo / "test" / "images" / "0072.npy"
    assert main(["predict", str(run), str(image), str(tmp_path / "pred"), "--no-progress"]) == 0
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 6, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(6, 3, 1), torch.nn.Softmax(dim=1))
    model.load_state_dict(state)
    pixels = normalize_unit(read_image_file(image), image).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(pixels)[None, None]).argmax(dim=1)[0].numpy()
    np.testing.assert_array_equal(np.load(tmp_path / "pred" / "0072.npy"), want)


def test_a_dead_rank_fails_the_job_naming_rank_and_host(demo: Path, tmp_path: Path) -> None:
    archi = tmp_path / "dies_on_rank_1.py"
    archi.write_text(
        "import os\n"
        "import torch\n"
        "from torch import nn\n\n"
        "def build_model(input_shape, num_classes):\n"
        "    if os.environ.get('OMPI_COMM_WORLD_RANK') == '1':\n"
        "        raise RuntimeError('rank 1 dies here')\n"
        "    return nn.Sequential(nn.Conv2d(input_shape[-1], num_classes, 1), nn.Softmax(dim=1))\n")
    run = write_run(tmp_path / "run", demo, lr=0.01, batch=BATCH, ranks=2, plugins=(TORCH_DDP,),
                    architecture=ArchitectureSpec(name=None, path=archi))
    import time
    began = time.monotonic()
    proc = torch_launch(run, 2)
    assert proc.returncode != 0
    assert time.monotonic() - began < 120  # fails fast, no hang in the rendezvous
    record = json.loads((run / "errors" / "rank-1.json").read_text())
    assert record["rank"] == 1 and record["host"]
    assert "rank 1 dies here" in record["message"]
    assert "rank 1: error: architecture" in proc.stderr


def test_mixed_precision_is_refused_on_a_cpu_rank(demo: Path, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", demo, lr=0.01, batch=BATCH, ranks=1, plugins=(TORCH_DDP,))
    spec = json.loads((run / "spec.json").read_text())
    spec["hyperparameters"]["precision"] = "bf16"
    (run / "spec.json").write_text(json.dumps(spec))
    proc = torch_launch(run, 1)
    assert proc.returncode == 1
    record = json.loads((run / "errors" / "rank-0.json").read_text())
    assert record["message"] == ("precision bf16 needs a GPU: rank 0 computes on the CPU, where "
                                 "bf16 autocast does not make training faster (and fp16 loses "
                                 "accuracy for nothing)")
    assert record["remedy"] == ('use <property name="precision">fp32</property> (the default) '
                                'on CPUs')


TORCH_GENERATOR = ('<CNN-Parallelism-Generator><module name="train_strategy_def"><action '
                   'class="extensible" type="dist_strategy"><value>torch_ddp</value></action>'
                   '</module></CNN-Parallelism-Generator>\n    <data format="pairs">')


def _run_cli(config: Path, env: dict) -> tuple[object, Path]:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "autocnnp", "run", str(config)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, Path(proc.stdout.strip().splitlines()[-1].removeprefix("run directory: "))


def test_autocnnp_run_on_the_torch_engine_leaves_the_same_run_directory(small_config,
                                                                        cli_env) -> None:
    """The launcher's plan (mpirun, MASTER_ADDR/PORT) and the run directory `status` and
    `report` read, with the torch engine end to end."""
    config = small_config(ranks=2, epochs=2)
    config.write_text(config.read_text().replace('<data format="pairs">', TORCH_GENERATOR))
    proc, run_dir = _run_cli(config, cli_env)
    assert "epoch 2/2" in proc.stdout and "Test metrics" in proc.stdout
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["engine"] == "torch"
    assert dict(plan["env"])["MASTER_ADDR"] == "127.0.0.1"
    for name in ("config.xml", "spec.json", "manifest.json", "state.json", "test_metrics.json",
                 "model/model.pt", "model/autocnnp.json", "logs/rank-1.log",
                 "checkpoints/epoch-00002/state.pt"):
        assert (run_dir / name).is_file(), name
    assert [json.loads(line)["epoch"] for line in
            (run_dir / "metrics" / "epochs.jsonl").read_text().splitlines()] == [1, 2]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["engine"] == "torch" and manifest["packages"]["torch"].startswith("2.")
    # the torch loop reports its progress as the Keras one does (hang watch, autocnnp watch)
    for rank in (0, 1):
        progress = json.loads((run_dir / "progress" / f"rank-{rank}.json").read_text())
        assert progress["epochs_done"] == 2 and progress["total_steps"] == 2 * progress["steps_per_epoch"]
    import subprocess
    import sys
    report = subprocess.run([sys.executable, "-m", "autocnnp", "report", str(run_dir)],
                            capture_output=True, text=True, env=cli_env, timeout=120)
    assert report.returncode == 0, report.stderr
    assert "PyTorch 2.13.0+cpu (DistributedDataParallel), 2 rank(s)" in report.stdout


def test_the_hosts_backend_runs_the_torch_engine(small_config, cli_env) -> None:
    """The hosts backend on this machine's own name: mpirun's -H path, the rendezvous on
    the first host."""
    config = small_config(ranks=2, epochs=1)
    text = config.read_text().replace('<data format="pairs">', TORCH_GENERATOR).replace(
        '<deployment backend="local"><property name="threads_per_rank">1</property></deployment>',
        '<deployment backend="hosts"><property name="hosts">localhost:2</property>'
        '<property name="threads_per_rank">1</property></deployment>')
    config.write_text(text)
    _, run_dir = _run_cli(config, cli_env)
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["backend"] == "hosts" and plan["engine"] == "torch"
    assert plan["command"][plan["command"].index("-H") + 1] == "localhost:2"
    assert (run_dir / "test_metrics.json").is_file()


def test_the_determinism_switch_repeats_a_cpu_run_bit_for_bit(demo: Path, tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        run = write_run(tmp_path / name, demo, lr=LR_2, batch=BATCH, ranks=2, epochs=2,
                        momentum=0.9, plugins=(TORCH_DDP, saver()),
                        arch_params={"dropout": 0.3})
        spec = json.loads((run / "spec.json").read_text())
        spec["reproducibility"]["deterministic"] = True
        (run / "spec.json").write_text(json.dumps(spec))
        proc = torch_launch(run, 2)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(run)
    np.testing.assert_array_equal(weights(runs[0], 0, "end"), weights(runs[1], 0, "end"))
    losses = [[json.loads(line)["loss"] for line in
               (run / "metrics" / "epochs.jsonl").read_text().splitlines()] for run in runs]
    assert losses[0] == losses[1]
