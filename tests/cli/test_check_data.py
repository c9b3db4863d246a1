"""``autocnnp check-data``: every bad sample of a config's data named at once, exit 2."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from autocnnp.cli import main

CONFIG = """<system_config>
  <task name="imaging_segmentation">
    <CNN_archi><name>unet</name></CNN_archi>
    <data format="pairs">
      <train><path>{data}/train</path></train>
      <valid><path>{data}/valid</path></valid>
      <test><path>{data}/test</path></test>
      <classes>background grey_matter white_matter</classes>
    </data>
    <hyperparameters><property name="lr">1e-3</property></hyperparameters>
  </task>
</system_config>
"""


def test_every_bad_case_is_named_and_clean_data_passes(tmp_path: Path, small_dataset: Path,
                                                        capsys) -> None:
    data = tmp_path / "data"
    shutil.copytree(small_dataset, data)
    config = tmp_path / "c.xml"
    config.write_text(CONFIG.format(data=data))
    assert main(["check-data", str(config)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{config}: data OK (40 samples)"

    train = sorted((data / "train" / "images").iterdir())
    train[1].write_bytes(b"not an npy file")  # unreadable
    nan = np.load(train[2])
    nan[3, 3] = np.nan
    np.save(train[2], nan)  # NaN intensity
    half = data / "train" / "masks" / train[4].name
    np.save(half, np.full((32, 32), 0.5, np.float32))  # not class indices
    valid_mask = sorted((data / "valid" / "masks").iterdir())[0]
    np.save(valid_mask, np.zeros((16, 16), np.uint8))  # shape mismatch
    test_mask = sorted((data / "test" / "masks").iterdir())[1]
    labels = np.load(test_mask)
    labels[0, 0] = 7
    np.save(test_mask, labels)  # label outside the classes
    assert main(["check-data", str(config)]) == 2
    captured = capsys.readouterr()
    out = captured.out
    assert f"train: {train[1]}: cannot read image: " in out
    assert f"train: {train[2]}: image holds NaN or infinite values" in out
    assert (f"train: {half}: mask holds non-integer values; expected integer class indices"
            in out)
    valid_image = data / "valid" / "images" / valid_mask.name
    assert (f"valid: {valid_image} and {valid_mask}: image shape (32, 32) does not match "
            f"mask shape (16, 16)" in out)
    assert f"test: {test_mask}: labels [7] outside the declared classes 0..2" in out
    assert captured.err.splitlines()[-1] == f"{config}: 5 problem(s) in the data"


MSD_CONFIG = """<system_config>
  <task name="imaging_segmentation">
    <CNN_archi><name>unet</name></CNN_archi>
    <data format="msd">
      <train><path>{data}</path></train>
      <classes>background grey_matter white_matter</classes>
    </data>
    <hyperparameters><property name="lr">1e-3</property></hyperparameters>
  </task>
</system_config>
"""


def test_image_and_mask_headers_must_agree_per_case(tmp_path: Path, msd_cases: Path,
                                                    capsys) -> None:
    import nibabel as nib

    data = tmp_path / "Task90"
    shutil.copytree(msd_cases, data)
    config = tmp_path / "c.xml"
    config.write_text(MSD_CONFIG.format(data=data))
    assert main(["check-data", str(config)]) == 0
    capsys.readouterr()

    def rewrite(case: str, affine) -> Path:
        path = data / "labelsTr" / f"{case}.nii.gz"
        mask = nib.load(str(path))
        nib.save(nib.Nifti1Image(np.asanyarray(mask.dataobj), affine(mask.affine.copy())),
                 str(path))
        return path

    def spacing(affine):
        affine[2, 2] = 2.0  # 4 mm slices in the image, 2 mm in the mask
        return affine

    def shifted(affine):
        affine[:3, 3] += (0.0, 5.0, 0.0)
        return affine

    thick, moved = rewrite("brain_003", spacing), rewrite("brain_006", shifted)
    assert main(["check-data", str(config)]) == 2
    captured = capsys.readouterr()
    image = data / "imagesTr"
    assert (f"train: {image / 'brain_003.nii.gz'} and {thick}: image voxel spacing "
            f"6.15625x7.28125x4 mm does not match mask spacing 6.15625x7.28125x2 mm"
            in captured.out.splitlines())
    assert (f"train: {image / 'brain_006.nii.gz'} and {moved}: image and mask affines differ "
            f"(same spacing, origins 5 mm apart)" in captured.out.splitlines())
    assert captured.err.splitlines()[-1] == f"{config}: 2 problem(s) in the data"
    # run checks the same headers before it launches, and stops at the first
    import pytest

    from autocnnp.components.datasets import list_split
    from autocnnp.errors import DataError

    with pytest.raises(DataError) as err:
        list_split(data, num_classes=3).check_headers()
    assert err.value.message.startswith(f"{image / 'brain_003.nii.gz'} and {thick}: image "
                                        f"voxel spacing")
