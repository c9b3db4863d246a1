"""The swarm backend's error paths that need no swarm (a fake docker client): damaged run
files and docker refusals become one clean AutocnnpError, and cleanup removes all it can and
reports the rest in one message. The docker-side refusals are in test_swarm_e2e.py."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import docker.errors
import pytest

from autocnnp.errors import AutocnnpError, EnvironmentProblemError
from autocnnp.engine.rundir import update_json
from autocnnp.run_manage.swarm import SWARM_FILE, SwarmBackend

REPO = Path(__file__).resolve().parents[2]


def damaged_run_dir(tmp_path: Path) -> Path:
    run_dir = tmp_path / "runs" / "job-1"
    run_dir.mkdir(parents=True)
    (run_dir / "spec.json").write_text("{}")
    (run_dir / "state.json").write_text(json.dumps({"state": "running", "backend": "swarm"}))
    (run_dir / SWARM_FILE).write_text('{"job_id": "job-1", "plan": {')   # cut short
    return run_dir


def test_a_corrupt_swarm_json_is_a_one_line_error_naming_the_file(tmp_path):
    run_dir = damaged_run_dir(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "autocnnp", "stop", str(run_dir)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr == (f"autocnnp stop: error: {run_dir / SWARM_FILE}: not valid JSON at "
                           f"line 1 column 30; the run directory is damaged (repair or delete "
                           f"{SWARM_FILE})\n")


@pytest.mark.parametrize("name", [SWARM_FILE, "state.json"])
def test_updating_a_corrupt_run_file_names_it(tmp_path, name):
    path = tmp_path / name
    path.write_text("not json")
    with pytest.raises(AutocnnpError) as info:
        update_json(path, state="stopped")
    assert str(info.value).startswith(f"{path}: not valid JSON at line 1 column 1;")
    assert path.read_text() == "not json"        # left as it was


class Item:
    def __init__(self, name: str, error: Exception | None = None, log: list | None = None):
        self.name, self.error, self.log = name, error, log if log is not None else []

    def remove(self, force: bool = False) -> None:
        if self.error is not None:
            raise self.error
        self.log.append(self.name)

    def kill(self) -> None:
        pass


class Collection:
    def __init__(self, items: list[Item] | Exception = ()):
        self.items = items

    def list(self, **_):
        if isinstance(self.items, Exception):
            raise self.items
        return [i for i in self.items if i.name not in i.log]


class FakeClient:
    def __init__(self, **collections: Collection):
        for kind in ("services", "containers", "secrets", "configs", "networks"):
            setattr(self, kind, collections.get(kind, Collection([])))


def test_cleanup_removes_all_it_can_and_reports_the_rest_in_one_message():
    gone: list[str] = []
    in_use = docker.errors.APIError("409 Conflict", explanation="network has active endpoints")
    client = FakeClient(
        services=Collection([Item("svc-a", log=gone),
                             Item("svc-b", docker.errors.APIError("500", explanation="boom"))]),
        secrets=Collection([Item("job-token", log=gone)]),
        configs=Collection(docker.errors.APIError("503", explanation="configs unavailable")),
        networks=Collection([Item("job-net", in_use)]))
    out = io.StringIO()
    backend = SwarmBackend(client, out=out)
    with pytest.raises(EnvironmentProblemError) as info:
        backend.cleanup("job-1", timeout_s=0.2)
    assert gone == ["svc-a", "job-token"]      # everything else was still removed
    assert info.value.message == (
        "could not remove everything swarm job job-1 created: service svc-b (boom); "
        "cannot list the job's configs (configs unavailable); "
        "network job-net (network has active endpoints)")
    assert "docker network ls" in info.value.remedy
    assert "removed service svc-a, secret job-token" in out.getvalue()


def test_cleanup_with_nothing_left_returns_quietly():
    assert SwarmBackend(FakeClient(), out=io.StringIO()).cleanup("job-1", timeout_s=0.2) == []


def test_a_service_name_taken_outside_the_job_is_a_clean_error_naming_it(tmp_path):
    from autocnnp.engine.plan_swarm import build_swarm_plan
    from autocnnp.engine.spec import (ArchitectureSpec, Backend, DataSpec, DeploymentSpec,
                                      TrainingSpec)

    spec = TrainingSpec(
        source=tmp_path / "small.xml", task="imaging_segmentation", parallelism_degree=2,
        architecture=ArchitectureSpec(name="unet"),
        data=DataSpec(train=Path("data/train"), valid=Path("data/valid"), test=None),
        deployment=DeploymentSpec(backend=Backend.SWARM, image="autocnnp:cpu"))
    plan = build_swarm_plan(spec, tmp_path, "job-1")
    record = tmp_path / SWARM_FILE
    record.write_text(json.dumps({"created": {"networks": [], "secrets": [], "services": []}}))

    class Creating:
        def __init__(self, error: Exception | None = None):
            self.error = error

        def create(self, *args, **kwargs):
            if self.error is not None:
                raise self.error
            return type("Created", (), {"id": "x1"})()

    client = FakeClient()
    client.networks = Creating()
    client.secrets = Creating()
    client.services = Creating(docker.errors.APIError(
        "409 Client Error", response=type("R", (), {"status_code": 409})(),
        explanation="name conflicts with an existing object"))
    with pytest.raises(EnvironmentProblemError) as info:
        SwarmBackend(client, out=io.StringIO())._create(plan, record)
    name = plan.services[0].name
    assert info.value.message.startswith(f"cannot create service {name} (")
    assert info.value.message.endswith(": name conflicts with an existing object")
    assert info.value.remedy == (f"a service named {name} exists without this job's label: "
                                 f"remove it (docker service rm {name}) or launch under another "
                                 f"run name")
    # what was created before is recorded, so cleanup finds it
    assert json.loads(record.read_text())["created"]["secrets"] == [plan.secrets[0].name]
