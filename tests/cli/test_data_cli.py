"""The demo-data, preprocess and evaluate subcommands through ``autocnnp.cli.main``."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from autocnnp.cli import main

EXAMPLE4D = Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "mni"
    assert main(["demo-data", str(out), "--size", "32", "--slices", "10"]) == 0
    return out


def test_demo_data_builds_then_says_nothing_to_do(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mni"
    assert main(["demo-data", str(out), "--size", "32", "--slices", "10", "--seed", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"built demo dataset in {out}: train 6, valid 2, test 2 slices of 32x32",
        "labels: 0 background, 1 grey matter, 2 white matter",
        f"train it with data path {out}/train (format pairs, 3 classes)",
    ]
    assert main(["demo-data", str(out), "--size", "32", "--slices", "10", "--seed", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        f"demo dataset in {out} is already complete (train 6, valid 2, test 2 slices of 32x32); "
        "nothing to do")


def test_demo_data_into_a_foreign_folder_fails_and_touches_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "keep.txt").write_text("precious")
    assert main(["demo-data", str(tmp_path), "--size", "16", "--slices", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"autocnnp demo-data: error: {tmp_path}: exists, is not empty")
    assert (tmp_path / "keep.txt").read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_preprocess_writes_slices_and_resumes(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = ["preprocess", str(EXAMPLE4D), str(out), "--range", "4:10", "--size", "32",
            "--channel", "1", "--no-progress"]
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"6 slices of 32x32 from 1 volume(s) in {out}: 6 written, 0 already done",
        f"manifest: {out / 'manifest.json'}"]
    assert main(argv) == 0
    assert "0 written, 6 already done" in capsys.readouterr().out
    assert len(list((out / "images").iterdir())) == 6


def test_preprocess_bad_inputs_exit_2_naming_the_file(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a nifti")
    assert main(["preprocess", str(bad), str(tmp_path / "o"), "--no-progress"]) == 2
    assert capsys.readouterr().err.startswith(
        f"autocnnp preprocess: error: {bad}: cannot read NIfTI header")
    assert main(["preprocess", str(EXAMPLE4D), str(tmp_path / "o"), "--masks", str(EXAMPLE4D),
                 "--mask-format", "jpg", "--no-progress"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "autocnnp preprocess: error: masks are never written lossy: format 'jpg' is not allowed "
        "for masks; use png or npy", "  remedy: pass --mask-format png (or npy)"]
    assert main(["preprocess", str(EXAMPLE4D), str(tmp_path / "o"), "--range", "20:40",
                 "--no-progress"]) == 2
    assert f"{EXAMPLE4D}: slice range 20:40 goes past the last slice" in capsys.readouterr().err


def test_evaluate_prints_table_and_writes_json_csv_overlays(
        demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred = tmp_path / "pred"
    pred.mkdir()
    for f in (demo / "test" / "masks").iterdir():
        mask = np.load(f)
        np.save(pred / f.name, np.roll(mask, 1, axis=1))
    argv = ["evaluate", str(pred), str(demo / "test"), "--classes", "3",
            "--json", str(tmp_path / "m.json"), "--csv", str(tmp_path / "m.csv"),
            "--overlay", str(tmp_path / "ov")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "SegEval" in out and "mean" in out and "f.w. IoU" in out
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["items"] == 2 and 0.5 < data["means"]["mean_dice"] < 1.0
    assert (tmp_path / "m.csv").read_text().startswith("class,name,dice,")
    assert len(list((tmp_path / "ov").glob("*.png"))) == 2


def test_evaluate_failure_exits_2_and_keeps_existing_outputs(
        demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred = tmp_path / "pred"
    pred.mkdir()
    first = sorted((demo / "test" / "masks").iterdir())[0]
    for f in (demo / "test" / "masks").iterdir():
        np.save(pred / f.name, np.load(f))
    np.save(pred / first.name, np.zeros((5, 5), np.uint8))
    (tmp_path / "m.json").write_text('{"old": true}')
    assert main(["evaluate", str(pred), str(demo / "test"), "--json",
                 str(tmp_path / "m.json")]) == 2
    assert capsys.readouterr().err.splitlines()[0] == (
        f"autocnnp evaluate: error: {pred / first.name}: prediction shape (5, 5) does not match "
        f"ground truth {first} shape (32, 32)")
    assert (tmp_path / "m.json").read_text() == '{"old": true}'
    assert main(["evaluate", str(tmp_path / "missing"), str(demo / "test")]) == 2
    assert f"{tmp_path / 'missing'}: no such file or folder" in capsys.readouterr().err


def test_evaluate_unknown_labels_name_the_file(demo: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(demo / "test"), str(demo / "test"), "--classes", "2"]) == 2
    err = capsys.readouterr().err
    assert "labels [2] outside the declared classes 0..1" in err
    assert str(demo / "test" / "masks") in err
