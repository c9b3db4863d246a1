"""The torch baseline of ``bench_training``: a plain PyTorch DDP script, written by hand.

It trains the same model on the same data as an autocnnp run directory describes
(``spec.json``): the U-Net (``torch_models.build_unet``, the Keras model's twin), the training
split cut in per-rank shards, the same loss, Adam (or SGD) with the learning rate times the
number of ranks, DistributedDataParallel, and a state-dict checkpoint on rank 0 every epoch -
PyTorch's DDP tutorial recipe, nothing else (no validation, no LR schedule, no weight guard,
no NaN guard). Ranks come from mpirun (``OMPI_COMM_WORLD_RANK``/``SIZE``) or torchrun
(``RANK``/``WORLD_SIZE``) and meet at ``MASTER_ADDR:MASTER_PORT``. Rank 0 prints one JSON
line with the time of every epoch after the first and the images/s over them.

    MASTER_ADDR=127.0.0.1 MASTER_PORT=29511 mpirun -np 2 python benchmarks/handwritten_ddp.py RUN_DIR
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import numpy as np
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("RANK", "0")))
    size = int(os.environ.get("OMPI_COMM_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    dist.init_process_group("gloo", init_method=f"tcp://{os.environ['MASTER_ADDR']}:"
                                                f"{os.environ['MASTER_PORT']}",
                            rank=rank, world_size=size)
    torch.set_num_threads(args.threads)
    spec = json.loads((args.run_dir / "spec.json").read_text())
    hp, data, arch = spec["hyperparameters"], spec["data"], spec["architecture"]
    torch.manual_seed(spec["reproducibility"]["seed"])

    from autocnnp.components.datasets import load_split
    from autocnnp.components.models.torch_models import build_unet
    from autocnnp.components.torch_runtime import make_loss

    train = load_split(Path(data["train"]), num_classes=len(data["classes"]),
                       image_size=data["image_size"], split="train")
    n = len(train)
    idx = np.array_split(np.random.default_rng(0).permutation(n), size)[rank]
    x = torch.from_numpy(train.images[idx]).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(train.masks[idx].astype(np.int64))
    batch = hp["minibatch_size"]
    steps = math.ceil((n // size) / batch)
    model = DistributedDataParallel(build_unet(train.images.shape[1:], len(data["classes"]),
                                               **{k: int(v) for k, v in arch["params"].items()}))
    lr = hp["lr"] * size
    optimizer = (torch.optim.Adam(model.parameters(), lr=lr, eps=1e-7)
                 if hp["optimizer"].lower() == "adam"
                 else torch.optim.SGD(model.parameters(), lr=lr, momentum=hp["momentum"]))
    loss_fn = make_loss(hp["loss"])
    ckpt_dir = args.run_dir / "handwritten-checkpoints"
    ckpt_dir.mkdir(exist_ok=True)
    times = []
    for epoch in range(args.epochs):
        start = time.perf_counter()
        order = torch.randperm(len(x))
        model.train()
        for step in range(steps):
            pick = order[(step * batch) % len(x):][:batch]
            loss = loss_fn(y[pick], model(x[pick])).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if rank == 0:  # "save checkpoints only on rank 0" (PyTorch's DDP tutorial)
            torch.save({"model": model.module.state_dict(), "optimizer": optimizer.state_dict()},
                       ckpt_dir / f"checkpoint-{epoch + 1}.pt")
        dist.barrier()
        times.append(time.perf_counter() - start)
    timed = times[1:] or times
    if rank == 0:
        images = steps * batch * size * len(timed)
        print(json.dumps({"ranks": size, "steps_per_epoch": steps,
                          "images_per_epoch": steps * batch * size, "epoch_seconds": timed,
                          "first_epoch_s": times[0], "images_per_s": images / sum(timed)}),
              flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
