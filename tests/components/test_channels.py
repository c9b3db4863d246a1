"""All modalities as channels: a 4D MSD volume is an (H, W, C) input by default, <channels>
selects some by index or by dataset.json's modality names, and the model is built for them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autocnnp.cli import main
from autocnnp.components.datasets import list_split, load_channels
from autocnnp.errors import DataError

CONFIG = """<system_config>
  <task name="imaging_segmentation">
    <parallelism-degree>2</parallelism-degree>
    <CNN_archi><name>unet</name><param name="depth">2</param><param name="base_filters">4</param></CNN_archi>
    <data format="msd">
      <cases><path>{cases}</path></cases>
      <split test="0.34" seed="1"/>
      <classes>background grey_matter white_matter</classes>
      {channels}
    </data>
    <hyperparameters>
      <property name="lr">1e-3</property>
      <property name="optimizer">adam</property>
      <property name="minibatch_size">4</property>
      <property name="end_epoch">1</property>
    </hyperparameters>
    <evaluation><property name="metrics">dice mean_iou</property></evaluation>
    <deployment backend="local"><property name="threads_per_rank">1</property></deployment>
    <monitoring><property name="tensorboard">false</property></monitoring>
    <run_root>{runs}</run_root>
  </task>
</system_config>
"""


@pytest.fixture(scope="module")
def brats4(tmp_path_factory) -> Path:
    """6 labelled MNI152 cases as 32x32x8x4 volumes named FLAIR, T1w, t1gd, T2w."""
    from autocnnp.components.demo_data import build_msd_demo

    out = tmp_path_factory.mktemp("brats4") / "Task91_Brats4"
    build_msd_demo(out, cases=6, test_cases=1, size=32, depth=8, modalities=4)
    return out


def test_every_modality_is_a_channel_by_default(brats4: Path) -> None:
    samples = list_split(brats4, num_classes=3)
    assert samples.channels == (0, 1, 2, 3)
    assert samples.sample_shape == (32, 32, 4)
    image, _ = samples.read(3)
    first = samples.refs[3].image
    volume = load_channels(first, None)
    assert volume.shape == (32, 32, 8, 4)
    np.testing.assert_array_equal(image, volume[:, :, 3, :])
    # each modality is normalised over its volume on its own
    assert [float(volume[..., c].max()) for c in range(4)] == [1.0] * 4
    # four different contrasts, not one repeated
    assert len({volume[..., c].tobytes() for c in range(4)}) == 4


def test_channels_by_name_and_by_index(brats4: Path) -> None:
    everything = list_split(brats4, num_classes=3)
    by_name = list_split(brats4, num_classes=3, channels=("flair", "T2w"))
    by_index = list_split(brats4, num_classes=3, channels=("0", "3"))
    assert by_name.channels == by_index.channels == (0, 3)
    assert by_name.sample_shape == (32, 32, 2)
    np.testing.assert_array_equal(by_name.read(5)[0], everything.read(5)[0][..., [0, 3]])


@pytest.mark.parametrize("wanted,message", [
    (("FLAIRR",), "no channel named 'FLAIRR'; did you mean 'FLAIR'? the modalities of "
                  "dataset.json are 0 FLAIR, 1 T1w, 2 t1gd, 3 T2w"),
    (("4",), "channel 4 is out of range; the volumes have 4 channels: 0 FLAIR, 1 T1w, 2 t1gd, "
             "3 T2w"),
    (("T1w", "1"), "channel '1' is selected twice"),
])
def test_a_channel_the_volumes_lack_is_named(brats4: Path, wanted, message) -> None:
    with pytest.raises(DataError) as err:
        list_split(brats4, num_classes=3, channels=wanted)
    assert err.value.message == f"{brats4 / 'imagesTr' / 'brain_000.nii.gz'}: {message}"


def test_validate_names_the_channels_line(tmp_path: Path, brats4: Path, capsys) -> None:
    config = tmp_path / "c.xml"
    config.write_text(CONFIG.format(cases=brats4, runs=tmp_path / "runs",
                                    channels="<channels>FLAIR T2</channels>"))
    assert main(["validate", str(config)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (f"{config}:9: <channels>: {brats4 / 'imagesTr' / 'brain_000.nii.gz'}: "
                      f"no channel named 'T2'; did you mean 'T2w'? the modalities of "
                      f"dataset.json are 0 FLAIR, 1 T1w, 2 t1gd, 3 T2w")
    config.write_text(CONFIG.format(cases=brats4, runs=tmp_path / "runs",
                                    channels="<channels>0 9</channels>"))
    assert main(["validate", str(config)]) == 2
    assert capsys.readouterr().err.splitlines()[0].endswith(
        "channel 9 is out of range; the volumes have 4 channels: 0 FLAIR, 1 T1w, 2 t1gd, 3 T2w")


def _train(tmp_path: Path, cases: Path, channels: str, env: dict) -> Path:
    config = tmp_path / "c.xml"
    config.write_text(CONFIG.format(cases=cases, runs=tmp_path / "runs", channels=channels))
    done = subprocess.run([sys.executable, "-m", "autocnnp", "run", str(config)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return Path(done.stdout.strip().splitlines()[-1].removeprefix("run directory: "))


def _input_shape(run: Path) -> tuple:
    code = ("import sys, tensorflow as tf; "
            "m = tf.keras.models.load_model(sys.argv[1], compile=False); "
            "print(list(m.input_shape))")
    done = subprocess.run([sys.executable, "-c", code, str(run / "model")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return tuple(json.loads(done.stdout.strip().splitlines()[-1].replace("None", "null")))


@pytest.mark.slow
@pytest.mark.mpi
@pytest.mark.parametrize("channels,expected,indices", [
    ("", 4, None),
    ("<channels>T2w, FLAIR</channels>", 2, [3, 0]),
])
def test_a_four_modality_msd_set_trains_on_two_ranks(tmp_path, brats4, cli_env, channels,
                                                     expected, indices) -> None:
    run = _train(tmp_path, brats4, channels, cli_env)
    meta = json.loads((run / "model" / "autocnnp.json").read_text())
    assert meta["input_shape"] == [32, 32, expected]
    assert meta["channels"] == (indices or [0, 1, 2, 3])
    assert _input_shape(run) == (None, 32, 32, expected)
    workers = sorted((run / "logs").glob("rank-*.log"))
    assert len(workers) == 2
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics["samples"] == 16  # 2 test cases of 8 slices


def _uncompressed_copy(src: Path, out: Path) -> Path:
    """``src`` (an MSD folder of .nii.gz) with every volume stored as an uncompressed .nii."""
    import nibabel as nib

    meta = json.loads((src / "dataset.json").read_text())
    for sub in ("imagesTr", "labelsTr"):
        (out / sub).mkdir(parents=True)
    for entry in meta["training"]:
        for key in ("image", "label"):
            volume = nib.load(str(src / entry[key]))
            entry[key] = entry[key].removesuffix(".gz")
            nib.save(nib.Nifti1Image(np.asanyarray(volume.dataobj), volume.affine),
                     str(out / entry[key]))
    (out / "dataset.json").write_text(json.dumps(meta))
    return out


def test_slices_of_uncompressed_volumes_read_alone_equal_whole_volume_reads(
        tmp_path: Path, brats4: Path) -> None:
    plain = _uncompressed_copy(brats4, tmp_path / "plain")
    for channels in (None, ("t1gd", "FLAIR")):
        gz = list_split(brats4, num_classes=3, channels=channels)
        nii = list_split(plain, num_classes=3, channels=channels)
        order = np.random.default_rng(0).permutation(len(gz))  # random access, as training
        for i in order:
            a, b = gz.read(int(i)), nii.read(int(i))
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
        assert nii._volume is None  # no whole volume was kept for the .nii slices
