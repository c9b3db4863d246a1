"""A swarm of three real Docker nodes (scripts/test-cluster.sh): what only exists across nodes.

The image reaches the workers without a registry (pre-flight compares image ids and streams
``docker save`` into ``docker load``); 4 ranks spread over the nodes form one Gloo ring over the
overlay network and write the run directory on the shared volume; ``status`` and ``logs`` see
ranks on other nodes; a dead node fails the job in under 30 s naming it, and ``--resume``
finishes on the nodes left; nothing of a job is left on any node, whatever its end.
The tests run in file order and share the cluster: the last one kills a node.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest


pytestmark = [pytest.mark.cluster, pytest.mark.docker, pytest.mark.slow]

MANAGER = "acnp-n1"
NODES = ("acnp-n1", "acnp-n2", "acnp-n3")


def autocnnp(cluster, *args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autocnnp", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=cluster.env)


def start(cluster, *args: str, cwd: Path) -> tuple[subprocess.Popen, list, list]:
    """A launcher in the background; its stdout lines with their arrival time, its stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "autocnnp", *args], cwd=cwd, env=cluster.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []
    errors: list[str] = []
    for target in (lambda: lines.extend((time.monotonic(), l) for l in proc.stdout),
                   lambda: errors.extend(proc.stderr)):
        threading.Thread(target=target, daemon=True).start()
    return proc, lines, errors


