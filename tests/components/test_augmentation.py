"""<data><augmentation>: on-the-fly transforms in the training pipeline, the same on image and
mask, seeded by seed/rank/epoch/step, off by default."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from autocnnp.components.datasets import list_split
from autocnnp.components.imgmed.augment import AugmentRanges, augment_batch, batch_rng
from autocnnp.components.rank_runtime import RankDataset
from autocnnp.engine.spec import AugmentationSpec
from autocnnp.generator.context import RankContext
from autocnnp.errors import ConfigError


def _blobs(n: int = 6, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Images of smooth blobs with two channels and masks made from them (1 where the first
    channel is above 0.5)."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:size, :size]
    images = np.zeros((n, size, size, 2), np.float32)
    for i in range(n):
        for _ in range(3):
            cy, cx, r = rng.uniform(12, size - 12, 2).tolist() + [rng.uniform(6, 12)]
            images[i, ..., 0] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        images[i, ..., 1] = 1 - images[i, ..., 0]
    images = np.clip(images, 0, 1)
    return images, (images[..., 0] > 0.5).astype(np.int32)


def _agreement(images: np.ndarray, masks: np.ndarray) -> float:
    return float(np.mean((images[..., 0] > 0.5) == (masks == 1)))


def test_the_same_transform_moves_image_and_mask() -> None:
    images, masks = _blobs()
    ranges = AugmentRanges()  # the thesis's: rotation 45, zoom 0.8-1.2, translation 25.6
    out_images, out_masks = augment_batch(images, masks, batch_rng(0, 0, 0, 0), ranges,
                                          ("horizontal", "vertical"))
    assert out_images.shape == images.shape and out_images.dtype == np.float32
    assert out_masks.dtype == masks.dtype and set(np.unique(out_masks)) <= {0, 1}
    assert _agreement(images, out_masks) < 0.97  # the masks really moved
    assert _agreement(out_images, out_masks) > 0.99  # ... with their images
    # the test can fail: images and masks transformed by different draws disagree
    other, _ = augment_batch(images, masks, batch_rng(0, 0, 0, 1), ranges, ("horizontal",))
    assert _agreement(other, out_masks) < 0.97


def test_flips_alone_are_exact() -> None:
    images, masks = _blobs()
    out_images, out_masks = augment_batch(images, masks, batch_rng(1, 0, 0, 0),
                                          AugmentRanges(0.0, (1.0, 1.0), 0.0), ("horizontal",))
    for i in range(len(images)):
        flipped = np.array_equal(out_images[i], images[i, :, ::-1])
        assert flipped or np.array_equal(out_images[i], images[i])
        assert np.array_equal(out_masks[i], masks[i, :, ::-1] if flipped else masks[i])


def _pipeline(samples, augmentation, seed: int = 3, rank: int = 1):
    from autocnnp.components.training import make_datasets

    n = len(samples)
    data = RankDataset(train=samples, valid=None, valid_indices=None, rank=rank, size=2,
                       seed=seed, steps_per_epoch=-(-(-(-n // 2)) // 4), n_train_total=n,
                       n_valid_total=0, batch_size=4, augmentation=augmentation)
    ctx = RankContext(spec=None, run_dir=Path("."),  # make_datasets reads these two values
                      values={"dataset": data,
                              "task": SimpleNamespace(input_shape=samples.sample_shape)})
    train, _ = make_datasets(ctx)
    return data, train


def _epochs(train, steps: int, epochs: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.numpy(), y.numpy()) for x, y in train.take(steps * epochs)]


def test_off_by_default_the_pipeline_reads_the_batches_as_they_are(small_dataset) -> None:
    samples = list_split(small_dataset / "train", num_classes=3)
    data, train = _pipeline(samples, None)
    steps = data.steps_per_epoch
    got = _epochs(train, steps, 2)
    expected = [samples.read_batch(b) for e in (0, 1) for b in data.train_batches(e)]
    assert len(got) == len(expected) == 2 * steps
    for (x, y), (ex, ey) in zip(got, expected):
        np.testing.assert_array_equal(x, ex)
        np.testing.assert_array_equal(y, ey)


def test_augmented_pipeline_repeats_with_the_seed_and_changes_with_the_epoch(
        small_dataset) -> None:
    samples = list_split(small_dataset / "train", num_classes=3)
    spec = AugmentationSpec(flip=("horizontal",))
    data, train = _pipeline(samples, spec)
    steps = data.steps_per_epoch
    first = _epochs(train, steps, 2)
    _, again = _pipeline(samples, spec)
    second = _epochs(again, steps, 2)
    for (x, y), (x2, y2) in zip(first, second):
        assert x.tobytes() == x2.tobytes() and y.tobytes() == y2.tobytes()
    # what was read, transformed by this rank's draws for that epoch and step
    batch = data.train_batches(1)[0]
    read = samples.read_batch(batch)
    np.testing.assert_array_equal(first[steps][0], data.augment(*read, 1, 0)[0])
    # the same samples get other transforms in another epoch, on another rank, with another seed
    in_epoch_0 = data.augment(*read, 0, 0)[0]
    assert not np.array_equal(in_epoch_0, first[steps][0])
    _, other_seed = _pipeline(samples, spec, seed=4)
    assert not np.array_equal(_epochs(other_seed, steps, 1)[0][0], first[0][0])
    # the pipeline augmented: nothing equals the batch as read
    assert not np.array_equal(first[steps][0], read[0])


@pytest.mark.parametrize("attributes,element,message", [
    ('rotation="200"', "<augmentation>", "rotation must be within 0..180 degrees, got 200"),
    ('zoom="1.2 0.8"', "<augmentation>",
     "zoom must be 'MIN MAX' with 0 < MIN <= MAX, got 1.2 0.8"),
    ('zoom="big"', '<augmentation zoom="big">',
     "expected 'MIN MAX' scale factors, e.g. '0.8 1.2'"),
    ('flip="diagonal"', "<augmentation>", "unknown flip 'diagonal'; known: horizontal, vertical"),
    ('translation="-3"', "<augmentation>", "translation must be >= 0 pixels, got -3"),
])
def test_bad_augmentation_settings_are_named_at_their_line(tmp_path, small_dataset,
                                                           attributes, element,
                                                           message) -> None:
    from autocnnp.engine.validate import load_spec

    config = _config(tmp_path, small_dataset, f"<augmentation {attributes}/>")
    with pytest.raises(ConfigError) as err:
        load_spec(config)
    assert [str(p) for p in err.value.problems] == [f"{config}:8: {element}: {message}"]


def test_augmentation_defaults_are_the_thesis_ranges(tmp_path, small_dataset) -> None:
    from autocnnp.engine.validate import load_spec

    assert load_spec(_config(tmp_path, small_dataset, "")).data.augmentation is None
    spec = load_spec(_config(tmp_path, small_dataset, '<augmentation flip="horizontal"/>'))
    assert spec.data.augmentation == AugmentationSpec(45.0, (0.8, 1.2), 25.6, ("horizontal",))


CONFIG = """<system_config>
  <task name="imaging_segmentation">
    <parallelism-degree>2</parallelism-degree>
    <CNN_archi><name>unet</name><param name="depth">2</param><param name="base_filters">4</param></CNN_archi>
    <data format="pairs">
      <train><path>{data}/train</path></train>
      <valid><path>{data}/valid</path></valid>
      {augmentation}
      <test><path>{data}/test</path></test>
      <classes>background grey_matter white_matter</classes>
    </data>
    <hyperparameters>
      <property name="lr">1e-3</property>
      <property name="optimizer">adam</property>
      <property name="minibatch_size">4</property>
      <property name="end_epoch">2</property>
    </hyperparameters>
    <evaluation><property name="metrics">dice mean_iou</property></evaluation>
    <deployment backend="local"><property name="threads_per_rank">1</property></deployment>
    <reproducibility><property name="deterministic">true</property></reproducibility>
    <monitoring><property name="tensorboard">false</property></monitoring>
    <run_root>{runs}</run_root>
  </task>
