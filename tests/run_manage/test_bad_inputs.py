"""Bad inputs at run time fail with exit status 2 and a message naming the file: before
training starts when the launcher's check sees them (pairing, headers, one sample per split),
otherwise when the rank that reads the file does (label values: the header cannot tell)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def run(config: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autocnnp", "run", str(config)], capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.fixture
def own_data(tmp_path, small_dataset):
    data = tmp_path / "data"
    shutil.copytree(small_dataset, data)
    return data


def make_config(small_config, data: Path, arch_file: Path | None = None) -> Path:
    path = small_config(ranks=2, epochs=1)
    text = path.read_text()
    start = text.index("<train><path>") + len("<train><path>")
    old_root = text[start:text.index("/train</path>")]
    text = text.replace(old_root, str(data))
    if arch_file is not None:
        text = text.replace('<CNN_archi><name>unet</name><param name="depth">2</param><param name="base_filters">4</param></CNN_archi>',
                            f"<CNN_archi><path>{arch_file}</path></CNN_archi>")
    path.write_text(text)
    return path


def test_unreadable_image(small_config, own_data, cli_env):
    victim = sorted((own_data / "train" / "images").iterdir())[3]
    victim.write_bytes(b"not an npy file")
    result = run(make_config(small_config, own_data), cli_env)
    assert result.returncode == 2
    assert str(victim) in result.stderr
    assert "Traceback" not in result.stderr
    assert not (own_data.parent / "runs").exists() or not any((own_data.parent / "runs").iterdir())


def test_mask_image_shape_mismatch(small_config, own_data, cli_env):
    mask = sorted((own_data / "valid" / "masks").iterdir())[0]
    np.save(mask, np.zeros((16, 16), dtype=np.uint8))
    result = run(make_config(small_config, own_data), cli_env)
    assert result.returncode == 2
    assert mask.name in result.stderr and "(16, 16)" in result.stderr and "(32, 32)" in result.stderr


def test_labels_outside_declared_classes(small_config, own_data, cli_env):
    mask = sorted((own_data / "test" / "masks").iterdir())[1]
    labels = np.load(mask)
    labels[0, 0] = 7
    np.save(mask, labels)
    result = run(make_config(small_config, own_data), cli_env)
    assert result.returncode == 2
    assert str(mask) in result.stderr and "7" in result.stderr


@pytest.mark.slow
@pytest.mark.mpi
def test_architecture_whose_output_does_not_fit_the_classes(small_config, own_data, cli_env, tmp_path):
    arch = tmp_path / "two_class_net.py"
    arch.write_text("def build_model(input_shape, num_classes, **params):\n"
                    "    import tensorflow as tf\n"
                    "    x = tf.keras.Input(shape=input_shape)\n"
                    "    y = tf.keras.layers.Conv2D(2, 1, activation='softmax')(x)\n"
                    "    return tf.keras.Model(x, y)\n")
    result = run(make_config(small_config, own_data, arch), cli_env)
    assert result.returncode == 2  # the rank's ArchitectureError: a config problem
    assert str(arch) in result.stderr
    # every rank builds the same model and fails the same way: the launcher names the first
    # to fail, whichever that is (rank 1 when both start under load)
    assert re.search(r"rank [01] on \S+ failed: ArchitectureError", result.stderr), result.stderr
    assert "output has shape (32, 32, 2); expected (32, 32, 3)" in result.stderr, result.stderr
    assert "epoch 1/1" not in result.stdout
