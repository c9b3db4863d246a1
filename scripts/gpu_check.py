"""The torch engine on one GPU: NCCL, bf16, images/s and memory (run by scripts/gpu-check.sh).

Needs only torch (a CUDA build, preinstalled), numpy and this checkout on PYTHONPATH: no
TensorFlow, no Horovod, no network. It writes a small synthetic segmentation set (discs on
noise, 2 classes), a run directory whose spec selects ``dist_strategy`` ``torch_ddp``, runs
the real worker as one rank (the process group is NCCL on a GPU, Gloo in ``--cpu`` mode),
and reads what the run recorded: images/s of the fastest epoch after the first, the peak GPU
memory torch allocated, the test Dice. The result goes to
``benchmarks/results/gpu-check-<host>-<UTC time>.json`` and stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_data(root: Path, n: int, size: int, seed: int = 0) -> None:
    """Discs of random place and radius on noise: a task a U-Net learns in a few epochs."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for split, count in (("train", n), ("test", max(n // 4, 2))):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            cy, cx = rng.uniform(0.25, 0.75, 2) * size
            radius = rng.uniform(0.1, 0.25) * size
            mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2).astype(np.int32)
            image = (0.6 * mask + 0.4 * rng.random((size, size))).astype(np.float32)
            np.save(root / split / "images" / f"{i:04d}.npy", image[..., None])
            np.save(root / split / "masks" / f"{i:04d}.npy", mask)


def write_spec(run_dir: Path, data: Path, *, precision: str, batch: int, epochs: int,
               depth: int, filters: int) -> None:
    sys.path.insert(0, str(ROOT))
    from autocnnp.engine.spec import (ActionChoice, ArchitectureSpec, DataSpec, EvaluationSpec,
                                      Hyperparameters, ModuleChoice, MonitoringSpec,
                                      TrainingSpec, spec_to_dict)

    spec = TrainingSpec(
        source=run_dir / "config.xml", task="imaging_segmentation", parallelism_degree=1,
        architecture=ArchitectureSpec(name="unet", params={"depth": depth,
                                                           "base_filters": filters}),
        data=DataSpec(train=data / "train", test=data / "test", format="pairs",
                      classes=("background", "disc")),
        hyperparameters=Hyperparameters(lr=1e-3, optimizer="adam", loss="dice_crossentropy",
                                        minibatch_size=batch, end_epoch=epochs,
                                        precision=precision),
        generator=(ModuleChoice("train_strategy_def", (
            ActionChoice(type="dist_strategy", implementation="torch_ddp"),)),),
        monitoring=MonitoringSpec(tensorboard=False, checkpoint_every=0),
        # HD95 needs scipy, which this check does not ask the host for
        evaluation=EvaluationSpec(metrics=("dice", "pixel_accuracy", "mean_iou")),
        run_root=run_dir.parent)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "spec.json").write_text(json.dumps(spec_to_dict(spec), indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true",
                        help="dry mode on the CPU (Gloo, fp32, small): checks the path here")
    parser.add_argument("--work", type=Path, default=Path("/tmp/autocnnp-gpu-check"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--size", type=int, help="image side (default 256; 64 with --cpu)")
    parser.add_argument("--samples", type=int, help="training images (default 512; 32 with --cpu)")
    parser.add_argument("--batch", type=int, help="batch size (default 32; 8 with --cpu)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--precision", choices=("bf16", "fp16", "fp32"),
                        help="default bf16 on a GPU, fp32 with --cpu")
    parser.add_argument("--depth", type=int, default=5, help="U-Net depth (thesis size: 5)")
    parser.add_argument("--filters", type=int, default=64, help="U-Net base filters (thesis: 64)")
    args = parser.parse_args(argv)

    import torch

    gpu = torch.cuda.is_available() and not args.cpu
    if not gpu and not args.cpu:
        print("gpu-check: torch sees no CUDA GPU (torch.cuda.is_available() is False); "
              f"torch {torch.__version__} (CUDA build: {torch.version.cuda}). Use --cpu for the "
              "dry mode", file=sys.stderr)
        return 3
    size = args.size or (256 if gpu else 64)
    samples = args.samples or (512 if gpu else 32)
    batch = args.batch or (32 if gpu else 8)
    precision = args.precision or ("bf16" if gpu else "fp32")
    depth, filters = (args.depth, args.filters) if gpu else (min(args.depth, 3), min(args.filters, 8))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    data = args.work / f"data-{size}-{samples}"
    if not (data / "train").is_dir():
        make_data(data, samples, size)
    run_dir = args.work / f"run-{stamp}"
    write_spec(run_dir, data, precision=precision, batch=batch, epochs=args.epochs,
               depth=depth, filters=filters)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONUNBUFFERED="1")
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)  # one rank on its own: no rendezvous
    if not gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "autocnnp.run_manage.worker", str(run_dir)],
                          env=env, cwd=str(ROOT), text=True, capture_output=True)
    wall = time.perf_counter() - began
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        print(f"gpu-check: the worker failed (exit {proc.returncode}); logs in {run_dir}/logs",
              file=sys.stderr)
        return 1
    epochs = [json.loads(line) for line in
              (run_dir / "metrics" / "epochs.jsonl").read_text().splitlines()]
    steady = epochs[1:] or epochs
    best = max(steady, key=lambda r: r["images_per_s"])
    metrics = json.loads((run_dir / "test_metrics.json").read_text())
    log = (run_dir / "logs" / "rank-0.log").read_text()
    result = {
        "check": "gpu" if gpu else "cpu-dry-run", "time": stamp, "host": socket.gethostname(),
        "python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "device": torch.cuda.get_device_name(0) if gpu else "cpu",
        "backend": "nccl" if ", nccl" in log else "gloo", "precision": precision,
        "model": f"unet depth {depth}, {filters} base filters", "image_size": size,
        "batch": batch, "train_images": samples, "epochs": args.epochs,
        "images_per_s": best["images_per_s"], "epoch_images_per_s": [r["images_per_s"] for r in epochs],
        "gpu_memory_mib": max((r.get("gpu_memory_mib", 0.0) for r in epochs), default=0.0) if gpu else None,
        "test_dice": metrics["means"].get("mean_dice_foreground"), "wall_s": round(wall, 1),
        "run_dir": str(run_dir)}
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"gpu-check-{result['check']}-{socket.gethostname()}-{stamp}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\ngpu-check ({result['check']}): {result['device']}, torch {result['torch']} "
          f"(CUDA {result['cuda']}), {result['backend']}, {precision}, {result['model']}, "
          f"{size}x{size}, batch {batch}: {result['images_per_s']:.1f} images/s, peak GPU "
          f"memory {result['gpu_memory_mib']} MiB, test Dice {result['test_dice']:.3f} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