</system_config>
"""


def _config(tmp_path: Path, data: Path, augmentation: str, name: str = "c.xml") -> Path:
    path = tmp_path / name
    path.write_text(CONFIG.format(data=data, augmentation=augmentation, runs=tmp_path / "runs"))
    return path


def _run(config: Path, env: dict) -> list[tuple[float, float]]:
    done = subprocess.run([sys.executable, "-m", "autocnnp", "run", str(config)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    run = Path(done.stdout.strip().splitlines()[-1].removeprefix("run directory: "))
    rows = [json.loads(line) for line in
            (run / "metrics" / "epochs.jsonl").read_text().splitlines() if line.strip()]
    return [(r["loss"], r["val_loss"]) for r in rows]


@pytest.mark.slow
@pytest.mark.mpi
def test_an_augmented_deterministic_run_repeats_bit_for_bit(tmp_path, small_dataset,
                                                            cli_env) -> None:
    augmented = _config(tmp_path, small_dataset,
                        '<augmentation flip="horizontal vertical"/>', "aug.xml")
    first, second = _run(augmented, cli_env), _run(augmented, cli_env)
    assert first == second
    plain = _run(_config(tmp_path, small_dataset, "", "plain.xml"), cli_env)
    assert [loss for loss, _ in plain] != [loss for loss, _ in first]