def the_run_dir(job_dir: Path) -> Path:
    runs = [p for p in (job_dir / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def wait_for_epochs(proc, job_dir: Path, epochs: int, errors: list, timeout: float = 420) -> Path:
    """The run directory, once rank 3 finished ``epochs`` epochs and a checkpoint exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "".join(errors)
        if (job_dir / "runs").exists() and any((job_dir / "runs").iterdir()):
            run_dir = the_run_dir(job_dir)
            probe = run_dir / "weights" / "rank-3.txt"
            if probe.exists() and len(probe.read_text().splitlines()) >= epochs and \
                    any((run_dir / "checkpoints").glob("epoch-*")):
                return run_dir
        time.sleep(0.5)
    pytest.fail(f"training did not reach epoch {epochs} within {timeout:.0f} s")


def leftovers(clients: dict, job_id: str) -> list[str]:
    """Everything of the job still on any of the nodes: services, networks, secrets (the
    swarm's, through the manager) and containers (each node's own)."""
    label = {"label": f"autocnnp.job={job_id}"}
    manager = clients[MANAGER]
    found = [f"service {s.name}" for s in manager.services.list(filters=label)]
    found += [f"secret {s.name}" for s in manager.secrets.list(filters=label)]
    found += [f"config {c.name}" for c in manager.configs.list(filters=label)]
    for node, client in clients.items():
        found += [f"network {n.name} on {node}" for n in client.networks.list(filters=label)]
        found += [f"container {c.name} on {node}"
                  for c in client.containers.list(all=True, filters=label)]
    return found


def slow_job(job_dir: Path, end_epoch: int) -> None:
    """The job trains ``end_epoch`` epochs, each slowed down (SlowWeightsProbe) so a test can
    act in the middle of training."""
    config = job_dir / "cluster_job.xml"
    config.write_text(config.read_text().replace('name="WeightsProbe"', 'name="SlowWeightsProbe"')
                      .replace('<property name="end_epoch">8</property>',
                               f'<property name="end_epoch">{end_epoch}</property>'))


def epochs_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in
            (run_dir / "metrics" / "epochs.jsonl").read_text().splitlines()]


def test_a_node_daemon_out_of_reach_is_refused_before_anything_is_created(cluster, cluster_image,
                                                                        job_dir):
    config = job_dir / "cluster_job.xml"
    config.write_text(config.read_text().replace("tcp://{addr}:2375", "tcp://{addr}:2399"))
    before = {k: {x.id for x in getattr(cluster.manager, k).list()}
              for k in ("services", "networks", "secrets")}

    proc = autocnnp(cluster, "run", "cluster_job.xml", cwd=job_dir, timeout=300)

    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "node(s) acnp-n2, acnp-n3 do not answer at tcp://{addr}:2399; waiting up to 25 s for " \
           "the swarm to mark them down" in proc.stdout
    runs = job_dir / "runs"                                  # refused: no run directory left
    assert not runs.exists() or not [p for p in runs.iterdir() if p.is_dir()]
    message = proc.stderr[proc.stderr.index("autocnnp run: error: "):]
    assert message.startswith(
        "autocnnp run: error: image autocnnp:cpu is not on node(s) acnp-n2, acnp-n3 and could "
        "not be delivered: acnp-n2: cannot reach the Docker daemon of node acnp-n2 at "
        "tcp://10.78.0.12:2399 (")
    assert "; acnp-n3: cannot reach the Docker daemon of node acnp-n3 at tcp://10.78.0.13:2399 (" \
        in message
    assert message.endswith(
        "  remedy: fix what is named, or load it there yourself: docker save autocnnp:cpu | "
        "docker -H NODE load; then retry\n")
    assert {k: {x.id for x in getattr(cluster.manager, k).list()}
            for k in ("services", "networks", "secrets")} == before

    push = autocnnp(cluster, "image", "push-nodes", "cluster_job.xml", cwd=job_dir, timeout=120)
    assert push.returncode == 3, push.stderr
    assert "  acnp-n2: LACKS autocnnp:cpu: cannot reach the Docker daemon of node acnp-n2 at " \
           "tcp://10.78.0.12:2399 (" in push.stdout
    assert push.stderr == ("autocnnp image: error: image autocnnp:cpu is not on node(s) acnp-n2, "
                           "acnp-n3\n  remedy: fix what is named above and run autocnnp image "
                           "push-nodes again\n")


def test_four_ranks_across_the_nodes_train_and_leave_nothing(cluster, cluster_image, job_dir):
    for node in ("acnp-n2", "acnp-n3"):   # the manager has it; the workers get it in pre-flight
        assert not cluster.clients[node].images.list(name="autocnnp")
    started = time.monotonic()
    proc = autocnnp(cluster, "run", "cluster_job.xml", cwd=job_dir)
    seconds = time.monotonic() - started
    print(f"\ncluster job: {seconds:.0f} s\n{proc.stdout[-4000:]}\n{proc.stderr[-3000:]}")
    assert proc.returncode == 0, proc.stderr

    image_id = cluster.manager.images.get("autocnnp:cpu").id
    assert f"delivering image autocnnp:cpu ({image_id[:19]}) to acnp-n2 (absent), acnp-n3 " \
           f"(absent): docker save | docker load, streamed" in proc.stdout
    for node in NODES:
        assert cluster.clients[node].images.get("autocnnp:cpu").id == image_id
    # the layout pre-flight chose: 2 ranks on the manager, 1 on each worker (plan.json and the
    # swarm's own placement constraints, node.id==..., which the tasks obey)
    run_dir = the_run_dir(job_dir)
    record = json.loads((run_dir / "swarm.json").read_text())
    placed = {slot["rank"]: slot["node"] for slot in record["plan"]["ranks"]}
    assert placed == {0: "acnp-n1", 1: "acnp-n1", 2: "acnp-n2", 3: "acnp-n3"}
    for rank, node in placed.items():
        assert f"rank {rank} -> node {node}" in proc.stdout
    assert record["state"] == "finished"

    # one ring across the nodes: bit-identical weights on every rank after every epoch
    lines = {r: (run_dir / "weights" / f"rank-{r}.txt").read_text().split("\n") for r in range(4)}
    digests = {r: [l.split()[1] for l in filter(None, lines[r])] for r in range(4)}
    assert len(digests[0]) == 8 and all(digests[r] == digests[0] for r in range(4))
    epochs = epochs_of(run_dir)
    assert [e["epoch"] for e in epochs] == list(range(1, 9))
    assert epochs[-1]["loss"] < 0.7 * epochs[0]["loss"]
    metrics = json.loads((run_dir / "test_metrics.json").read_text())
    print(f"test metrics: {json.dumps(metrics)[:600]}")
    # the run directory on the shared volume is complete, written by ranks on every node
    for name in ("test_metrics.json", "checkpoints/epoch-00008", "spec.json", "plan.json",
                 *(f"logs/rank-{r}.log" for r in range(4)),
                 *(f"logs/container-rank-{r}.log" for r in range(4))):
        assert (run_dir / name).exists(), name
    assert json.loads((run_dir / "state.json").read_text())["state"] == "finished"
    assert leftovers(cluster.clients, record["job_id"]) == []

    # every node has it now: push-nodes compares the ids and sends nothing
    push = autocnnp(cluster, "image", "push-nodes", "cluster_job.xml", cwd=job_dir, timeout=120)
    assert push.returncode == 0, push.stderr
    assert push.stdout.splitlines() == [f"  {node}: has autocnnp:cpu ({image_id[:19]})"
                                        for node in ("acnp-n2", "acnp-n3")]


def test_status_and_logs_see_every_node_and_stop_after_a_killed_launcher(cluster, cluster_image,
                                                                          job_dir):
    slow_job(job_dir, end_epoch=60)
    proc, _, errors = start(cluster, "run", "cluster_job.xml", cwd=job_dir)
    try:
        run_dir = wait_for_epochs(proc, job_dir, 1, errors)
        job_id = json.loads((run_dir / "swarm.json").read_text())["job_id"]

        status = autocnnp(cluster, "status", str(run_dir), "--format", "json", cwd=job_dir,
                          timeout=60)
        assert status.returncode == 0, status.stderr
        tasks = [t for t in json.loads(status.stdout)["swarm"]["tasks"] if t["rank"] is not None]
        # where the swarm really runs them
        assert [(t["rank"], t["node"], t["state"]) for t in tasks] == [
            (0, "acnp-n1", "running"), (1, "acnp-n1", "running"), (2, "acnp-n2", "running"),
            (3, "acnp-n3", "running")]
        text = autocnnp(cluster, "status", str(run_dir), cwd=job_dir, timeout=60)
        for rank, node in ((0, "acnp-n1"), (2, "acnp-n2"), (3, "acnp-n3")):
            assert f"  rank {rank}: running on {node}" in text.stdout, text.stdout

        logs = autocnnp(cluster, "logs", str(run_dir), "--rank", "3", cwd=job_dir, timeout=60)
        assert logs.returncode == 0, logs.stderr
        # rank 3 ran on acnp-n3: its worker log on the shared volume, its container output
        # streamed by the manager
        assert "==> rank-3.log <==" in logs.stdout and "rank 3 INFO" in logs.stdout
        assert "slot 1 -> rank 3/4 (local 0/1, cross 2/3, host acnp-n3)" in logs.stdout

        proc.send_signal(signal.SIGKILL)          # the launcher dies: nobody cleans up ...
        proc.wait(timeout=30)
        assert cluster.manager.services.list(filters={"label": f"autocnnp.job={job_id}"})
        stop = autocnnp(cluster, "stop", str(run_dir), cwd=job_dir, timeout=180)   # ... but stop
    finally:
        if proc.poll() is None:
            proc.kill()
    assert stop.returncode == 0, stop.stderr
    assert stop.stdout.startswith(f"stopped swarm job {job_id}")
    assert json.loads((run_dir / "state.json").read_text())["state"] == "stopped"
    assert leftovers(cluster.clients, job_id) == []


def test_a_dead_node_fails_the_job_fast_and_resume_finishes_on_the_nodes_left(
        cluster, cluster_image, job_dir):
    slow_job(job_dir, end_epoch=12)
    proc, lines, errors = start(cluster, "run", "cluster_job.xml", cwd=job_dir)
    try:
        run_dir = wait_for_epochs(proc, job_dir, 2, errors)
        job_id = json.loads((run_dir / "swarm.json").read_text())["job_id"]
        cluster.script("kill-node", "acnp-n3")    # its dockerd stops: the node is gone
        killed = time.monotonic()
        proc.wait(timeout=120)
        to_exit = time.monotonic() - killed
        time.sleep(1)
        stderr = "".join(errors)
    finally:
        if proc.poll() is None:
            proc.kill()
    print("".join(f"{t - killed:+7.1f} s  {line}" for t, line in lines[-8:]))
    announced = [t - killed for t, line in lines if f"swarm job {job_id} failed after" in line]
    print(f"\nnode killed -> failure reported: {announced[0] if announced else float('nan'):.1f} s"
          f", -> launcher exit: {to_exit:.1f} s\n{stderr[-2000:]}")
    assert proc.returncode == 1
    assert announced and announced[0] < 30
    # named by its daemon's silence (or by the manager, had it marked the node down first)
    assert re.search(r"error: node acnp-n3 is (unreachable \(its Docker daemon at "
                     r"tcp://10\.78\.0\.13:2375 does not answer|down \(heartbeat failure)\): "
                     r"rank\(s\) 3 ran there; the job cannot go on without them\n", stderr), stderr
    assert "could not remove everything" not in stderr
    state = json.loads((run_dir / "state.json").read_text())
    assert (state["state"], state["failed_rank"], state["failed_host"]) == ("failed", 3, "acnp-n3")
    alive = cluster.alive()
    assert sorted(alive) == ["acnp-n1", "acnp-n2"]
    assert leftovers(alive, job_id) == []
    finished_before = epochs_of(run_dir)
    assert len(finished_before) >= 2

    started = time.monotonic()
    resumed = autocnnp(cluster, "run", "--resume", str(run_dir), cwd=job_dir)
    print(f"resume: {time.monotonic() - started:.0f} s\n{resumed.stdout[-3000:]}\n"
          f"{resumed.stderr[-2000:]}")
    assert resumed.returncode == 0, resumed.stderr
    # on the nodes left: acnp-n3 is down, so the new plan leaves it out
    placed = {s["rank"]: s["node"] for s in
              json.loads((run_dir / "swarm.json").read_text())["plan"]["ranks"]}
    assert sorted(set(placed.values())) == ["acnp-n1", "acnp-n2"]
    epochs = epochs_of(run_dir)
    # no finished epoch lost: every epoch finished before the node died is still recorded as it
    # was, and training went on from there to the end
    assert epochs[:len(finished_before)] == finished_before
    assert sorted({e["epoch"] for e in epochs}) == list(range(1, 13))
    first_resumed = epochs[len(finished_before)]["epoch"]
    assert first_resumed == finished_before[-1]["epoch"] + 1, (first_resumed, finished_before)
    assert json.loads((run_dir / "state.json").read_text())["state"] == "finished"
    assert leftovers(cluster.alive(), job_id) == []
