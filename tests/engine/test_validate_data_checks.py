"""validate runs the cheap data checks that run would fail on, and says what it sampled."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from autocnnp.cli import main

CONFIG = """<system_config>
  <task name="imaging_segmentation">
    <CNN_archi><name>unet</name></CNN_archi>
    <data format="{fmt}">
      <train><path>{train}</path></train>
      <valid><path>{valid}</path></valid>
      <test><path>{test}</path></test>
      <classes>{classes}</classes>
    </data>
    <hyperparameters><property name="lr">0.1</property></hyperparameters>
    <run_root>runs</run_root>
  </task>
</system_config>
"""
CLASSES = "background grey_matter white_matter"


def write(tmp_path: Path, data: Path, *, train: str = "train", valid: str = "valid",
          test: str = "test", classes: str = CLASSES, fmt: str = "pairs") -> Path:
    path = tmp_path / "c.xml"
    path.write_text(CONFIG.format(train=data / train, valid=data / valid,
                                  test=test if test.startswith("/") else data / test,
                                  classes=classes, fmt=fmt))
    return path


def test_a_valid_config_says_what_was_sampled(tmp_path, small_dataset, capsys):
    config = write(tmp_path, small_dataset)
    assert main(["validate", str(config)]) == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        "data checks (sampled; run reads every file): train: 8 of 24 masks, labels within "
        "0..2; valid: 8 of 8 masks, labels within 0..2; test: 8 of 8 masks, labels within 0..2")


def test_labels_beyond_the_declared_classes(tmp_path, small_dataset, capsys):
    config = write(tmp_path, small_dataset, classes="background grey_matter")
    assert main(["validate", str(config)]) == 2
    err = capsys.readouterr().err.splitlines()
    first = sorted((small_dataset / "train" / "masks").glob("*.npy"))[0].name
    assert err[0] == (
        f"{config}:8: <classes>: train: 8 of 8 sampled masks hold labels [2] outside the 2 "
        f"declared classes 0..1 (background grey_matter), e.g. "
        f"{small_dataset / 'train' / 'masks'}/{first}; declare 3 classes in <classes> or "
        f"fix the masks")
    assert len(err) == 3  # one line per split, not one per file


def test_a_label_less_test_split_like_msd_imagests(tmp_path, small_dataset, capsys):
    images_ts = tmp_path / "Task01_BrainTumour" / "imagesTs"
    images_ts.mkdir(parents=True)
    import nibabel
    shutil.copy(Path(nibabel.__file__).parent / "tests" / "data" / "example4d.nii.gz",
                images_ts / "BRATS_485.nii.gz")
    for fmt in ("auto", "pairs"):
        config = write(tmp_path, small_dataset, test=str(images_ts), fmt=fmt)
        assert main(["validate", str(config)]) == 2
        assert capsys.readouterr().err.strip() == (
            f"{config}:7: <test/path>: {images_ts} holds images but no masks: every split needs "
            f"labels (a test split is scored against them); the Medical Segmentation "
            f"Decathlon's imagesTs has none, so hold out cases of imagesTr/labelsTr instead")


def test_the_same_folder_as_train_and_valid(tmp_path, small_dataset, capsys):
    config = write(tmp_path, small_dataset, valid="train")
    assert main(["validate", str(config)]) == 2
    message = (f"{config}:6: <valid/path>: the valid split is the same folder as the train "
               f"split ({small_dataset / 'train'}): the model would be scored on data it "
               f"trained on; give each split its own folder")
    assert capsys.readouterr().err.strip() == message
    # run refuses it the same way, before anything starts
    assert main(["run", str(config)]) == 2
    assert capsys.readouterr().err.strip().endswith(message)
    assert not list((tmp_path / "runs").glob("*"))  # no run directory left behind


def test_a_folder_without_data_yet_is_noted_not_refused(tmp_path, capsys):
    for split in ("train", "valid", "test"):
        (tmp_path / "data" / split).mkdir(parents=True)
    config = write(tmp_path, tmp_path / "data", fmt="auto")
    assert main(["validate", str(config)]) == 0
    assert "train: no readable data layout yet, not sampled" in capsys.readouterr().out
