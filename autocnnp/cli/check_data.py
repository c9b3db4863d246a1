"""Check the data of a training config: every split, every sample, every problem at once.

For each configured split (train, valid, test): the listing (image/mask pairing, dataset.json,
volume headers: shapes and channels, and the voxel spacing and affine of image and mask
agreeing per case), then every sample read once, one at a time, so memory
stays flat however large the data: unreadable files, image/mask shape mismatches, NaN or
infinite intensities, non-integer masks, labels outside the declared classes, samples of
another size. Every problem is printed with its file; masks holding only background are
listed as notes. Exit status 0 when the data is usable, 2 when it is not.

``autocnnp run`` does the cheap part of this (listing, headers, one sample per split) before
it launches; a file found bad later fails the job with its name.

Example:
  autocnnp check-data configs/quickstart.xml
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from autocnnp.engine.validate import load_spec
from autocnnp.errors import DataError

HELP = "check every sample of a config's data and report every problem"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="the XML training config")
    parser.add_argument("--notes", action="store_true",
                        help="print every note (empty masks), not only their count")


def _progress(split: str) -> object:
    state = {"last": 0.0}

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - state["last"] > 1.0:
            state["last"] = now
            end = "\n" if done == total else ""
            print(f"\r{split}: {done}/{total} samples read", end=end, file=sys.stderr,
                  flush=True)

    return show


def run(args: argparse.Namespace) -> int:
    from autocnnp.components.datasets import list_split, scan_split

    spec = load_spec(args.config, [])
    data = spec.data
    problems: list[str] = []
    total = 0
    for split in ("train", "valid", "test"):
        path = getattr(data, split)
        if path is None:
            continue
        try:
            samples = list_split(path, format=data.format, num_classes=data.num_classes,
                                 image_size=data.image_size, split=split,
                                 channels=data.channels)
        except DataError as exc:
            problems.append(f"{split}: {exc}")
            continue
        found, notes = scan_split(samples, _progress(split))
        total += len(samples)
        problems += [f"{split}: {exc}" for exc in found]
        if notes:
            shown = notes if args.notes else notes[:0]
            for note in shown:
                print(f"note: {split}: {note}")
            print(f"{split}: {len(notes)} of {len(samples)} masks hold only background"
                  + ("" if args.notes else " (--notes lists them)"))
    for problem in problems:
        print(problem)
    if problems:
        print(f"{args.config}: {len(problems)} problem(s) in the data", file=sys.stderr)
        return 2
    print(f"{args.config}: data OK ({total} samples)")
    return 0
