"""SegEval against scikit-learn and MedPy, on random masks and real MNI152 tissue labels.

Definitions agree exactly with the references: Dice_i is scikit-learn's per-class F1 and
MedPy's ``dc``; IoU_i is ``jaccard_score``; pixel accuracy is ``accuracy_score``; mean
accuracy is ``balanced_accuracy_score`` (mean per-class recall over classes present in the
ground truth); HD95 is MedPy's ``hd95`` (same surface extraction and distance transform).
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from medpy.metric.binary import dc as medpy_dc
from medpy.metric.binary import hd95 as medpy_hd95
from PIL import Image
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import f1_score, jaccard_score

from autocnnp.components.demo_data import demo_volumes
from autocnnp.components.segeval import (SegEvalResult, SegEvaluator, confusion_matrix,
                                         evaluate_arrays, evaluate_batch, evaluate_paths,
                                         hausdorff_distance, write_csv, write_json,
                                         write_overlays)
from autocnnp.errors import DataError


@functools.lru_cache(maxsize=1)
def mni_labels() -> np.ndarray:
    return demo_volumes()[1]


def _blobs(rng: np.random.Generator, shape: tuple[int, ...], classes: int) -> np.ndarray:
    """Smooth random label maps (random noise is all surface; blobs look like masks)."""
    from scipy.ndimage import gaussian_filter
    fields = np.stack([gaussian_filter(rng.normal(size=shape), 4) for _ in range(classes)])
    return np.argmax(fields, axis=0).astype(np.int32)


def _real_pair() -> tuple[np.ndarray, np.ndarray]:
    """A real tissue slice and a plausible prediction (the labels of a neighbouring slice)."""
    labels = mni_labels()
    return labels[:, :, 80].astype(np.int32), labels[:, :, 83].astype(np.int32)


def _check_against_references(gt: np.ndarray, pred: np.ndarray, n: int,
                              spacing: tuple[float, ...] | None = None) -> None:
    result = evaluate_arrays(gt, pred, n, spacing)
    g, p = gt.ravel(), pred.ravel()
    np.testing.assert_array_equal(result.confusion, sk_confusion_matrix(g, p, labels=range(n)))
    present = np.array([(gt == c).any() or (pred == c).any() for c in range(n)])
    # scikit-learn scores an absent class 0 (zero_division); SegEval says NaN (undefined).
    f1 = np.where(present, f1_score(g, p, labels=range(n), average=None, zero_division=0),
                  np.nan)
    jac = np.where(present, jaccard_score(g, p, labels=range(n), average=None, zero_division=0),
                   np.nan)
    for c in range(n):
        per = result.per_class[c]
        if not present[c]:
            assert math.isnan(per["dice"]) and math.isnan(per["iou"])
            continue
        assert per["dice"] == pytest.approx(f1[c], abs=1e-6)
        assert per["iou"] == pytest.approx(jac[c], abs=1e-6)
        if (gt == c).any() and (pred == c).any():
            assert per["dice"] == pytest.approx(medpy_dc(pred == c, gt == c), abs=1e-6)
            assert per["hd95"] == pytest.approx(
                medpy_hd95(pred == c, gt == c, voxelspacing=spacing), abs=1e-6)
    assert result.means["pixel_accuracy"] == pytest.approx(accuracy_score(g, p), abs=1e-6)
    assert result.means["mean_accuracy"] == pytest.approx(balanced_accuracy_score(g, p), abs=1e-6)
    assert result.means["mean_iou"] == pytest.approx(np.nanmean(jac), abs=1e-6)
    assert result.means["mean_dice"] == pytest.approx(np.nanmean(f1), abs=1e-6)
    support = np.bincount(g, minlength=n)
    assert result.means["fw_iou"] == pytest.approx(
        np.nansum(support * np.nan_to_num(jac)) / support.sum(), abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_masks_agree_with_sklearn_and_medpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    gt = _blobs(rng, (96, 80), 4)
    pred = _blobs(rng, (96, 80), 4)
    _check_against_references(gt, pred, 4)
    _check_against_references(gt, pred, 4, spacing=(0.7, 1.9))


def test_real_tissue_slices_agree_with_sklearn_and_medpy() -> None:
    gt, pred = _real_pair()
    _check_against_references(gt, pred, 3)
    _check_against_references(gt, pred, 3, spacing=(1.0, 1.0))


def test_real_tissue_volume_hd95_in_physical_units_matches_medpy() -> None:
    labels = mni_labels()[60:120:2, 60:140:2, 70:100]
    shifted = np.roll(labels, 2, axis=1)
    for c in (1, 2):
        ours = hausdorff_distance(labels == c, shifted == c, spacing=(2.0, 2.0, 1.0))
        assert ours == pytest.approx(medpy_hd95(shifted == c, labels == c,
                                                voxelspacing=(2.0, 2.0, 1.0)), abs=1e-6)


def test_confusion_matrix_is_exact_and_rejects_unknown_labels() -> None:
    gt = np.array([[0, 1], [2, 2]])
    pred = np.array([[0, 2], [2, 1]])
    np.testing.assert_array_equal(confusion_matrix(gt, pred, 3),
                                  [[1, 0, 0], [0, 0, 1], [0, 1, 1]])
    with pytest.raises(ValueError, match=r"labels \[3\] outside 0\.\.2"):
        confusion_matrix(gt, pred + 1, 3)


def test_identical_masks_score_perfectly() -> None:
    gt, _ = _real_pair()
    result = evaluate_arrays(gt, gt.copy(), 3)
    for c in range(3):
        for metric in ("dice", "iou", "accuracy", "sensitivity", "specificity"):
            assert result.per_class[c][metric] == 1.0
        assert result.per_class[c]["hd95"] == 0.0
    for key in ("pixel_accuracy", "mean_accuracy", "mean_dice", "mean_iou", "fw_iou"):
        assert result.means[key] == 1.0
    assert result.means["mean_hd95"] == 0.0


@pytest.mark.parametrize("k", [1, 3, 7])
def test_shift_by_k_pixels_gives_hausdorff_k(k: int) -> None:
    bar = np.zeros((64, 64), bool)
    bar[10:50, 20] = True
    assert hausdorff_distance(bar, np.roll(bar, k, axis=1)) == pytest.approx(k)
    square = np.zeros((64, 64), bool)
    square[15:40, 15:40] = True
    shifted = np.roll(square, k, axis=0)
    assert hausdorff_distance(square, shifted, percentile=100) == pytest.approx(k)
    assert hausdorff_distance(square, shifted, spacing=(2.5, 1.0), percentile=100) == \
        pytest.approx(2.5 * k)
    result = evaluate_arrays(bar.astype(int), np.roll(bar, k, axis=1).astype(int), 2)
    assert result.per_class[1]["hd95"] == pytest.approx(k)


def test_class_absent_from_both_is_nan_and_left_out_of_the_means() -> None:
    gt, pred = _real_pair()
    three = evaluate_arrays(gt, pred, 3)
    four = evaluate_arrays(gt, pred, 4)
    for metric in ("dice", "iou", "accuracy", "sensitivity", "hd95"):
        assert math.isnan(four.per_class[3][metric])
    for key in ("mean_dice", "mean_iou", "mean_accuracy", "pixel_accuracy", "fw_iou",
                "mean_hd95"):
        assert four.means[key] == pytest.approx(three.means[key])


def test_class_in_one_side_only_scores_zero_and_hd95_inf() -> None:
    gt = np.zeros((20, 20), int)
    gt[5:10, 5:10] = 1
    pred = np.zeros((20, 20), int)
    result = evaluate_arrays(gt, pred, 2)
    assert result.per_class[1]["dice"] == 0.0
    assert result.per_class[1]["hd95"] == math.inf
    assert math.isnan(result.means["mean_hd95"])
    assert result.to_dict()["per_class"]["1"]["hd95"] == "inf"


def test_accumulation_sums_confusion_and_averages_hd95_per_item() -> None:
    rng = np.random.default_rng(5)
    gts = [_blobs(rng, (48, 48), 3) for _ in range(4)]
    preds = [np.roll(g, i + 1, axis=0) for i, g in enumerate(gts)]
    preds[3][preds[3] == 2] = 0  # class 2 missing from one prediction
    total = evaluate_batch(gts, preds, 3)
    np.testing.assert_array_equal(
        total.confusion, sum(confusion_matrix(g, p, 3) for g, p in zip(gts, preds)))
    singles = [evaluate_arrays(g, p, 3).per_class[2]["hd95"] for g, p in zip(gts, preds)]
    assert singles[3] == math.inf
    assert total.per_class[2]["hd95"] == pytest.approx(np.mean(singles[:3]))
    assert total.per_class[2]["hd95_missing"] == 1
    assert total.items == 4


def test_evaluator_infers_the_number_of_classes() -> None:
    ev = SegEvaluator()
    ev.add(np.array([[0, 1]]), np.array([[0, 1]]))
    ev.add(np.array([[3, 1]]), np.array([[3, 0]]))
    assert ev.result().num_classes == 4
    assert ev.result().confusion.sum() == 4


def _mask_folder(root: Path, masks: dict[str, np.ndarray]) -> Path:
    root.mkdir(parents=True)
    for name, mask in masks.items():
        if name.endswith(".png"):
            Image.fromarray(mask.astype(np.uint8)).save(root / name)
        else:
            np.save(root / name, mask)
    return root


def test_folders_of_2d_masks_match_by_stem_across_formats(tmp_path: Path) -> None:
    labels = mni_labels()
    slices = {f"s{z}": labels[:, :, z] for z in (70, 80, 90)}
    gt = _mask_folder(tmp_path / "gt", {f"{k}.png": v for k, v in slices.items()})
    pred = _mask_folder(tmp_path / "pred", {f"{k}.npy": np.roll(v, 1, axis=0).astype(np.int64)
                                            for k, v in slices.items()})
    result = evaluate_paths(pred, gt, 3)
    expected = evaluate_batch([v for v in slices.values()],
                              [np.roll(v, 1, axis=0) for v in slices.values()], 3)
    np.testing.assert_array_equal(result.confusion, expected.confusion)
    assert result.per_class[1]["hd95"] == pytest.approx(expected.per_class[1]["hd95"])


def test_nifti_volumes_use_header_spacing(tmp_path: Path) -> None:
    labels = mni_labels()[50:110, 60:130, 60:90]
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    nib.save(nib.Nifti1Image(labels, affine), tmp_path / "gt.nii.gz")
    shifted = np.roll(labels, 3, axis=2)
    nib.save(nib.Nifti1Image(shifted, affine), tmp_path / "pred.nii.gz")
    result = evaluate_paths(tmp_path / "pred.nii.gz", tmp_path / "gt.nii.gz", 3)
    assert result.per_class[1]["hd95"] == pytest.approx(
        medpy_hd95(shifted == 1, labels == 1, voxelspacing=(1.5, 1.5, 3.0)), abs=1e-6)
    nib.save(nib.Nifti1Image(shifted, np.eye(4)), tmp_path / "other.nii.gz")
    with pytest.raises(DataError) as err:
        evaluate_paths(tmp_path / "other.nii.gz", tmp_path / "gt.nii.gz", 3)
    assert err.value.message == (f"{tmp_path / 'other.nii.gz'}: voxel spacing (1.0, 1.0, 1.0) "
                                 f"does not match ground truth {tmp_path / 'gt.nii.gz'} spacing "
                                 "(1.5, 1.5, 3.0)")


def test_path_errors_name_the_file(tmp_path: Path) -> None:
    gt = _mask_folder(tmp_path / "gt", {"a.npy": np.zeros((4, 4), np.uint8),
                                        "b.npy": np.ones((4, 4), np.uint8)})
    pred = _mask_folder(tmp_path / "pred", {"a.npy": np.zeros((4, 5), np.uint8),
                                            "b.npy": np.full((4, 4), 7, np.uint8)})
    with pytest.raises(DataError) as err:
        evaluate_paths(pred, gt, 2)
    assert err.value.message == (f"{pred / 'a.npy'}: prediction shape (4, 5) does not match "
                                 f"ground truth {gt / 'a.npy'} shape (4, 4)")
    np.save(pred / "a.npy", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError) as err:
        evaluate_paths(pred, gt, 2)
    assert err.value.message == f"{pred / 'b.npy'}: labels [7] outside the declared classes 0..1"
    np.save(pred / "b.npy", np.full((4, 4), 0.5))
    with pytest.raises(DataError) as err:
        evaluate_paths(pred, gt, 2)
    assert err.value.message == (f"{pred / 'b.npy'}: mask holds non-integer values; expected "
                                 "integer class indices")
    (pred / "b.npy").unlink()
    with pytest.raises(DataError, match=r"b\.npy: no prediction named b\.\* in"):
        evaluate_paths(pred, gt, 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as err:
        evaluate_paths(pred, tmp_path / "empty", 2)
    assert err.value.message == (f"{tmp_path / 'empty'}: empty folder: no .png, .npy, .nii or "
                                 ".nii.gz masks found")


def test_corrupt_nifti_is_named(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), tmp_path / "gt.nii.gz")
    (tmp_path / "pred.nii.gz").write_bytes(b"garbage")
    with pytest.raises(DataError) as err:
        evaluate_paths(tmp_path / "pred.nii.gz", tmp_path / "gt.nii.gz", 2)
    assert str(err.value).startswith(f"{tmp_path / 'pred.nii.gz'}: cannot read NIfTI mask")


def test_json_and_csv_are_complete_and_json_safe(tmp_path: Path) -> None:
    gt, pred = _real_pair()
    result = evaluate_arrays(gt, pred, 4)
    write_json(result, tmp_path / "m.json")
    write_csv(result, tmp_path / "m.csv")
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["per_class"]["3"]["dice"] is None
    assert data["means"]["mean_dice"] == pytest.approx(result.means["mean_dice"])
    lines = (tmp_path / "m.csv").read_text().splitlines()
    assert lines[0] == "class,name,dice,iou,accuracy,sensitivity,specificity,hd95,support"
    assert len(lines) == 6 and lines[4].startswith("3,3,,,,")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv", "m.json"]  # no temp files


def test_table_lists_classes_and_means() -> None:
    gt, pred = _real_pair()
    text = evaluate_arrays(gt, pred, 3).table()
    assert text.splitlines()[0].split() == ["class", "dice", "iou", "accuracy", "sensitivity",
                                            "specificity", "hd95", "support"]
    assert "mean_iou" in text and "fw_iou" in text


def test_overlays_colour_tp_fp_fn(tmp_path: Path) -> None:
    gt = np.zeros((3, 16, 16), int)
    gt[1, 4:8, 4:8] = 1
    pred = np.zeros_like(gt)
    pred[1, 4:8, 6:10] = 1
    paths = write_overlays(pred, gt, None, tmp_path / "ov")
    assert [p.name for p in paths] == ["overlay_0001.png"]
    rgb = np.asarray(Image.open(paths[0]))
    assert rgb.shape == (256, 256, 3)              # 16x16 enlarged 16x (nearest)
    rgb = rgb[::16, ::16]
    assert rgb[5, 6].tolist() == [0, 120, 0]       # TP: green
    assert rgb[5, 9].tolist() == [138, 18, 18]     # FP: red
    assert rgb[5, 4].tolist() == [24, 54, 153]     # FN: blue
    assert rgb[0, 0].tolist() == [0, 0, 0]


def _table_rows(text: str) -> tuple[list[str], list[str]]:
    """The header words and the names of the summary lines of a table."""
    lines = text.splitlines()
    blank = lines.index("") if "" in lines else len(lines)
    return lines[0].split(), [line.split()[0] for line in lines[blank + 1:]]


def test_table_shows_only_the_selected_metrics() -> None:
    gt, pred = _real_pair()
    result = evaluate_arrays(gt, pred, 3)
    header, means = _table_rows(result.table(["dice", "pixel_accuracy"]))
    assert header == ["class", "dice", "support"]
    assert means == ["pixel_accuracy", "mean_dice", "mean_dice_foreground"]
    header, means = _table_rows(result.table(["hd95", "mean_iou", "fw_iou", "sensitivity"]))
    assert header == ["class", "iou", "sensitivity", "hd95", "support"]  # table order
    assert means == ["mean_iou", "fw_iou", "mean_sensitivity", "mean_hd95"]
    header, means = _table_rows(result.table(["mean_accuracy", "specificity"]))
    assert header == ["class", "accuracy", "specificity", "support"]
    assert means == ["mean_accuracy", "mean_specificity"]
    assert len(result.table(["fw_iou"]).splitlines()) == 1 + 3 + 2  # header, classes, means


def test_table_default_and_all_names_show_everything() -> None:
    gt, pred = _real_pair()
    result = evaluate_arrays(gt, pred, 3)
    everything = ["dice", "pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou",
                  "sensitivity", "specificity", "hd95"]
    assert result.table(everything) == result.table() == result.table(None)
    header, means = _table_rows(result.table())
    assert header == ["class", "dice", "iou", "accuracy", "sensitivity", "specificity", "hd95",
                      "support"]
    assert means == ["pixel_accuracy", "mean_accuracy", "mean_dice", "mean_dice_foreground",
                     "mean_iou", "fw_iou", "mean_sensitivity", "mean_specificity", "mean_hd95"]
    header, means = _table_rows(result.table([]))
    assert header == ["class", "support"] and means == []


def test_table_of_a_saved_result_with_selected_metrics(tmp_path: Path) -> None:
    """What ``autocnnp run`` prints: from_dict of test_metrics.json, its selected_metrics."""
    gt, pred = _real_pair()
    result = evaluate_arrays(gt, pred, 3, hd95=False)
    data = {"selected_metrics": ["dice", "mean_iou"], **json.loads(json.dumps(result.to_dict()))}
    text = SegEvalResult.from_dict(data).table(data.get("selected_metrics"))
    header, means = _table_rows(text)
    assert header == ["class", "dice", "iou", "support"]
    assert means == ["mean_dice", "mean_dice_foreground", "mean_iou"]
    assert "hd95" not in text and "n/a" not in text.splitlines()[1]


def test_table_rejects_unknown_metric_names() -> None:
    gt, pred = _real_pair()
    with pytest.raises(ValueError, match="'jaccard'.*choose from dice, pixel_accuracy"):
        evaluate_arrays(gt, pred, 3, hd95=False).table(["dice", "jaccard"])


def test_the_table_says_what_each_mean_averages_and_counts_infinite_hd95():
    gt = np.zeros((2, 8, 8), dtype=np.int32)
    gt[0, 2:5, 2:5] = 1
    gt[1, 2:5, 2:5] = 1
    pred = gt.copy()
    pred[1] = 0  # slice 2: class 1 missed entirely -> HD95 infinite there
    evaluator = SegEvaluator(2, class_names={0: "bg", 1: "lesion"})
    for g, p in zip(gt, pred):
        evaluator.add(g, p)
    table = evaluator.result().table()
    assert "mean_dice             " in table
    lines = {line.split()[0]: line for line in table.splitlines() if line.strip()}
    assert lines["mean_dice"].endswith("(all classes, background included)")
    assert lines["mean_dice_foreground"].endswith("(classes 1.., the headline test dice)")
    assert lines["mean_hd95"].endswith(
        "(foreground classes with a finite HD95; 1 item(s) where one side lacked the class "
        "are not averaged, see hd95_missing)")
    assert "0.0000 (1 inf)" in lines["lesion"]
