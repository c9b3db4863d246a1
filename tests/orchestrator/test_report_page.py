"""`autocnnp report` draws the curves and writes one self-contained HTML page (issue 14),
checked as a user opens it: in headless Chromium, whose screenshot must show the curves."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.mpi,
              pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs mpirun"),
              pytest.mark.skipif(shutil.which("chromium") is None,
                                 reason="needs chromium: bash scripts/monitoring-tools.sh")]

BLUE, ORANGE = (0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)  # matplotlib's first two line colours


def count_colour(image, rgb, tolerance: int = 12) -> int:
    import numpy as np

    pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    return int((np.abs(pixels - np.array(rgb, dtype=np.int16)) <= tolerance).all(axis=-1).sum())


def test_report_of_repeats_draws_every_repeat_with_the_mean_and_chromium_shows_the_page(
        small_config, cli_env, tmp_path):
    from PIL import Image

    config = small_config(ranks=2, epochs=2)
    text = config.read_text().replace(
        "<run_root>", "<reproducibility><property name=\"repeats\">2</property></reproducibility>\n"
                      "    <run_root>").replace(
        '<monitoring>', '<monitoring><property name="metrics_interval">1</property>')
    config.write_text(text)
    run = subprocess.run([sys.executable, "-m", "autocnnp", "run", str(config)],
                         capture_output=True, text=True, env=cli_env, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    group = next((tmp_path / "runs").glob("small-*"))
    assert (group / "repeats.json").is_file()

    report = subprocess.run([sys.executable, "-m", "autocnnp", "report", str(group)],
                            capture_output=True, text=True, env=cli_env, timeout=300)
    assert report.returncode == 0, report.stderr
    names = ["loss.png", "validation.png", "lr.png", "throughput.png", "system.png"]
    figures = [group / "report" / n for n in names]
    assert f"curves: {', '.join(map(str, figures))}" in report.stdout
    assert f"page: {group / 'report.html'}" in report.stdout
    for figure in figures:
        with Image.open(figure) as image:
            assert image.format == "PNG" and image.size[0] >= 640
            # every figure has drawn lines: the first colour of matplotlib's cycle
            assert count_colour(image, BLUE) > 200, figure
    with Image.open(group / "report" / "loss.png") as loss:
        # two repeats thin and their mean thick, for the training and the validation loss
        assert count_colour(loss, ORANGE) > 200

    page = (group / "report.html").read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 5 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert base64.b64decode(sources[0].split(",", 1)[1]) == figures[0].read_bytes()
    assert "mean of 2 runs" not in page  # in the figures, not in the text
    assert "<h2>Test metrics over 2 runs</h2>" in page
    assert "<th>metric</th><th>mean</th><th>std</th><th>95% CI</th>" in page
    assert "Reproducibility checklist (Renard et al. 2020): " in page
    assert "<td>number of runs given; variance reported</td>" in page

    shot = tmp_path / "page.png"
    browser = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1100,1400", f"--screenshot={shot}", (group / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert shot.is_file(), browser.stderr[-2000:]
    with Image.open(shot) as screen:
        assert screen.size == (1100, 1400)
        # the curves are on the screen: the lines' colours, in the amounts the figures hold
        assert count_colour(screen, BLUE) > 500 and count_colour(screen, ORANGE) > 300
