"""The training data loader on real files: the demo MNI152 slices and nibabel's example4d."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from autocnnp.components.datasets import (Split, check_split, detect_format, load_split,
                                          shard_indices)
from autocnnp.components.demo_data import build_demo_dataset
from autocnnp.errors import DataError

EXAMPLE4D = Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "mni"
    build_demo_dataset(out, size=32, n_slices=20)
    return out


def _pairs(root: Path, images: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    for name, array in images.items():
        if name.endswith(".png"):
            Image.fromarray(array).save(root / "images" / name)
        else:
            np.save(root / "images" / name, array)
    for name, array in masks.items():
        if name.endswith(".png"):
            Image.fromarray(array).save(root / "masks" / name)
        else:
            np.save(root / "masks" / name, array)
    return root


def _volume_with_mask() -> tuple[np.ndarray, np.ndarray]:
    data = np.asanyarray(nib.load(EXAMPLE4D).dataobj)
    labels = (data[..., 0] > np.percentile(data[..., 0], 60)).astype(np.uint8)
    return data, labels


def _nifti_layout(root: Path, image_dir: str = "images", mask_dir: str = "masks") -> Path:
    data, labels = _volume_with_mask()
    (root / image_dir).mkdir(parents=True)
    (root / mask_dir).mkdir(parents=True)
    nib.save(nib.Nifti1Image(data, np.eye(4)), root / image_dir / "case_01.nii.gz")
    nib.save(nib.Nifti1Image(labels, np.eye(4)), root / mask_dir / "case_01.nii.gz")
    return root


def test_demo_split_loads_with_expected_shapes_types_and_names(demo: Path) -> None:
    split = load_split(demo / "train", num_classes=3)
    assert split.images.shape == (12, 32, 32, 1)
    assert split.masks.shape == (12, 32, 32)
    assert split.images.dtype == np.float32 and split.masks.dtype == np.int32
    assert 0.0 <= split.images.min() and split.images.max() <= 1.0
    assert set(np.unique(split.masks)) == {0, 1, 2}
    assert split.names[0] == str(demo / "train" / "images" / sorted(
        os.listdir(demo / "train" / "images"))[0])
    assert split.source == demo / "train"
    assert len(split) == 12


def test_dataset_root_with_split_subfolders_is_resolved(demo: Path) -> None:
    assert len(load_split(demo, num_classes=3, split="valid")) == 4
    assert len(load_split(demo, num_classes=3, split="test")) == 4


def test_image_size_resizes_images_bilinear_and_masks_nearest(demo: Path) -> None:
    split = load_split(demo / "test", num_classes=3, image_size=50)
    original = load_split(demo / "test", num_classes=3)
    assert split.images.shape == (4, 50, 50, 1)
    for resized, mask in zip(split.masks, original.masks):
        assert set(np.unique(resized)) <= set(np.unique(mask))
    assert 0.0 <= split.images.min() and split.images.max() <= 1.0


def test_detect_format_tells_the_three_layouts_apart(tmp_path: Path, demo: Path) -> None:
    assert detect_format(demo / "train") == "pairs"
    assert detect_format(_nifti_layout(tmp_path / "nii")) == "nifti"
    msd = _nifti_layout(tmp_path / "msd", "imagesTr", "labelsTr")
    (msd / "dataset.json").write_text("{}")
    assert detect_format(msd) == "msd"


def test_unknown_layout_lists_the_accepted_ones(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DataError) as err:
        detect_format(tmp_path)
    assert str(err.value) == (
        f"{tmp_path}: unrecognised data layout; accepted layouts: 'pairs' (images/ and masks/ "
        "subfolders of .png/.npy files with matching names), 'msd' (imagesTr/, labelsTr/ and "
        "dataset.json), 'nifti' (images/ and masks/ subfolders of .nii/.nii.gz volumes with "
        "matching names)")
    assert err.value.exit_code == 2


def test_missing_folder_says_how_to_get_data(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no such data folder") as err:
        load_split(tmp_path / "nope", num_classes=2)
    assert "autocnnp demo-data" in str(err.value)


def test_corrupt_png_is_named(tmp_path: Path) -> None:
    root = _pairs(tmp_path, {"a.npy": np.zeros((8, 8), np.float32)},
                  {"a.npy": np.zeros((8, 8), np.uint8)})
    (root / "images" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    np.save(root / "masks" / "b.npy", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError) as err:
        load_split(root, num_classes=2)
    assert str(err.value).startswith(f"{root / 'images' / 'b.png'}: cannot read image: ")


def test_shape_mismatch_names_image_and_mask(tmp_path: Path) -> None:
    root = _pairs(tmp_path, {"a.npy": np.zeros((8, 8), np.float32)},
                  {"a.png": np.zeros((8, 9), np.uint8)})
    with pytest.raises(DataError) as err:
        load_split(root, num_classes=2)
    assert err.value.message == (f"{root / 'images' / 'a.npy'} and {root / 'masks' / 'a.png'}: "
                                 "image shape (8, 8) does not match mask shape (8, 9)")


def test_labels_outside_declared_classes_name_the_mask_and_labels(tmp_path: Path) -> None:
    mask = np.zeros((8, 8), np.uint8)
    mask[0, 0], mask[1, 1] = 5, 3
    root = _pairs(tmp_path, {"a.npy": np.zeros((8, 8), np.float32)}, {"a.png": mask})
    with pytest.raises(DataError) as err:
        load_split(root, num_classes=3)
    assert err.value.message == (f"{root / 'masks' / 'a.png'}: labels [3, 5] outside the "
                                 "declared classes 0..2")
    assert err.value.remedy == "declare 6 classes in <data><classes> or fix the mask"


def test_empty_images_folder(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError) as err:
        load_split(tmp_path, num_classes=2)
    assert err.value.message == (f"{tmp_path / 'images'}: empty folder: no .png, .npy, .nii or "
                                 ".nii.gz images found")


def test_image_without_mask(tmp_path: Path) -> None:
    root = _pairs(tmp_path, {"a.npy": np.zeros((8, 8), np.float32),
                             "b.npy": np.zeros((8, 8), np.float32)},
                  {"a.npy": np.zeros((8, 8), np.uint8)})
    with pytest.raises(DataError, match=r"b\.npy: no mask named b"):
        load_split(root, num_classes=2)


def test_non_integer_mask_is_refused(tmp_path: Path) -> None:
    root = _pairs(tmp_path, {"a.npy": np.zeros((4, 4), np.float32)},
                  {"a.npy": np.full((4, 4), 0.5, np.float32)})
    with pytest.raises(DataError) as err:
        load_split(root, num_classes=2)
    assert err.value.message == (f"{root / 'masks' / 'a.npy'}: mask holds non-integer values; "
                                 "expected integer class indices")


def test_uint8_png_is_scaled_and_unit_float_kept(tmp_path: Path) -> None:
    png = np.arange(64, dtype=np.uint8).reshape(8, 8) * 2 + 10
    unit = np.linspace(0.2, 0.7, 64, dtype=np.float32).reshape(8, 8)
    root = _pairs(tmp_path, {"a.png": png, "b.npy": unit},
                  {"a.png": np.zeros((8, 8), np.uint8), "b.png": np.ones((8, 8), np.uint8)})
    split = load_split(root, num_classes=2)
    assert split.images[0, ..., 0].min() == 0.0 and split.images[0, ..., 0].max() == 1.0
    np.testing.assert_array_equal(split.images[1, ..., 0], unit)


def test_different_sizes_need_image_size(tmp_path: Path) -> None:
    root = _pairs(tmp_path, {"a.npy": np.zeros((8, 8), np.float32),
                             "b.npy": np.zeros((6, 6), np.float32)},
                  {"a.npy": np.zeros((8, 8), np.uint8), "b.npy": np.zeros((6, 6), np.uint8)})
    with pytest.raises(DataError, match="every sample needs the same size") as err:
        load_split(root, num_classes=2)
    assert err.value.remedy == "set image_size in <data> to resize every slice"
    assert load_split(root, num_classes=2, image_size=8).images.shape == (2, 8, 8, 1)


def test_nifti_layout_slices_along_last_axis(tmp_path: Path) -> None:
    root = _nifti_layout(tmp_path / "nii")
    split = load_split(root, num_classes=2)
    assert split.images.shape == (24, 128, 96, 2)  # the 4D volume's two channels
    assert split.names[5] == f"{root / 'images' / 'case_01.nii.gz'}[z=5]"
    data, labels = _volume_with_mask()
    np.testing.assert_array_equal(split.masks[5], labels[:, :, 5])
    for channel in (0, 1):  # each normalised over the volume on its own
        vol = data[..., channel].astype(np.float64)
        expected = (vol[:, :, 5] - vol.min()) / (vol.max() - vol.min())
        np.testing.assert_allclose(split.images[5, ..., channel], expected, atol=1e-6)


def test_msd_layout_uses_dataset_json_and_channel(tmp_path: Path) -> None:
    root = _nifti_layout(tmp_path / "Task99", "imagesTr", "labelsTr")
    (root / "dataset.json").write_text(json.dumps({"training": [
        {"image": "./imagesTr/case_01.nii.gz", "label": "./labelsTr/case_01.nii.gz"}]}))
    both = load_split(root, num_classes=2, image_size=32)  # every channel by default
    first = load_split(root, num_classes=2, image_size=32, channels=(0,))
    second = load_split(root, num_classes=2, image_size=32, channels=(1,))
    assert both.images.shape == (24, 32, 32, 2)
    assert first.images.shape == second.images.shape == (24, 32, 32, 1)
    np.testing.assert_array_equal(both.images[..., :1], first.images)
    assert not np.array_equal(first.images, second.images)
    with pytest.raises(DataError, match=r"channel 2 is out of range; the volumes have 2 "
                                        r"channels: 0\.\.1$"):
        load_split(root, num_classes=2, channels=(2,))


def test_corrupt_nifti_is_named(tmp_path: Path) -> None:
    root = _nifti_layout(tmp_path / "nii")
    bad = root / "images" / "case_01.nii.gz"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(DataError) as err:
        load_split(root, num_classes=2)
    assert str(err.value).startswith(f"{bad}: cannot read NIfTI image")


@pytest.mark.parametrize("n,size", [(0, 3), (1, 4), (7, 2), (150, 2), (151, 4), (10, 10)])
def test_shards_are_disjoint_covering_and_balanced(n: int, size: int) -> None:
    shards = [shard_indices(n, r, size) for r in range(size)]
    joined = np.concatenate(shards)
    assert sorted(joined.tolist()) == list(range(n))
    lengths = [len(s) for s in shards]
    assert max(lengths) - min(lengths) <= 1


def test_shard_rejects_bad_rank() -> None:
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\), got 2"):
        shard_indices(10, 2, 2)


def test_check_split_names_the_offending_sample() -> None:
    images = np.zeros((2, 4, 4, 1), np.float32)
    masks = np.zeros((2, 4, 4), np.int32)
    masks[1, 2, 2] = 4
    split = Split(images, masks, ["x.npy", "y.npy"], Path("d"))
    with pytest.raises(DataError) as err:
        check_split(split, 3)
    assert err.value.message == "y.npy: labels [4] outside the declared classes 0..2"
    images[0, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match=r"^x\.npy: image holds NaN or infinite values$"):
        check_split(split, 5)


def test_import_is_cheap() -> None:
    code = ("import sys, autocnnp.components.datasets; "
            "print(sorted(m for m in ('nibabel', 'PIL', 'skimage', 'scipy', 'tensorflow') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_format_names_and_aliases(demo: Path) -> None:
    assert len(load_split(demo / "test", format="npy", num_classes=3)) == 4
    with pytest.raises(DataError) as err:
        load_split(demo / "test", format="hdf5", num_classes=3)
    assert err.value.message == (f"{demo / 'test'}: unknown data format 'hdf5'; known: auto, "
                                 "pairs, msd, nifti")
