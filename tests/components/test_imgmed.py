"""ImgMed on real NIfTI: nibabel's example4d (128x96x24x2) and the MNI152 template."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from autocnnp.components.demo_data import demo_volumes
from autocnnp.components.imgmed import augment, io as imgio, pipeline
from autocnnp.components.imgmed.pipeline import run_preprocessing
from autocnnp.components.imgmed.slicing import parse_range, select_slices
from autocnnp.components.imgmed.transforms import intensity_stats, normalize
from autocnnp.components.datasets import load_split
from autocnnp.engine.spec import PreprocessingSpec
from autocnnp.errors import DataError

EXAMPLE4D = Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz"


@pytest.fixture(scope="module")
def mni(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    """The MNI152 T1 volume and its tissue labels as NIfTI files."""
    root = tmp_path_factory.mktemp("mni")
    t1, labels = demo_volumes()
    (root / "images").mkdir()
    (root / "masks").mkdir()
    nib.save(nib.Nifti1Image(t1, np.eye(4)), root / "images" / "mni152.nii")
    nib.save(nib.Nifti1Image(labels, np.eye(4)), root / "masks" / "mni152.nii")
    return root / "images", root / "masks", labels


def _spec(tmp_path: Path, **kw: object) -> PreprocessingSpec:
    return PreprocessingSpec(source=kw.pop("source", EXAMPLE4D), output=tmp_path / "out", **kw)


def test_example4d_gives_every_axial_slice_at_native_size(tmp_path: Path) -> None:
    summary = run_preprocessing(_spec(tmp_path), progress=False)
    assert summary["total"] == summary["written"] == 24
    files = sorted((tmp_path / "out" / "images").iterdir())
    assert [f.name for f in files[:2]] == ["example4d_z000.npy", "example4d_z001.npy"]
    first = np.load(files[0])
    assert first.shape == (128, 96) and first.dtype == np.float32
    volume = np.asanyarray(nib.load(EXAMPLE4D).dataobj)[..., 0].astype(np.float64)
    expected = (volume[:, :, 0] - volume.min()) / (volume.max() - volume.min())
    np.testing.assert_allclose(first, expected, atol=1e-6)


def test_channel_axis_count_and_size(tmp_path: Path) -> None:
    summary = run_preprocessing(_spec(tmp_path, axis=0, slices=10, size=48, channel=1),
                                progress=False)
    assert summary["total"] == 10 and summary["image_shape"] == [48, 48]
    names = sorted(p.name for p in (tmp_path / "out" / "images").iterdir())
    assert names[0] == "example4d_z059.npy" and names[-1] == "example4d_z068.npy"
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    entry = manifest["outputs"]["images/example4d_z059.npy"]
    assert entry["source"] == str(EXAMPLE4D) and entry["slice"] == 59
    assert entry["axis"] == 0 and entry["channel"] == 1
    assert entry["transform"]["resize"] == 48


def test_slice_selection_rules() -> None:
    assert select_slices(155, count=70).tolist() == list(range(42, 112))
    assert select_slices(24, count=70).tolist() == list(range(24))
    assert select_slices(24, slice_range=(5, 9)).tolist() == [5, 6, 7, 8]
    with pytest.raises(DataError) as err:
        select_slices(24, slice_range=(20, 30), name="v.nii")
    assert err.value.message == ("v.nii: slice range 20:30 goes past the last slice (the volume "
                                 "has 24 slices along this axis)")
    assert parse_range("40:110") == (40, 110)
    with pytest.raises(DataError, match=r"slice range '40-110' is not of the form A:B"):
        parse_range("40-110")


def test_mni152_volume_70_slices_at_256_keep_the_label_set(
        tmp_path: Path, mni: tuple[Path, Path, np.ndarray]) -> None:
    images, masks, labels = mni
    spec = PreprocessingSpec(source=images, output=tmp_path / "out", masks=masks, slices=70,
                             size=256, format="png")
    summary = run_preprocessing(spec, progress=False)
    assert summary["total"] == 70 and summary["image_shape"] == [256, 256]
    out = tmp_path / "out"
    first_z = (189 - 70) // 2
    for z in (first_z, first_z + 35, first_z + 69):
        mask = np.asarray(Image.open(out / "masks" / f"mni152_z{z:03d}.png"))
        assert mask.shape == (256, 256) and mask.dtype == np.uint8
        assert set(np.unique(mask)) == set(np.unique(labels[:, :, z]))
        image = np.asarray(Image.open(out / "images" / f"mni152_z{z:03d}.png"))
        assert image.shape == (256, 256) and image.dtype == np.uint8
    split = load_split(out, num_classes=3)
    assert split.images.shape == (70, 256, 256, 1)


def test_downsized_masks_never_invent_labels(tmp_path: Path,
                                             mni: tuple[Path, Path, np.ndarray]) -> None:
    images, masks, labels = mni
    run_preprocessing(PreprocessingSpec(source=images, output=tmp_path / "out", masks=masks,
                                        slice_range=(60, 64), size=37, axis=1), progress=False)
    for z in range(60, 64):
        mask = np.load(tmp_path / "out" / "masks" / f"mni152_z{z:03d}.npy")
        assert set(np.unique(mask)) <= set(np.unique(labels[:, z, :]))


def test_masks_are_never_lossy(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        run_preprocessing(_spec(tmp_path, format="jpg"), progress=False, mask_format="jpg")
    assert err.value.message == ("masks are never written lossy: format 'jpg' is not allowed for "
                                 "masks; use png or npy")
    assert not (tmp_path / "out").exists()


def test_jpg_images_with_png_masks(tmp_path: Path, mni: tuple[Path, Path, np.ndarray]) -> None:
    images, masks, _ = mni
    run_preprocessing(PreprocessingSpec(source=images, output=tmp_path / "out", masks=masks,
                                        slices=2, size=64, format="jpg"), progress=False)
    assert sorted(p.suffix for p in (tmp_path / "out" / "images").iterdir()) == [".jpg", ".jpg"]
    assert sorted(p.suffix for p in (tmp_path / "out" / "masks").iterdir()) == [".png", ".png"]


def test_rerun_skips_done_outputs_and_rewrites_missing_ones(tmp_path: Path) -> None:
    spec = _spec(tmp_path, slices=6, size=32)
    run_preprocessing(spec, progress=False)
    victim = tmp_path / "out" / "images" / "example4d_z010.npy"
    victim.unlink()
    again = run_preprocessing(spec, progress=False)
    assert (again["written"], again["skipped"]) == (1, 5)
    assert victim.is_file()
    assert len(list((tmp_path / "out" / "images").iterdir())) == 6


def test_interrupted_run_resumes_without_duplicates(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec(tmp_path, size=32)
    real = imgio.encode_image
    calls = {"n": 0}

    def dies_on_the_20th(image: np.ndarray, fmt: str) -> bytes:
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt
        return real(image, fmt)

    monkeypatch.setattr(imgio, "encode_image", dies_on_the_20th)
    with pytest.raises(KeyboardInterrupt):
        run_preprocessing(spec, progress=False)
    monkeypatch.setattr(imgio, "encode_image", real)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert len(manifest["outputs"]) == 19
    summary = run_preprocessing(spec, progress=False)
    assert (summary["written"], summary["skipped"]) == (5, 19)
    files = sorted(p.name for p in (tmp_path / "out" / "images").iterdir())
    assert files == [f"example4d_z{k:03d}.npy" for k in range(24)]  # no temp files, no copies


def test_other_settings_into_the_same_folder_are_refused(tmp_path: Path) -> None:
    run_preprocessing(_spec(tmp_path, slices=2), progress=False)
    with pytest.raises(DataError) as err:
        run_preprocessing(_spec(tmp_path, slices=3), progress=False)
    assert err.value.message == (f"{tmp_path / 'out' / 'manifest.json'}: the output folder was "
                                 "made with different settings (slices changed)")


def test_augmentation_is_seeded_within_range_and_identical_for_mask(
        tmp_path: Path, mni: tuple[Path, Path, np.ndarray]) -> None:
    images, masks, labels = mni
    spec = PreprocessingSpec(source=images, output=tmp_path / "a", masks=masks, slices=2,
                             size=64)
    run_preprocessing(spec, progress=False, augment=2, seed=3)
    names = sorted(p.name for p in (tmp_path / "a" / "masks").iterdir())
    assert len(names) == 6 and names[1].endswith("_aug1.npy")
    again = PreprocessingSpec(source=images, output=tmp_path / "b", masks=masks, slices=2, size=64)
    run_preprocessing(again, progress=False, augment=2, seed=3)
    for name in names:
        np.testing.assert_array_equal(np.load(tmp_path / "a" / "images" / name),
                                      np.load(tmp_path / "b" / "images" / name))
        assert set(np.unique(np.load(tmp_path / "a" / "masks" / name))) <= {0, 1, 2}
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    params = manifest["outputs"][f"images/{names[1]}"]["transform"]["augment"]
    assert abs(params["rotation"]) <= 45 and 0.8 <= params["zoom"] <= 1.2
    assert abs(params["tx"]) <= 25.6 and abs(params["ty"]) <= 25.6
    # the same geometric transform is applied to image and mask
    mask = labels[:, :, 90].astype(np.int32)
    rng = np.random.default_rng(0)
    image_out, mask_out, p = augment.augment_pair(mask.astype(np.float32), mask, rng)
    np.testing.assert_array_equal(mask_out, augment.apply_affine(mask, p, order=0))
    np.testing.assert_array_equal(augment.apply_affine(mask.astype(np.float32), p, order=0),
                                  mask_out.astype(np.float32))
    assert np.abs(image_out - mask_out).mean() < 0.1


def test_sampled_parameters_cover_the_thesis_ranges() -> None:
    rng = np.random.default_rng(0)
    draws = [augment.sample_params(rng) for _ in range(2000)]
    rotations = [d.rotation for d in draws]
    assert -45 <= min(rotations) < -40 and 40 < max(rotations) <= 45
    assert 0.8 <= min(d.zoom for d in draws) < 0.82 and 1.18 < max(d.zoom for d in draws) <= 1.2
    assert max(abs(d.tx) for d in draws) <= 25.6 and max(abs(d.ty) for d in draws) > 25


def test_normalisations() -> None:
    volume = np.asanyarray(nib.load(EXAMPLE4D).dataobj)[..., 0]
    z = normalize(volume, "zscore")
    assert abs(float(z.mean())) < 1e-4 and abs(float(z.std()) - 1) < 1e-4
    np.testing.assert_array_equal(normalize(volume, "none"), volume.astype(np.float32))
    with pytest.raises(DataError, match=r"unknown normalisation 'l2'; choose one of minmax, "
                                        r"zscore, none"):
        intensity_stats(volume, "l2")


def test_corrupt_volume_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(EXAMPLE4D.read_bytes()[:100])
    with pytest.raises(DataError) as err:
        run_preprocessing(_spec(tmp_path, source=bad), progress=False)
    assert str(err.value).startswith(f"{bad}: cannot read NIfTI header")


def test_msd_task_folder_pairs_images_with_labels(tmp_path: Path) -> None:
    task = tmp_path / "Task99"
    (task / "imagesTr").mkdir(parents=True)
    (task / "labelsTr").mkdir()
    data = np.asanyarray(nib.load(EXAMPLE4D).dataobj)
    nib.save(nib.Nifti1Image(data, np.eye(4)), task / "imagesTr" / "case_001.nii.gz")
    nib.save(nib.Nifti1Image((data[..., 0] > 500).astype(np.uint8), np.eye(4)),
             task / "labelsTr" / "case_001.nii.gz")
    assert [(i.name, m.name) for i, m in pipeline.plan_volumes(_spec(tmp_path, source=task))] == \
        [("case_001.nii.gz", "case_001.nii.gz")]
    summary = run_preprocessing(_spec(tmp_path, source=task, slices=4), progress=False)
    assert summary["written"] == 4
    assert len(list((tmp_path / "out" / "masks").iterdir())) == 4
