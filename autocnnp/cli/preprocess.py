"""ImgMed: cut NIfTI volumes (3D or 4D, .nii/.nii.gz) into 2D training slices.

SOURCE is a NIfTI file, a folder of them, or a Medical Segmentation Decathlon task folder
(imagesTr/ and labelsTr/ are used). Slices are cut along --axis, normalised, resized and
written to OUT/images (and OUT/masks) in the layout training reads, with OUT/manifest.json
recording the source file, slice index and transform of every output.

Re-running the same command resumes: outputs already listed in the manifest are skipped.
Masks are never written lossy (png or npy only).

Examples:
  autocnnp preprocess data/Task01_BrainTumour data/brats-2d --slices 70 --size 512 --channel 0
  autocnnp preprocess scans/ out/ --masks labels/ --range 40:110 --format png
  autocnnp preprocess scans/ out-aug/ --masks labels/ --augment 4 --seed 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "ImgMed: NIfTI volumes to 2D training slices"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the preprocessing options."""
    parser.add_argument("source", metavar="SOURCE", type=Path,
                        help="NIfTI file, folder of NIfTI files, or MSD task folder")
    parser.add_argument("out", metavar="OUT", type=Path, help="output folder")
    parser.add_argument("--masks", type=Path, default=None,
                        help="mask volume or folder of mask volumes (matched by file name)")
    parser.add_argument("--axis", type=int, default=2, choices=(0, 1, 2),
                        help="slice axis (default: 2, axial for RAS volumes)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--slices", type=int, default=None, metavar="N",
                       help="N consecutive slices around the centre of each volume "
                            "(the thesis used 70)")
    which.add_argument("--range", dest="slice_range", default=None, metavar="A:B",
                       help="slices A..B-1 of each volume")
    parser.add_argument("--size", type=int, default=None,
                        help="resize slices to SIZE x SIZE (images bilinear, masks nearest)")
    parser.add_argument("--normalize", default="minmax", choices=("minmax", "zscore", "none"),
                        help="intensity normalisation per volume (default: minmax)")
    parser.add_argument("--format", default="npy",
                        help="image format: npy, png or jpg (default: npy)")
    parser.add_argument("--mask-format", default=None,
                        help="mask format: npy or png (default: npy for npy images, else png)")
    parser.add_argument("--channel", type=int, default=None,
                        help="channel of 4D volumes (default: 0)")
    parser.add_argument("--augment", type=int, default=0, metavar="N",
                        help="N augmented copies per slice (rotation +-45, zoom 0.8-1.2, "
                             "shift up to 25.6 px)")
    parser.add_argument("--seed", type=int, default=0, help="augmentation seed (default: 0)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    """Run the pipeline and print what was written and skipped."""
    from autocnnp.components.imgmed.pipeline import run_preprocessing
    from autocnnp.components.imgmed.slicing import parse_range
    from autocnnp.engine.spec import PreprocessingSpec

    spec = PreprocessingSpec(
        source=args.source, output=args.out, masks=args.masks, axis=args.axis,
        slices=args.slices,
        slice_range=parse_range(args.slice_range) if args.slice_range else None,
        size=args.size, normalize=args.normalize, format=args.format, channel=args.channel)
    summary = run_preprocessing(spec, progress=not args.no_progress, augment=args.augment,
                                seed=args.seed, mask_format=args.mask_format)
    shape = summary["image_shape"]
    size = f" of {shape[0]}x{shape[1]}" if shape else ""
    print(f"{summary['total']} slices{size} from {summary['volumes']} volume(s) in "
          f"{summary['output']}: {summary['written']} written, {summary['skipped']} already done")
    print(f"manifest: {summary['manifest']}")
    return 0
