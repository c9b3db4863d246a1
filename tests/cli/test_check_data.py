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
