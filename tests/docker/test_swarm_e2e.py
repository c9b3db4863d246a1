"""Real swarm jobs: a one-node swarm, the CPU image, 2 ranks as Swarm tasks on an overlay
network running the real worker (``python -m autocnnp.run_manage.worker``).

What is asserted is the behaviour users rely on: the ranks allreduce (their weights are
bit-identical after every epoch while each trains on its own shard; the loss decreases), the
run directory comes back complete, nothing of the job is left in the swarm afterwards, and a
rank killed in the middle of training fails the job within seconds, naming the rank, the node
and the reason, after which ``--resume`` completes the run from its last checkpoint.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def autocnnp(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autocnnp", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def the_run_dir(job_dir: Path) -> Path:
    runs = [p for p in (job_dir / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def no_run_dir_left(job_dir: Path, stdout: str) -> str:
    """A job refused by the pre-flight leaves no run directory (nothing ran); returns the run
    name the launcher announced (``run dir: PATH``)."""
    runs = job_dir / "runs"
    assert not runs.exists() or not [p for p in runs.iterdir() if p.is_dir()]
    announced = [line for line in stdout.splitlines() if line.startswith("run dir: ")]
    assert announced, stdout  # the launcher's line first; the plan repeats it
    return Path(announced[0].removeprefix("run dir: ").strip()).name


def weight_lines(run_dir: Path, rank: int) -> dict[int, tuple[str, float]]:
    lines = (run_dir / "weights" / f"rank-{rank}.txt").read_text().split("\n")
    out = {}
    for line in filter(None, lines):
        epoch, digest, loss = line.split()
        out[int(epoch)] = (digest, float(loss))
    return out


def leftovers(client, job_id: str) -> list[str]:
    """Everything in the swarm still carrying the job's label or name."""
    label = {"label": f"autocnnp.job={job_id}"}
    found = [f"service {s.name}" for s in client.services.list(filters=label)]
    found += [f"network {n.name}" for n in client.networks.list(filters=label)]
    found += [f"secret {s.name}" for s in client.secrets.list(filters=label)]
    found += [f"config {c.name}" for c in client.configs.list(filters=label)]
    found += [f"container {c.name}" for c in client.containers.list(all=True, filters=label)]
    prefix = json.dumps(job_id)[1:-1].lower().replace("_", "-")
    found += [f"service {s.name}" for s in client.services.list() if prefix in s.name]
    found += [f"network {n.name}" for n in client.networks.list() if prefix in n.name]
    found += [f"secret {s.name}" for s in client.secrets.list() if prefix in s.name]
    return found


def this_node(client) -> str:
    node_id = client.info()["Swarm"]["NodeID"]
    return client.nodes.get(node_id).attrs["Description"]["Hostname"]


