"""Build the MNI152 brain-tissue demo dataset (no download: the data ships with nilearn).

Cuts axial slices of the MNI ICBM152 2009 T1 template, labels them background (0), grey
matter (1) and white matter (2) from the template's tissue probability maps, and writes
train/valid/test folders of .npy image/mask pairs plus dataset.json. Every 5th slice is held
out for test and every 5th offset by 2 for validation (--seed picks another of the 5 folds).

With --msd, builds instead a Medical Segmentation Decathlon task folder of CASES labelled
cases (imagesTr/, labelsTr/) and 2 unlabelled ones (imagesTs/), each a SIZE x SIZE x 8 NIfTI
volume cut from the same template at a random height, crop, flip, gain, gamma and noise, with
a "site" field (A/B) in dataset.json's training entries: a folder of cases for
<cases>/<split> (case-level splits, k-fold cross-validation). --modalities 4 writes 4D volumes
of BRATS's four modalities (FLAIR, T1w, t1gd, T2w: other intensity mappings of the same
anatomy), which train as 4 input channels; --depth sets the slices per volume.

Re-running into a complete dataset with the same options does nothing.

Example:
  autocnnp demo-data data/mni152
  autocnnp demo-data data/mni152-256 --size 256 --slices 100
  autocnnp demo-data data/Task90_Brain --msd --cases 12 --size 32
  autocnnp demo-data data/Task91_Brats4 --msd --modalities 4 --size 64 --depth 16
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "build the MNI152 brain-tissue demo dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``OUT``, ``--size``, ``--slices`` and ``--seed``."""
    parser.add_argument("out", metavar="OUT", type=Path, help="dataset folder to create")
    parser.add_argument("--size", type=int, default=128,
                        help="side of the square slices in pixels (default: 128)")
    parser.add_argument("--slices", type=int, default=150,
                        help="axial slices cut around the middle of the brain (default: 150)")
    parser.add_argument("--seed", type=int, default=0,
                        help="which of the 5 deterministic test/valid folds; with --msd, the "
                             "seed of the cases (default: 0)")
    parser.add_argument("--msd", action="store_true",
                        help="build an MSD task folder of cases instead (see above)")
    parser.add_argument("--cases", type=int, default=12,
                        help="with --msd: labelled cases in imagesTr (default: 12)")
    parser.add_argument("--modalities", type=int, default=1,
                        help="with --msd: channels of each volume, 1..4 (default: 1, a 3D "
                             "T1 volume; 4: FLAIR, T1w, t1gd, T2w as BRATS)")
    parser.add_argument("--depth", type=int, default=8,
                        help="with --msd: slices per volume (default: 8)")


def run(args: argparse.Namespace) -> int:
    """Build (or find complete) the dataset and print a short summary."""
    from autocnnp.components.demo_data import build_demo_dataset, build_msd_demo

    if args.msd:
        meta = build_msd_demo(args.out, cases=args.cases, size=args.size, seed=args.seed,
                              depth=args.depth, modalities=args.modalities)
        state = "built" if meta["created"] else "already complete:"
        shape = f"{args.size}x{args.size}x{args.depth}" + (
            f"x{args.modalities}" if args.modalities > 1 else "")
        print(f"{state} MSD task folder {args.out}: {meta['numTraining']} cases in imagesTr, "
              f"{meta['numTest']} in imagesTs ({shape} volumes)")
        print(f"train on it with <data format=\"msd\"><cases><path>{args.out}</path></cases>"
              f"<split folds=\"3\"/>")
        return 0
    meta = build_demo_dataset(args.out, size=args.size, n_slices=args.slices, seed=args.seed)
    splits = meta["splits"]
    size = meta["image_shape"]
    counts = ", ".join(f"{name} {splits[name]}" for name in ("train", "valid", "test"))
    labels = ", ".join(f"{k} {v}" for k, v in meta["labels"].items())
    if meta["created"]:
        print(f"built demo dataset in {args.out}: {counts} slices of {size[0]}x{size[1]}")
    else:
        print(f"demo dataset in {args.out} is already complete ({counts} slices of "
              f"{size[0]}x{size[1]}); nothing to do")
    print(f"labels: {labels}")
    print(f"train it with data path {args.out}/train (format pairs, {meta['num_classes']} classes)")
    return 0
