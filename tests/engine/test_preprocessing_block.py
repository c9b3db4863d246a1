"""A <preprocessing> block in a training config runs ImgMed before training."""

from __future__ import annotations

import io
from pathlib import Path

import nibabel as nib
import numpy as np

from autocnnp.cli import main
from autocnnp.components.demo_data import demo_volumes
from autocnnp.components.data_prep import check_data, prepare_data
from autocnnp.generator.assembly import load_checked_spec

CONFIG = """<system_config>
  <task name="imaging_segmentation">
    <CNN_archi><name>unet</name></CNN_archi>
    <data format="pairs">
      <train><path>slices</path></train>
      <classes>background grey_matter white_matter</classes>
    </data>
    <hyperparameters/>
    <preprocessing>
      <property name="source">volumes/images</property>
      <property name="masks">volumes/masks</property>
      <property name="output">slices</property>
      <property name="slices">12</property>
      <property name="size">64</property>
      <property name="format">npy</property>
    </preprocessing>
  </task>
</system_config>
"""


def test_preprocessing_output_may_be_missing_at_validation_and_is_built_before_training(tmp_path, capsys):
    t1, labels = demo_volumes()
    for sub, volume in (("images", t1), ("masks", labels)):
        (tmp_path / "volumes" / sub).mkdir(parents=True)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "volumes" / sub / "mni152.nii.gz")
    config = tmp_path / "c.xml"
    config.write_text(CONFIG)
    assert main(["validate", str(config)]) == 0  # slices/ does not exist yet: it is produced

    spec = load_checked_spec(config)
    assert spec.preprocessing.output == tmp_path / "slices"
    prepare_data(spec, io.StringIO().write, check=False)
    images = sorted((tmp_path / "slices" / "images").iterdir())
    assert len(images) == 12
    assert np.load(images[0]).shape == (64, 64)
    check_data(spec)  # the produced split loads and its labels fit the 3 classes
    assert (tmp_path / "slices" / "manifest.json").is_file()


def test_a_missing_train_path_is_still_reported_without_preprocessing(tmp_path, capsys):
    config = tmp_path / "c.xml"
    config.write_text(CONFIG.split("<preprocessing>")[0] + "</task>\n</system_config>\n")
    assert main(["validate", str(config)]) == 2
    assert "<train/path>: path 'slices' does not exist" in capsys.readouterr().err
