"""MONAI's networks by name on the torch engine (``<CNN_archi><name>monai.UNet</name>``): what
validate says without importing MONAI and what a rank builds (the real training:
tests/run_manage/test_monai_training.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from autocnnp.components.models.contract import ArchitectureError
from autocnnp.components.models.torch_user import build_torch_model
from autocnnp.engine.spec import ArchitectureSpec
from autocnnp.engine.validate import load_spec
from autocnnp.engine.vocabulary import monai_networks
from autocnnp.errors import ConfigError

CONFIG = """<system_config>
  <task name="imaging_segmentation">
    <parallelism-degree>1</parallelism-degree>
    <CNN-Parallelism-Generator><module name="train_strategy_def"><action class="extensible" type="dist_strategy"><value>{strategy}</value></action></module></CNN-Parallelism-Generator>
    <CNN_archi><name>{name}</name><param name="channels">4 8 16</param><param name="strides">2 2</param></CNN_archi>
    <data format="pairs"><train><path>{data}</path></train><classes>background grey white</classes></data>
    <hyperparameters><property name="minibatch_size">2</property></hyperparameters>
  </task>
</system_config>
"""


def write(tmp_path: Path, name: str, strategy: str = "torch_ddp") -> Path:
    path = tmp_path / "monai.xml"
    path.write_text(CONFIG.format(name=name, strategy=strategy, data=tmp_path))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    return [str(p) for p in err.value.problems]


def test_validate_reads_monai_networks_without_importing_monai(tmp_path: Path) -> None:
    assert {"UNet", "SegResNet", "BasicUNet"} <= set(monai_networks())
    spec = load_spec(write(tmp_path, "monai.UNet"))
    assert spec.architecture.name == "monai.UNet"
    assert spec.architecture.params == {"channels": "4 8 16", "strides": "2 2"}
    # in a fresh interpreter: validate and plan import neither MONAI nor torch
    code = ("import sys; from autocnnp.cli import main; rc = main(['plan', sys.argv[1]]); "
            "print(rc, sorted(m for m in ('monai', 'torch') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code, str(write(tmp_path, "monai.UNet"))],
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "0 []", proc.stdout + proc.stderr


def test_the_default_swarm_image_has_no_monai_and_validate_says_so(tmp_path: Path) -> None:
    path = write(tmp_path, "monai.UNet")
    path.write_text(path.read_text().replace(
        "</hyperparameters>", '</hyperparameters><deployment backend="swarm"/>'))
    assert problems(path) == [
        f"{path}:5: <CNN_archi/name>: monai.UNet needs MONAI in the ranks' image, and "
        "autocnnp:cpu-torch (the swarm default for torch_ddp) has none; build one FROM "
        "autocnnp:cpu-torch that adds monai (constraints.txt) and name it with "
        '<property name="image"> in <deployment>']
    path.write_text(path.read_text().replace(
        '<deployment backend="swarm"/>',
        '<deployment backend="swarm"><property name="image">lab/torch-monai:1</property></deployment>'))
    assert load_spec(path).deployment.image == "lab/torch-monai:1"


def test_an_unknown_network_and_the_wrong_engine_are_errors_at_the_name_line(tmp_path: Path) -> None:
    path = write(tmp_path, "monai.SegResNett")
    assert problems(path) == [f"{path}:5: <name>: unknown MONAI network 'monai.SegResNett'; "
                              "did you mean 'monai.SegResNet'?"]
    path = write(tmp_path, "monai.UNet", strategy="ring_allreduce")
    assert problems(path) == [f"{path}:5: <CNN_archi/name>: monai.UNet is a MONAI (PyTorch) "
                              "network, but dist_strategy ring_allreduce runs the horovod "
                              "engine; use dist_strategy torch_ddp"]


@pytest.mark.slow   # importing MONAI imports torch and, through torch.utils.tensorboard, TensorFlow
def test_the_rank_builds_the_network_for_2d_images_with_a_softmax() -> None:
    arch = ArchitectureSpec(name="monai.UNet", params={"channels": "4 8 16", "strides": "2 2"})
    model = build_torch_model(arch, (32, 32, 1), 3)
    unet = model[0]
    assert type(unet).__module__.startswith("monai.") and unet.dimensions == 2
    assert tuple(unet.channels) == (4, 8, 16) and tuple(unet.strides) == (2, 2)
    with torch.no_grad():
        out = model(torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 3, 32, 32)
    np.testing.assert_allclose(out.sum(dim=1).numpy(), 1.0, rtol=1e-5)
    # a network without required parameters takes MONAI's defaults
    seg = build_torch_model(ArchitectureSpec(name="monai.SegResNet", params={"init_filters": 8}),
                            (32, 32, 2), 3)
    assert seg[0].init_filters == 8 and seg[0].convInit.conv.in_channels == 2


@pytest.mark.slow
def test_a_parameter_the_network_does_not_take_names_the_ones_it_does() -> None:
    with pytest.raises(ArchitectureError) as err:
        build_torch_model(ArchitectureSpec(name="monai.SegResNet", params={"depth": 3}), (32, 32, 1), 3)
    assert str(err.value).startswith("architecture monai.SegResNet: TypeError: ")
    assert "init_filters" in err.value.remedy and "spatial_dims" not in err.value.remedy
    with pytest.raises(ArchitectureError, match="in_channels come from the data"):
        build_torch_model(ArchitectureSpec(name="monai.UNet", params={"in_channels": 2}), (32, 32, 1), 3)
