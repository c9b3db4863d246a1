"""A MONAI network by name trained by two real torch engine ranks (Gloo over MPI-started ranks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import pytest
import torch

from mpi_runs import mpirun_available, torch_launch, write_run

from autocnnp.components.demo_data import build_demo_dataset
from autocnnp.components.models.torch_user import build_torch_model
from autocnnp.components.torch_training import load_model
from autocnnp.engine.spec import ActionChoice, ArchitectureSpec

pytestmark = [pytest.mark.slow, pytest.mark.mpi,
              pytest.mark.skipif(not mpirun_available(), reason="needs mpirun (openmpi-bin)")]
UNET = ArchitectureSpec(name="monai.UNet", params={"channels": "4 8", "strides": "2"})


def test_two_torch_ranks_train_a_monai_unet_and_save_it(tmp_path: Path) -> None:
    data = tmp_path / "mni"
    build_demo_dataset(data, size=32, n_slices=12)
    run = write_run(tmp_path / "run", data, lr=0.01, batch=4, ranks=2, epochs=2, optimizer="adam",
                    plugins=(ActionChoice(type="dist_strategy", implementation="torch_ddp"),),
                    test=True, architecture=UNET)
    proc = torch_launch(run, 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    epochs = [json.loads(line) for line in (run / "metrics" / "epochs.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2] and epochs[1]["loss"] < epochs[0]["loss"]
    assert json.loads((run / "test_metrics.json").read_text())["samples"] > 0
    meta = json.loads((run / "model" / "autocnnp.json").read_text())
    assert meta["architecture"] == "monai.UNet" and meta["engine"] == "torch"
    state = torch.load(run / "model" / "model.pt")
    model = build_torch_model(UNET, (32, 32, 1), 3)
    model.load_state_dict(state)   # the saved weights are the named network's, key for key
    # what `autocnnp predict` loads: the network rebuilt from autocnnp.json, the same outputs
    images = np.stack([np.load(p) for p in sorted((data / "test" / "images").glob("*.npy"))])
    images = images.reshape(*images.shape[:3], -1).astype(np.float32)
    predictor = load_model(run / "model", meta)
    model.eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())
    np.testing.assert_allclose(predictor.predict(images), expected.permute(0, 2, 3, 1).numpy(),
                               rtol=1e-5, atol=1e-6)
