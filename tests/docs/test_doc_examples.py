"""The examples of docs/plugins.md and docs/architectures.md run as written.

Each page marks its files with ``<!-- file: NAME -->`` before a fenced block and the commands
to run with ``<!-- run -->``; the test writes the files into an empty folder, runs the
commands there with the real ``autocnnp`` (real MPI ranks, real training) and checks what the
page promises.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"<!-- (file: (?P<name>\S+)|run) -->\n```\w*\n(?P<body>.*?)```", re.S)


def real_ranks(test):
    """Marks of a test that trains on real MPI ranks."""
    for mark in (pytest.mark.slow, pytest.mark.mpi,
                 pytest.mark.skipif(shutil.which("mpirun") is None,
                                    reason="needs mpirun (openmpi-bin)")):
        test = mark(test)
    return test


def doc_blocks(page: str) -> tuple[dict[str, str], list[str]]:
    """The files (name -> text) and the commands of a docs page."""
    files, commands = {}, []
    for match in BLOCK.finditer((ROOT / "docs" / page).read_text()):
        if match["name"]:
            files[match["name"]] = match["body"]
        else:
            commands += [line for line in match["body"].splitlines() if line.strip()]
    return files, commands


def run_page(page: str, where: Path) -> list[subprocess.CompletedProcess]:
    files, commands = doc_blocks(page)
    for name, text in files.items():
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        (where / name).write_text(text)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    results = []
    for command in commands:
        program, *args = command.split()
        assert program == "autocnnp", command
        result = subprocess.run([sys.executable, "-m", "autocnnp", *args], cwd=where, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        results.append(result)
    return results


def run_dir_of(result: subprocess.CompletedProcess) -> Path:
    return Path(result.stdout.strip().splitlines()[-1].removeprefix("run directory: "))


def test_pages_are_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "[docs/plugins.md](docs/plugins.md)" in readme
    assert "[docs/architectures.md](docs/architectures.md)" in readme


def test_plugins_page_documents_every_binding() -> None:
    from autocnnp.generator.bindings import BINDINGS, CONTEXT, EXTRA_VALUES

    page = (ROOT / "docs" / "plugins.md").read_text()
    for name in list(BINDINGS) + list(EXTRA_VALUES):
        assert f"| `{name}` |" in page, name
    for key in CONTEXT:
        assert f"| `{key}` |" in page, key


def test_architecture_size_rule_message(tmp_path: Path) -> None:
    """The page's example refuses a depth its images cannot take, with the quoted line."""
    from autocnnp.components.models import ArchitectureError
    from autocnnp.components.models.user import build_user_model

    files, _ = doc_blocks("architectures.md")
    path = tmp_path / "archi" / "my_unet.py"
    path.parent.mkdir()
    path.write_text(files["archi/my_unet.py"])
    with pytest.raises(ArchitectureError) as info:
        build_user_model(path, (32, 32, 1), 3, {"depth": "7"})
    quoted = re.search(r"failed: ArchitectureError: architecture /home/me/project/archi/my_unet.py: (.*)",
                       (ROOT / "docs" / "architectures.md").read_text())[1]
    assert str(info.value) == f"architecture {path}: {quoted}"


@real_ranks
def test_plugins_page_example_runs_as_written(tmp_path: Path) -> None:
    results = run_page("plugins.md", tmp_path)
    assert results[1].stdout.startswith("plugins.xml: valid (")
    run_dir = run_dir_of(results[2])
    best = json.loads((run_dir / "best_dice.json").read_text())
    assert set(best) == {"epoch", "val_dice"} and 1 <= best["epoch"] <= 3
    log = (run_dir / "logs" / "rank-0.log").read_text()
    assert "NesterovAllreduce (replace train_strategy_def.dist_strategy)" in log
    assert "BestDice (extend train_strategy_def.checkpoint)" in log
    assert (run_dir / "model" / "saved_model.pb").is_file()
    epochs = [json.loads(line) for line in
              (run_dir / "metrics" / "epochs.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert epochs[0]["lr"] == pytest.approx(0.02)  # linear scaling: 0.01 x 2 ranks
    # BestDice halves lr_schedule.scale after each epoch without a better val_dice
    # (patience 1); the policy's callback applies it from the next step on
    best, scale = -1.0, 1.0
    for record in epochs:
        assert record["lr"] == pytest.approx(0.02 * scale), epochs
        if record["val_dice"] > best:
            best = record["val_dice"]
        else:
            scale *= 0.5


@real_ranks
def test_architectures_page_example_runs_as_written(tmp_path: Path) -> None:
    results = run_page("architectures.md", tmp_path)
    assert results[1].stdout.startswith("my_unet.xml: valid (")
    run_dir = run_dir_of(results[2])
    assert (run_dir / "model" / "saved_model.pb").is_file()
    metrics = json.loads((run_dir / "test_metrics.json").read_text())
    assert metrics["samples"] > 0 and 0.0 < metrics["means"]["mean_dice"] <= 1.0
    log = (run_dir / "logs" / "rank-0.log").read_text()
    assert "model my_unet:" in log
