"""`autocnnp evaluate --overlay --images`: pictures of prediction vs ground truth on the MRI."""

from __future__ import annotations

import shutil

import numpy as np
from PIL import Image

from autocnnp.cli import main


def test_overlays_are_drawn_on_the_images(small_dataset, tmp_path, capsys):
    gt = small_dataset / "test" / "masks"
    pred = tmp_path / "pred"
    shutil.copytree(gt, pred)
    first = sorted(pred.iterdir())[0]
    mask = np.load(first)
    mask[mask == 2] = 1  # white matter predicted as grey matter: "wrong class" (yellow)
    np.save(first, mask)
    out = tmp_path / "overlays"
    assert main(["evaluate", str(pred), str(gt), "--classes", "3", "--overlay", str(out),
                 "--images", str(small_dataset / "test" / "images")]) == 0
    pictures = sorted(out.glob("*.png"))
    assert len(pictures) == 8
    picture = np.asarray(Image.open(pictures[0]))
    assert picture.shape == (256, 256, 3)  # 32x32 slices are enlarged 8x, pixels kept square
    grey = (picture[..., 0] == picture[..., 1]) & (picture[..., 1] == picture[..., 2])
    assert (picture[grey] > 0).any(), "the MRI must show under the overlay"
    yellow = (picture[..., 0] > 150) & (picture[..., 1] > 150) & (picture[..., 2] < 100)
    assert yellow.any()


def test_missing_image_is_named(small_dataset, tmp_path, capsys):
    gt = small_dataset / "test" / "masks"
    assert main(["evaluate", str(gt), str(gt), "--overlay", str(tmp_path / "o"),
                 "--images", str(tmp_path)]) == 2
    stem = sorted(gt.iterdir())[0].stem
    assert f"no image named {stem}.* for the mask {stem}" in capsys.readouterr().err