def test_swarm_job_allreduces_returns_run_dir_and_cleans_up(swarm, cpu_image, job_dir):
    started = time.monotonic()
    proc = autocnnp("run", "swarm_small.xml", cwd=job_dir)
    seconds = time.monotonic() - started
    print(f"\nswarm job: {seconds:.0f} s\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    assert proc.returncode == 0, proc.stderr
    run_dir = the_run_dir(job_dir)
    record = json.loads((run_dir / "swarm.json").read_text())
    job_id = record["job_id"]

    # 2 ranks, as tasks of one rank service on this node, over the job's overlay network
    assert f"rank 0 -> node {this_node(swarm)}" in proc.stdout
    assert f"rank 1 -> node {this_node(swarm)}" in proc.stdout
    assert record["created"]["networks"] == [f"autocnnp-{job_id.lower().replace('_', '-')}"]
    assert len(record["created"]["secrets"]) == 1
    assert len(record["created"]["services"]) == 2
    assert record["state"] == "finished"
    # plan.json records the layout that ran (after pre-flight placed the ranks on nodes)
    assert json.loads((run_dir / "plan.json").read_text()) == record["plan"]

    # the ranks really allreduce: bit-identical weights after every epoch, which change
    rank0, rank1 = weight_lines(run_dir, 0), weight_lines(run_dir, 1)
    assert sorted(rank0) == sorted(rank1) == [1, 2, 3, 4, 5, 6]
    assert [rank0[e][0] for e in rank0] == [rank1[e][0] for e in rank0]
    assert len({digest for digest, _ in rank0.values()}) == 6
    # ... and learn
    epochs = [json.loads(line) for line in (run_dir / "metrics" / "epochs.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4, 5, 6]
    assert epochs[-1]["loss"] < 0.7 * epochs[0]["loss"]

    # the run directory came back, with what every rank and rank 0 wrote
    for name in ("test_metrics.json", "logs/rank-0.log", "logs/rank-1.log",
                 "logs/container-rank-0.log", "logs/container-rank-1.log", "checkpoints/epoch-00006"):
        assert (run_dir / name).exists(), name
    assert json.loads((run_dir / "state.json").read_text())["state"] == "finished"
    assert "slot 2 -> rank 1/2" in (run_dir / "logs" / "container-rank-1.log").read_text()

    assert leftovers(swarm, job_id) == []


def kill_rank_1_once_trained(swarm, job_dir: Path, config: str, epochs: int) -> Path:
    """Start ``autocnnp run config``; once rank 1 has finished ``epochs`` epochs and a checkpoint
    exists, SIGKILL rank 1's container. Asserts that the launcher reports the failure within
    10 s, naming the rank, the node and the reason, exits after its cleanup within 20 s,
    records the failure and leaves nothing of the job in the swarm; returns the run directory."""
    proc = subprocess.Popen([sys.executable, "-m", "autocnnp", "run", config],
                            cwd=job_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []     # stdout lines with the time they arrived
    errors: list[str] = []
    readers = [threading.Thread(target=lambda: lines.extend((time.monotonic(), line)
                                                            for line in proc.stdout), daemon=True),
               threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True)]
    for reader in readers:
        reader.start()
    try:
        # wait until training is under way: rank 1 has finished its epochs, a checkpoint exists
        deadline = time.monotonic() + 300
        run_dir = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, "".join(errors)
            if (job_dir / "runs").exists() and any((job_dir / "runs").iterdir()):
                run_dir = the_run_dir(job_dir)
                probe = run_dir / "weights" / "rank-1.txt"
                if probe.exists() and len(probe.read_text().splitlines()) >= epochs and \
                        any((run_dir / "checkpoints").glob("epoch-*")):
                    break
            time.sleep(0.5)
        else:
            pytest.fail(f"training did not reach epoch {epochs} within 300 s")
        job_id = json.loads((run_dir / "swarm.json").read_text())["job_id"]

        victims = [c for c in swarm.containers.list(filters={"label": f"autocnnp.job={job_id}"})
                   if c.labels.get("autocnnp.role") == "ranks"
                   and c.labels["com.docker.swarm.task.name"].split(".")[1] == "2"]
        assert len(victims) == 1, [c.name for c in victims]
        victims[0].kill()                       # SIGKILL: rank 1's container dies
        killed = time.monotonic()
        proc.wait(timeout=120)
        to_exit = time.monotonic() - killed
        for reader in readers:
            reader.join(timeout=10)
        stderr = "".join(errors)
    finally:
        if proc.poll() is None:
            proc.kill()
    print("".join(f"{t - killed:+7.1f} s  {line}" for t, line in lines[-8:]))
    announced = [t - killed for t, line in lines if f"swarm job {job_id} failed after" in line]
    print(f"\nkill -> failure reported: {announced[0] if announced else float('nan'):.1f} s, "
          f"-> launcher exit (cleanup done): {to_exit:.1f} s\n{stderr[-2000:]}")
    assert proc.returncode == 1
    assert announced and announced[0] < 10
    assert to_exit < 20
    node = this_node(swarm)
    assert f"rank 1 on node {node} failed: task: non-zero exit (137) (killed by SIGKILL)" in stderr
    assert f"autocnnp run --resume {run_dir}" in stderr
    state = json.loads((run_dir / "state.json").read_text())
    assert (state["state"], state["failed_rank"], state["failed_host"]) == ("failed", 1, node)
    assert leftovers(swarm, job_id) == []
    return run_dir


def test_killed_rank_fails_fast_cleans_up_and_resume_completes(swarm, cpu_image, job_dir):
    config = job_dir / "swarm_small.xml"
    text = config.read_text()
    text = text.replace('name="WeightsProbe"', 'name="SlowWeightsProbe"')
    text = text.replace('<property name="end_epoch">6</property>', '<property name="end_epoch">12</property>')
    config.write_text(text)

    run_dir = kill_rank_1_once_trained(swarm, job_dir, "swarm_small.xml", epochs=3)
    job_id = json.loads((run_dir / "swarm.json").read_text())["job_id"]
    done_before = max(weight_lines(run_dir, 0))
    lines_before = len((run_dir / "weights" / "rank-0.txt").read_text().splitlines())

    started = time.monotonic()
    resumed = autocnnp("run", "--resume", str(run_dir), cwd=job_dir)
    print(f"resume: {time.monotonic() - started:.0f} s\n{resumed.stdout[-2000:]}\n{resumed.stderr[-2000:]}")
    assert resumed.returncode == 0, resumed.stderr
    epochs = [json.loads(line) for line in (run_dir / "metrics" / "epochs.jsonl").read_text().splitlines()]
    assert epochs[-1]["epoch"] == 12
    rank0, rank1 = weight_lines(run_dir, 0), weight_lines(run_dir, 1)
    assert max(rank0) == max(rank1) == 12
    first_resumed = int((run_dir / "weights" / "rank-0.txt").read_text().splitlines()[lines_before].split()[0])
    assert 1 < first_resumed <= done_before + 1     # continued from a checkpoint, not from scratch
    resumed_epochs = [e for e in rank0 if e > done_before]
    assert resumed_epochs and all(rank0[e][0] == rank1[e][0] for e in resumed_epochs)
    assert json.loads((run_dir / "state.json").read_text())["state"] == "finished"
    assert leftovers(swarm, job_id) == []


def test_more_gpus_than_the_swarm_has_is_refused_before_anything_is_created(swarm, job_dir):
    config = job_dir / "swarm_small.xml"
    config.write_text(config.read_text().replace(
        '<property name="threads_per_rank">1</property>',
        '<property name="threads_per_rank">1</property>\n      <property name="gpus_per_rank">1</property>'))
    services_before = {s.id for s in swarm.services.list()}
    networks_before = {n.id for n in swarm.networks.list()}
    secrets_before = {s.id for s in swarm.secrets.list()}

    proc = autocnnp("run", "swarm_small.xml", cwd=job_dir, timeout=300)

    run_name = no_run_dir_left(job_dir, proc.stdout)
    node = this_node(swarm)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.endswith(
        f"autocnnp run: error: cannot place swarm job {run_name}: 2 ranks x 1 NVIDIA-GPU need "
        f"2 GPUs on ready nodes, but the swarm has 0 ({node}: 0); missing 2 GPUs\n"
        f"  remedy: add GPU nodes to the swarm (declare their GPUs as NVIDIA-GPU generic resources "
        f"in /etc/docker/daemon.json and label them, see containers/README.md)\n")
    assert {s.id for s in swarm.services.list()} == services_before
    assert {n.id for n in swarm.networks.list()} == networks_before
    assert {s.id for s in swarm.secrets.list()} == secrets_before


def test_a_network_the_swarm_lacks_is_refused_before_anything_is_created(swarm, job_dir):
    config = job_dir / "swarm_small.xml"
    config.write_text(config.read_text().replace(
        '<property name="threads_per_rank">1</property>',
        '<property name="threads_per_rank">1</property>\n'
        '      <property name="network">autocnnp-no-such-net</property>'))
    services_before = {s.id for s in swarm.services.list()}
    networks_before = {n.id for n in swarm.networks.list()}
    secrets_before = {s.id for s in swarm.secrets.list()}

    proc = autocnnp("run", "swarm_small.xml", cwd=job_dir, timeout=300)

    no_run_dir_left(job_dir, proc.stdout)
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.endswith(
        "autocnnp run: error: network autocnnp-no-such-net (the network property of "
        "<deployment>) does not exist on this swarm\n"
        "  remedy: create it: docker network create --driver overlay --attachable "
        "autocnnp-no-such-net; or remove the network property of <deployment> so autocnnp "
        "makes one per job\n")
    assert {s.id for s in swarm.services.list()} == services_before
    assert {n.id for n in swarm.networks.list()} == networks_before
    assert {s.id for s in swarm.secrets.list()} == secrets_before


def test_status_logs_and_stop_of_a_running_swarm_job(swarm, cpu_image, job_dir):
    config = job_dir / "swarm_small.xml"
    config.write_text(config.read_text()
                      .replace('name="WeightsProbe"', 'name="SlowWeightsProbe"')
                      .replace('<property name="end_epoch">6</property>',
                               '<property name="end_epoch">40</property>'))
    proc = subprocess.Popen([sys.executable, "-m", "autocnnp", "run", "swarm_small.xml"],
                            cwd=job_dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            runs = job_dir / "runs"
            if runs.exists() and any(runs.iterdir()):
                probe = the_run_dir(job_dir) / "weights" / "rank-1.txt"
                if probe.exists() and probe.read_text().strip():
                    break
            time.sleep(0.5)
        else:
            pytest.fail("training did not start within 300 s")
        run_dir = the_run_dir(job_dir)
        job_id = json.loads((run_dir / "swarm.json").read_text())["job_id"]

        status = autocnnp("status", str(run_dir), "--format", "json", cwd=job_dir, timeout=60)
        assert status.returncode == 0, status.stderr
        tasks = json.loads(status.stdout)["swarm"]["tasks"]
        assert [(t["rank"], t["state"]) for t in tasks if t["rank"] is not None] == \
            [(0, "running"), (1, "running")]
        text = autocnnp("status", str(run_dir), cwd=job_dir, timeout=60)
        assert text.stdout.startswith(f"{run_dir.name}: running")
        assert f"  rank 0: running on {tasks[0]['node']}" in text.stdout
        assert f"  rank 1: running on {tasks[1]['node']}" in text.stdout

        logs = autocnnp("logs", str(run_dir), "--rank", "1", cwd=job_dir, timeout=60)
        assert logs.returncode == 0, logs.stderr
        assert "slot 2 -> rank 1/2" in logs.stdout and "rank 1 INFO" in logs.stdout

        # autocnnp watch (issue 14) on the running swarm job: one frame shows both ranks; the
        # following watch ends by itself when the job is stopped
        frame = autocnnp("watch", str(run_dir), "--once", cwd=job_dir, timeout=60)
        assert frame.returncode == 0, frame.stderr
        assert frame.stdout.startswith(f"{run_dir.name}  running  epochs done "), frame.stdout
        rows = [line.split() for line in frame.stdout.splitlines()
                if line.split()[:1] in (["0"], ["1"])]
        assert [r[0] for r in rows] == ["0", "1"], frame.stdout
        watch = subprocess.Popen([sys.executable, "-m", "autocnnp", "watch", str(run_dir),
                                  "--interval", "0.5"], cwd=job_dir, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)

        stop = autocnnp("stop", str(run_dir), cwd=job_dir, timeout=120)
        assert stop.returncode == 0, stop.stderr
        assert stop.stdout.startswith(f"stopped swarm job {job_id}")
        stderr = proc.communicate(timeout=60)[1]
        watched, _ = watch.communicate(timeout=60)
        assert watch.returncode == 1  # the job ended, stopped: not a success
        assert f"{run_dir.name}: stopped" in watched, watched
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert f"swarm job {job_id} was stopped (autocnnp stop)" in stderr
    assert json.loads((run_dir / "state.json").read_text())["state"] == "stopped"
    assert leftovers(swarm, job_id) == []


def test_image_probe_reports_the_nodes_an_image_cannot_start_on(swarm, cpu_image, job_dir):
    """The pre-flight check for remote nodes, run here against this node: a one-task job per
    node that starts the image. ``localhost:1/...`` makes the failed pull stay on loopback."""
    from autocnnp.engine.plan_swarm import build_swarm_plan
    from autocnnp.generator.assembly import load_checked_spec
    from autocnnp.run_manage.swarm import SwarmBackend

    backend = SwarmBackend(swarm)
    nodes = backend.nodes()
    spec = load_checked_spec(job_dir / "swarm_small.xml", [])
    here = [n for n in nodes if n.is_self]
    plan = build_swarm_plan(spec, job_dir / "runs" / "probe", "probe-test", nodes)
    assert backend.probe_image(plan, here, timeout_s=120) == []

    missing = spec.replace(deployment=spec.deployment.__class__(
        **{**spec.deployment.__dict__, "image": "localhost:1/autocnnp:absent"}))
    plan = build_swarm_plan(missing, job_dir / "runs" / "probe", "probe-test", nodes)
    (problem,) = backend.probe_image(plan, here, timeout_s=120)
    assert problem.startswith(f"{here[0].name}: ")
    assert "localhost:1/autocnnp:absent" in problem or "No such image" in problem, problem
    assert leftovers(swarm, "probe-test") == []


def start_and_wait_for_training(job_dir: Path, config: str) -> tuple[subprocess.Popen, Path]:
    """Start ``autocnnp run config`` and return once rank 1 has finished an epoch."""
    proc = subprocess.Popen([sys.executable, "-m", "autocnnp", "run", config], cwd=job_dir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        runs = job_dir / "runs"
        if runs.exists() and any(runs.iterdir()):
            probe = the_run_dir(job_dir) / "weights" / "rank-1.txt"
            if probe.exists() and probe.read_text().strip():
                return proc, the_run_dir(job_dir)
        time.sleep(0.5)
    proc.kill()
    pytest.fail("training did not start within 300 s")


def test_a_sigkilled_launcher_leaves_an_observable_job_that_stop_removes(swarm, cpu_image, job_dir):
    """Issue 10 item 4 on swarm: the launcher's SIGKILL cannot take the job down; status tells
    the truth (tasks running, launcher gone, the remedy) and ``autocnnp stop RUN`` leaves
    nothing of the job in the swarm; then ``--resume`` finishes the run."""
    config = job_dir / "swarm_small.xml"
    config.write_text(config.read_text()
                      .replace('name="WeightsProbe"', 'name="SlowWeightsProbe"')
                      .replace('<property name="end_epoch">6</property>',
                               '<property name="end_epoch">20</property>'))
    proc, run_dir = start_and_wait_for_training(job_dir, "swarm_small.xml")
    proc.kill()  # SIGKILL: no handler runs, nothing is cleaned up by the launcher
    proc.wait(timeout=30)
    job_id = json.loads((run_dir / "swarm.json").read_text())["job_id"]

    status = autocnnp("status", str(run_dir), cwd=job_dir, timeout=60)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"{run_dir.name}: running"), status.stdout
    assert (f"  launcher: gone: the job's tasks run on without it; stop them with: autocnnp "
            f"stop {run_dir} (then autocnnp run --resume {run_dir})") in status.stdout
    assert "  rank 0: running on " in status.stdout and "  rank 1: running on " in status.stdout
    assert leftovers(swarm, job_id), "the job's services should still run after the SIGKILL"

    stop = autocnnp("stop", str(run_dir), cwd=job_dir, timeout=120)
    assert stop.returncode == 0, stop.stderr
    assert stop.stdout.startswith(f"stopped swarm job {job_id} (")
    assert json.loads((run_dir / "state.json").read_text())["state"] == "stopped"
    assert leftovers(swarm, job_id) == []

    resume = autocnnp("run", "--resume", str(run_dir), cwd=job_dir, timeout=900)
    assert resume.returncode == 0, resume.stderr
    epochs = [json.loads(line)["epoch"] for line in
              (run_dir / "metrics" / "epochs.jsonl").read_text().splitlines() if line.strip()]
    assert epochs == list(range(1, 21))
    assert json.loads((run_dir / "state.json").read_text())["state"] == "finished"


def test_stop_after_a_sigkilled_launcher_whose_job_finished_records_finished(swarm, cpu_image,
                                                                            job_dir):
    """The ranks finish after the launcher's SIGKILL: ``stop`` removes what the launcher left
    and records the truth (finished, from rank 0's completion record), not "stopped"."""
    proc, run_dir = start_and_wait_for_training(job_dir, "swarm_small.xml")
    proc.kill()
    proc.wait(timeout=30)
    job_id = json.loads((run_dir / "swarm.json").read_text())["job_id"]
    deadline = time.monotonic() + 600
    while not (run_dir / "completed.json").exists():
        assert time.monotonic() < deadline, "rank 0 did not record its completion in 600 s"
        time.sleep(1)
    stop = autocnnp("stop", str(run_dir), cwd=job_dir, timeout=120)
    assert stop.returncode == 0, stop.stderr
    assert stop.stdout.startswith(f"swarm job {job_id} had finished (rank 0 recorded its "
                                  f"completion at "), stop.stdout
    state = json.loads((run_dir / "state.json").read_text())
    assert state["state"] == "finished", state
    assert leftovers(swarm, job_id) == []
    assert (run_dir / "test_metrics.json").exists()
