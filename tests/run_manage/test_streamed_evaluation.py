"""The streamed, sharded test evaluation equals the in-memory one exactly, on the quickstart's
test split (30 MNI152 slices at 128x128) with a model trained on real MPI ranks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mpi_runs import launch, mpirun_available, write_run

from autocnnp.components.demo_data import build_demo_dataset

pytestmark = [pytest.mark.slow, pytest.mark.mpi,
              pytest.mark.skipif(not mpirun_available(), reason="needs mpirun (openmpi-bin)")]


def test_streamed_evaluation_equals_in_memory_evaluation(tmp_path: Path) -> None:
    import tensorflow as tf

    from autocnnp.components.datasets import load_split
    from autocnnp.components.segeval import SegEvaluator
    from autocnnp.components.training import predict_labels

    data = tmp_path / "mni152"
    build_demo_dataset(data)  # the quickstart's data: 90/30/30 slices at 128x128
    batch = 4  # 30 test slices: 8 batches, dealt to 2 ranks, the last one short
    run_dir = write_run(tmp_path / "run", data, lr=0.05, batch=batch, epochs=1, test=True,
                        cache="none", optimizer="adam")
    proc = launch(run_dir, 2, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    streamed = json.loads((run_dir / "test_metrics.json").read_text())

    # the evaluation as it was: one process, the whole split in memory
    test = load_split(data / "test", num_classes=3)
    model = tf.keras.models.load_model(str(run_dir / "model"), compile=False)
    pred = predict_labels(model, test.images, batch)
    evaluator = SegEvaluator(3, hd95=True,
                             class_names=dict(enumerate(("background", "grey matter",
                                                         "white matter"))))
    for i in range(len(test)):
        evaluator.add(test.masks[i], pred[i], name=test.names[i])
    in_memory = json.loads(json.dumps(evaluator.result().to_dict()))

    assert streamed["samples"] == 30
    assert 0 < streamed["means"]["mean_dice"] < 1  # a real, imperfect model
    for key, value in in_memory.items():
        assert streamed[key] == value, key  # exact: confusion, every metric, HD95
