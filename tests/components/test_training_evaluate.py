"""training.evaluate honours <evaluation><property name="metrics"> (no MPI, no real model)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from autocnnp.components import rank_runtime, segeval, training
from autocnnp.generator.context import Communicator, RankContext, SegmentationTask
from autocnnp.components.segeval import SegEvalResult


class _Split(SimpleNamespace):
    def __len__(self) -> int:
        return len(self.masks)

    def read_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.images[indices], self.masks[indices]


def _ctx(tmp_path: Path, metrics: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
         ) -> SimpleNamespace:
    rng = np.random.default_rng(0)
    masks = np.zeros((3, 16, 16), np.int32)
    masks[:, 4:10, 4:10] = 1
    masks[:, 10:14, 2:6] = 2
    pred = np.roll(masks, 1, axis=2)
    test = _Split(images=rng.random((3, 16, 16, 1)), masks=masks, names=["a", "b", "c"],
                  root=tmp_path / "test")
    monkeypatch.setattr(rank_runtime, "open_split", lambda ctx, which, cache="none": test)
    monkeypatch.setattr(training, "predict_labels",
                        lambda model, images, batch: pred[:len(images)])  # rows alike
    values = {"communicator": Communicator(0, 1, 0, 1, "h"), "model": object(),
              "task": SegmentationTask(("bg", "a", "b"), (16, 16, 1)),
              "hyperparameters": SimpleNamespace(batch_size=2)}
    spec = SimpleNamespace(data=SimpleNamespace(test=tmp_path / "test"),
                           evaluation=SimpleNamespace(metrics=metrics))
    return RankContext(spec=spec, run_dir=tmp_path, values=values, log=logging.getLogger("t"))


def test_hd95_only_when_selected_and_selection_is_saved(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = segeval.hausdorff_distance
    monkeypatch.setattr(segeval, "hausdorff_distance",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    metrics = training.evaluate(_ctx(tmp_path, ("dice", "mean_iou"), monkeypatch))
    assert calls == []  # HD95 not computed
    saved = json.loads((tmp_path / "test_metrics.json").read_text())
    assert saved["selected_metrics"] == ["dice", "mean_iou"] == metrics["selected_metrics"]
    assert saved["means"]["mean_hd95"] is None
    text = SegEvalResult.from_dict(saved).table(saved["selected_metrics"])
    assert text.splitlines()[0].split() == ["class", "dice", "iou", "support"]

    metrics = training.evaluate(_ctx(tmp_path, ("dice", "hd95"), monkeypatch))
    assert calls  # selected: computed
    assert metrics["selected_metrics"] == ["dice", "hd95"]
    assert metrics["means"]["mean_hd95"] == pytest.approx(1.0)
