"""SegEval throughput on 512x512 masks, next to scikit-learn + MedPy doing the same work.

Data: real MNI152 tissue labels (3 classes), axial slices upsampled to 512x512 (nearest);
the "prediction" of slice z is the ground truth of slice z+2 (a realistic, imperfect mask).
Work per slice: confusion matrix, per-class Dice and IoU, pixel accuracy, and (in the full
row) per-class HD95. The reference computes the same numbers with
``sklearn.metrics.confusion_matrix``/``f1_score``/``jaccard_score`` and
``medpy.metric.binary.hd95``.
"""

from __future__ import annotations

import time

import numpy as np


def _data(n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    from autocnnp.components.datasets import resize_mask
    from autocnnp.components.demo_data import demo_volumes

    labels = demo_volumes()[1]
    zs = np.linspace(50, 120, n).astype(int)
    gts = [resize_mask(labels[:, :, z], 512).astype(np.int32) for z in zs]
    preds = [resize_mask(labels[:, :, z + 2], 512).astype(np.int32) for z in zs]
    return gts, preds


def _ours(gts: list[np.ndarray], preds: list[np.ndarray], hd95: bool) -> float:
    from autocnnp.components.segeval import SegEvaluator
    start = time.perf_counter()
    ev = SegEvaluator(3, hd95=hd95)
    for g, p in zip(gts, preds):
        ev.add(g, p)
    ev.result()
    return len(gts) / (time.perf_counter() - start)


def _reference(gts: list[np.ndarray], preds: list[np.ndarray], hd95: bool) -> float:
    from medpy.metric.binary import hd95 as medpy_hd95
    from sklearn.metrics import confusion_matrix, f1_score, jaccard_score
    start = time.perf_counter()
    for g, p in zip(gts, preds):
        gf, pf = g.ravel(), p.ravel()
        cm = confusion_matrix(gf, pf, labels=[0, 1, 2])
        f1_score(gf, pf, labels=[0, 1, 2], average=None, zero_division=0)
        jaccard_score(gf, pf, labels=[0, 1, 2], average=None, zero_division=0)
        np.trace(cm) / cm.sum()
        if hd95:
            for c in range(3):
                if (g == c).any() and (p == c).any():
                    medpy_hd95(p == c, g == c)
    return len(gts) / (time.perf_counter() - start)


def run(quick: bool = False) -> list[dict]:
    """Rows: overlap metrics only, and overlap + HD95, in slices per second."""
    gts, preds = _data(6 if quick else 30)
    rows = []
    for hd95, label in ((False, "segeval 512x512 overlap metrics"),
                        (True, "segeval 512x512 with HD95")):
        rows.append({"benchmark": label, "autocnnp": round(_ours(gts, preds, hd95), 2),
                     "reference": round(_reference(gts, preds, hd95), 2), "unit": "slices/s",
                     "reference_name": "scikit-learn" + ("+medpy" if hd95 else "")})
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
