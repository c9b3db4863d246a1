"""Shared fixtures: a small real dataset (MNI152 brain slices) and small training configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SMALL_CONFIG = """<system_config>
  <task name="imaging_segmentation">
    <parallelism-degree>{ranks}</parallelism-degree>
    <CNN_archi><name>unet</name><param name="depth">2</param><param name="base_filters">4</param></CNN_archi>
    <data format="pairs">
      <train><path>{data}/train</path></train>
      <valid><path>{data}/valid</path></valid>
      <test><path>{data}/test</path></test>
      <classes>background grey_matter white_matter</classes>
    </data>
    <hyperparameters>
      <property name="lr">1e-3</property>
      <property name="optimizer">adam</property>
      <property name="loss">dice_crossentropy</property>
      <property name="minibatch_size">4</property>
      <property name="end_epoch">{epochs}</property>
    </hyperparameters>
    <deployment backend="local"><property name="threads_per_rank">1</property></deployment>
    <monitoring><property name="keep_checkpoints">{keep}</property></monitoring>
    <run_root>{runs}</run_root>
  </task>
</system_config>
"""


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """40 real MNI152 axial slices at 32x32 (3 classes), split train/valid/test."""
    from autocnnp.components.demo_data import build_demo_dataset

    out = tmp_path_factory.mktemp("data") / "mni152-small"
    build_demo_dataset(out, size=32, n_slices=40)
    return out


@pytest.fixture(scope="session")
def msd_cases(tmp_path_factory) -> Path:
    """An MSD task folder of 9 real MNI152 cases (32x32x8 NIfTI volumes, ``site`` A/B in
    dataset.json) and 2 unlabelled cases in imagesTs."""
    from autocnnp.components.demo_data import build_msd_demo

    out = tmp_path_factory.mktemp("msd") / "Task90_Brain"
    build_msd_demo(out, cases=9, test_cases=2)
    return out


@pytest.fixture
def small_config(tmp_path, small_dataset):
    """A factory writing a small, fast training config; returns its path."""
    def make(ranks: int = 2, epochs: int = 3, keep: int = 3, name: str = "small.xml") -> Path:
        path = tmp_path / name
        path.write_text(SMALL_CONFIG.format(ranks=ranks, epochs=epochs, keep=keep, data=small_dataset,
                                            runs=tmp_path / "runs"))
        return path
    return make


@pytest.fixture
def cli_env():
    """Environment for running the real `autocnnp` command in a subprocess."""
    env = dict(os.environ)
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}:{env.get('PATH', '')}"
    return env


@pytest.fixture
def small_disk(tmp_path):
    """A factory mounting a small tmpfs (``small_disk("2m")``) under ``tmp_path``, to fill a
    disk for real; needs root (skips otherwise). Every mount is undone afterwards."""
    import subprocess

    mounts: list[Path] = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"disk-{len(mounts)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                               str(folder)], capture_output=True, text=True)
        if done.returncode != 0:
            if os.geteuid() == 0:  # root can mount: a failure here is a real problem (CI is root)
                pytest.fail(f"cannot mount a tmpfs as root: {done.stderr.strip()}")
            pytest.skip(f"cannot mount a tmpfs here (not root): {done.stderr.strip()}")
        mounts.append(folder)
        return folder

    yield mount
    for folder in mounts:
        subprocess.run(["umount", "-l", str(folder)], check=False)
