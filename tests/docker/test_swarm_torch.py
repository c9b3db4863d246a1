"""The torch engine (dist_strategy torch_ddp) as a real swarm job: a one-node swarm, the torch
image (``autocnnp image build --torch``), 2 ranks as Swarm tasks meeting at the c10d store of
the job's rendezvous service over its overlay network, running the real worker.

Asserted: the ranks train together (bit-identical weights after every epoch, which change),
the run directory comes back complete (``test_metrics.json``, ``model/model.pt``, the last
checkpoint), nothing of the job is left in the swarm; and a rank whose container is killed in
the middle of training fails the job within seconds, naming the rank, the node and the reason.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from test_swarm_e2e import (autocnnp, kill_rank_1_once_trained, leftovers, no_run_dir_left,
                            the_run_dir, this_node, weight_lines)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TORCH_DDP = ('<module name="train_strategy_def">\n'
             '        <action class="extensible" type="dist_strategy"><value>torch_ddp</value></action>')


def torch_config(job_dir: Path, *, epochs: int, probe: str = "TorchWeightsProbe") -> str:
    """swarm_small.xml on the torch engine, with no image named (torch_ddp's default image)."""
    text = (job_dir / "swarm_small.xml").read_text()
    for old, new in [('<module name="train_strategy_def">', TORCH_DDP),
                     ('<value name="WeightsProbe"><path>weights_probe.py</path>',
                      f'<value name="{probe}"><path>weights_probe_torch.py</path>'),
                     ('<property name="end_epoch">6</property>',
                      f'<property name="end_epoch">{epochs}</property>'),
                     ('      <property name="image">autocnnp:cpu</property>\n', '')]:
        assert old in text, old
        text = text.replace(old, new)
    (job_dir / "swarm_torch.xml").write_text(text)
    return "swarm_torch.xml"


def test_torch_swarm_job_trains_returns_run_dir_and_cleans_up(swarm, torch_image, job_dir):
    started = time.monotonic()
    proc = autocnnp("run", torch_config(job_dir, epochs=2), cwd=job_dir)
    print(f"\ntorch swarm job: {time.monotonic() - started:.0f} s\n{proc.stdout[-3000:]}\n"
          f"{proc.stderr[-3000:]}")
    assert proc.returncode == 0, proc.stderr
    run_dir = the_run_dir(job_dir)
    record = json.loads((run_dir / "swarm.json").read_text())
    job_id = record["job_id"]
    node = this_node(swarm)

    assert f"image {torch_image}" in proc.stdout
    assert f"rank 0 -> node {node}" in proc.stdout and f"rank 1 -> node {node}" in proc.stdout
    plan = record["plan"]
    assert (plan["engine"], plan["image"], record["state"]) == ("torch", torch_image, "finished")
    assert len(record["created"]["services"]) == 2      # the store (rendezvous) and the ranks

    # the ranks train together: bit-identical weights after every epoch, which change
    rank0, rank1 = weight_lines(run_dir, 0), weight_lines(run_dir, 1)
    assert sorted(rank0) == sorted(rank1) == [1, 2]
    assert [rank0[e][0] for e in rank0] == [rank1[e][0] for e in rank0]
    assert rank0[1][0] != rank0[2][0]
    epochs = [json.loads(line) for line in
              (run_dir / "metrics" / "epochs.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2]

    for name in ("test_metrics.json", "model/model.pt", "model/autocnnp.json",
                 "checkpoints/epoch-00002/state.pt", "logs/rank-0.log", "logs/rank-1.log",
                 "logs/container-rank-0.log", "logs/container-rank-1.log"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "test_metrics.json").read_text())["engine"] == "torch"
    assert json.loads((run_dir / "model" / "autocnnp.json").read_text())["engine"] == "torch"
    assert "slot 2 -> rank 1/2" in (run_dir / "logs" / "container-rank-1.log").read_text()
    assert f"rank 1/2 (local 1/2) on {node}, torch 2.13.0+cpu, gloo" in \
        (run_dir / "logs" / "rank-1.log").read_text()
    assert json.loads((run_dir / "state.json").read_text())["state"] == "finished"
    assert leftovers(swarm, job_id) == []


def test_a_killed_torch_rank_fails_the_swarm_job_fast_naming_rank_and_node(swarm, torch_image,
                                                                          job_dir):
    """SIGKILL of rank 1's container after its first epoch: the launcher names rank 1, the node
    and the exit within 10 s, cleans up within 20 s, records the failure (see the helper)."""
    config = torch_config(job_dir, epochs=12, probe="SlowTorchWeightsProbe")
    run_dir = kill_rank_1_once_trained(swarm, job_dir, config, epochs=1)
    assert json.loads((run_dir / "swarm.json").read_text())["plan"]["engine"] == "torch"
    assert not (run_dir / "test_metrics.json").exists()


def test_a_torch_job_on_the_horovod_only_image_is_refused_before_anything_is_created(
        swarm, cpu_image, job_dir):
    config = job_dir / torch_config(job_dir, epochs=1)
    config.write_text(config.read_text().replace(
        '<property name="threads_per_rank">1</property>',
        f'<property name="threads_per_rank">1</property>\n'
        f'      <property name="image">{cpu_image}</property>'))
    services_before = {s.id for s in swarm.services.list()}
    networks_before = {n.id for n in swarm.networks.list()}

    proc = autocnnp("run", config.name, cwd=job_dir, timeout=300)

    no_run_dir_left(job_dir, proc.stdout)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.endswith(
        f"autocnnp run: error: image {cpu_image} is autocnnp's cpu image, without torch; "
        f"dist_strategy torch_ddp runs the torch engine\n"
        f"  remedy: build the torch image with autocnnp image build --torch and drop the image "
        f"property of <deployment> (its default for torch_ddp is autocnnp:cpu-torch), or name an "
        f"image that has torch\n")
    assert {s.id for s in swarm.services.list()} == services_before
    assert {n.id for n in swarm.networks.list()} == networks_before
