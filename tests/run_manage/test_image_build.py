"""The image build plans (pure, no docker): the torch image is the CPU image plus the torch
pinned in constraints.txt; `autocnnp image build --torch` plans the CPU image, then it."""

from __future__ import annotations

from pathlib import Path

import pytest

from autocnnp.cli import main
from autocnnp.errors import AutocnnpError, EnvironmentProblemError
from autocnnp.run_manage.image_build import (ImageBuildPlan, plan_image_build,
                                             torch_requirement)

REPO = Path(__file__).resolve().parents[2]


def test_the_torch_image_is_planned_on_the_cpu_image_with_the_pinned_torch():
    plan = plan_image_build(gpu=False, tag=None, base=None, ca_bundle=None, base_present=True,
                            source_root=REPO, horovod_wheels=(), torch=True)
    assert plan == ImageBuildPlan(
        flavour="cpu-torch", tag="autocnnp:cpu-torch",
        dockerfile=REPO / "containers" / "Dockerfile.torch", base="autocnnp:cpu",
        make_base=False, ca_bundle=None, constraints=REPO / "constraints.txt",
        horovod_wheels=(), source_root=REPO, containers_dir=REPO / "containers",
        labels={"org.autocnnp.flavour": "cpu-torch", "org.autocnnp.horovod": "0.28.1",
                "org.autocnnp.torch": "2.13.0+cpu"},
        torch_requirement="torch==2.13.0+cpu")
    assert str(plan).splitlines()[-1] == (
        "  torch:        torch==2.13.0+cpu from this machine's pip (pip download), with what it "
        "needs, carried in the build context")
    # the Dockerfile installs exactly that, from the context only
    dockerfile = plan.dockerfile.read_text()
    assert "ARG BASE=autocnnp:cpu" in dockerfile
    assert '--no-index --find-links /tmp/autocnnp-torch/wheels' in dockerfile


def test_torch_is_pinned_or_the_torch_image_is_refused(tmp_path):
    (tmp_path / "constraints.txt").write_text("numpy==1.26.4\ntorchvision==0.28.0\n")
    with pytest.raises(EnvironmentProblemError) as refused:
        torch_requirement(tmp_path / "constraints.txt")
    assert refused.value.message == (f"{tmp_path / 'constraints.txt'} pins no torch version, so "
                                     f"the torch image cannot be built")
    (tmp_path / "constraints.txt").write_text("torch == 2.13.0+cpu  # the CPU build\n")
    assert torch_requirement(tmp_path / "constraints.txt") == "torch==2.13.0+cpu"


def test_image_build_torch_plans_the_cpu_image_then_the_torch_layer(capsys):
    assert main(["image", "build", "--torch", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if line.startswith("image ")] == [
        "image autocnnp:cpu (cpu)", "image autocnnp:cpu-torch (cpu-torch)"]
    assert main(["image", "build", "--torch", "--base", "lab/autocnnp:cpu", "--tag",
                 "lab/autocnnp:cpu-torch", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == ["image lab/autocnnp:cpu-torch (cpu-torch)",
                       f"  dockerfile:   {REPO / 'containers' / 'Dockerfile.torch'}",
                       "  base:         lab/autocnnp:cpu"]


def test_a_gpu_torch_image_is_refused_saying_what_to_do(capsys):
    assert main(["image", "build", "--torch", "--gpu", "--dry-run"]) == 1
    assert capsys.readouterr().err == (
        "autocnnp image: error: --torch builds the CPU torch image on the CPU image; a GPU image "
        "with torch's CUDA build is not made by autocnnp at this version: build one FROM a CUDA "
        "torch image and name it in <deployment> (docs/torch.md)\n")
    with pytest.raises(AutocnnpError):
        plan_image_build(gpu=False, tag=None, base=None, ca_bundle=None, base_present=True,
                         source_root=REPO, horovod_wheels=(), torch=True,
                         torch_wheel=Path("/no/such.whl"))
