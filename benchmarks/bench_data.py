"""Memory of the data path: peak RSS (VmHWM) of every rank and of the launcher for one epoch
of ``autocnnp run`` with 2 ranks, by dataset size, streaming against the in-memory path.

Datasets: the MNI152 demo slices at 128x128 (``autocnnp demo-data``), repeated under new
names (hard links) up to N slices, split 60/20/20 into train/valid/test. The model is a small
U-Net (depth 2, 4 filters; ``--model quickstart`` takes the quickstart's depth 3, 16 filters)
so that an epoch of 15,000 slices fits in minutes on 2 shared cores: what grows with the
data is the data path, which is what this measures. Evaluation: overlap metrics only (no
HD95, the slow part).

Modes, each a real ``autocnnp run`` (the launcher, mpirun, 2 workers):

* ``none``: ``<data cache="none">``, every rank streams its shard (this code);
* ``memory``: ``<data cache="memory">``, every rank reads the splits whole (this code);
* ``before``: the code before streaming (``--before PATH``: a checkout of it, e.g.
  ``git worktree add /tmp/before 27fbf61``), which read every split whole on the launcher
  and on every rank.

A fourth set, ``msd4``: a Medical Segmentation Decathlon folder of 20 four-modality cases at
240x240x155 (3,100 slices; ``demo-data --msd --modalities 4``, FLAIR/T1w/t1gd/T2w made from
the MNI152 template), cut into train/valid/test by ``<split>`` (16/2/2 cases; ``--msd-test``
holds out more for test, for a shorter epoch), trained with 4 input channels, streaming. Its volumes are written uncompressed (``.nii``): a slice is then
read alone; a ``.nii.gz`` volume must be decoded whole for every slice read in random order
(about 0.5 s for one of these here), which would make the epoch, not the memory, the story.

The datasets are built once into ``--cache`` (default ``/tmp/autocnnp-bench-data``) and
reused by later runs; only the run directories are temporary.

Peak RSS is read from ``/proc/PID/status`` (VmHWM, the high-water mark) every 0.2 s while
the job runs. The projection table scales the measured per-slice growth to the thesis's
workload (33,880 training slices at 512x512, 1 and 4 channels). Throughput (``images_per_s``)
is only comparable on an idle machine: on shared cores it measures the neighbours.

    python benchmarks/bench_data.py [--sizes 150,1500,15000] [--before PATH] [--quick]
                                    [--msd/--no-msd] [--cache DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
THESIS_SLICES = 33_880
MODELS = {"small": (2, 4), "quickstart": (3, 16)}
CACHE = Path(os.environ.get("AUTOCNNP_BENCH_DATA", "/tmp/autocnnp-bench-data"))
#: the MSD set: cases of 240x240x155 voxels, four modalities
MSD_CASES, MSD_SIZE, MSD_DEPTH = 20, 240, 155

CONFIG = """<system_config>
  <task name="imaging_segmentation">
    <parallelism-degree>2</parallelism-degree>
    <CNN_archi><name>unet</name><param name="depth">{depth}</param><param name="base_filters">{filters}</param></CNN_archi>
    <data format="pairs"{cache}>
      <train><path>{data}/train</path></train>
      <valid><path>{data}/valid</path></valid>
      <test><path>{data}/test</path></test>
      <classes>background grey_matter white_matter</classes>
    </data>
    <hyperparameters>
      <property name="lr">1e-3</property>
      <property name="optimizer">adam</property>
      <property name="loss">dice_crossentropy</property>
      <property name="minibatch_size">8</property>
      <property name="end_epoch">1</property>
    </hyperparameters>
    <evaluation><property name="metrics">dice mean_iou</property></evaluation>
    <deployment backend="local"><property name="threads_per_rank">1</property></deployment>
    <monitoring><property name="tensorboard">false</property></monitoring>
    <run_root>{runs}</run_root>
  </task>
</system_config>
"""


MSD_CONFIG = """<system_config>
  <task name="imaging_segmentation">
    <parallelism-degree>2</parallelism-degree>
    <CNN_archi><name>unet</name><param name="depth">{depth}</param><param name="base_filters">{filters}</param></CNN_archi>
    <data format="msd" cache="none">
      <cases><path>{data}</path></cases>
      <split test="{test}" valid="0.1" seed="0"/>
      <classes>background grey_matter white_matter</classes>
    </data>
    <hyperparameters>
      <property name="lr">1e-3</property>
      <property name="optimizer">adam</property>
      <property name="loss">dice_crossentropy</property>
      <property name="minibatch_size">8</property>
      <property name="end_epoch">1</property>
    </hyperparameters>
    <evaluation><property name="metrics">dice mean_iou</property></evaluation>
    <deployment backend="local"><property name="threads_per_rank">1</property></deployment>
    <monitoring><property name="tensorboard">false</property></monitoring>
    <run_root>{runs}</run_root>
  </task>
</system_config>
"""


def build_msd4(out: Path) -> Path:
    """The four-modality MSD set (see the module docstring), built once."""
    from autocnnp.components.demo_data import build_msd_demo

    build_msd_demo(out, cases=MSD_CASES, test_cases=0, size=MSD_SIZE, depth=MSD_DEPTH,
                   modalities=4, compress=False)
    return out


def _folder_mib(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1)


def build_repeated(demo: Path, out: Path, slices: int) -> Path:
    """``slices`` samples (60/20/20) made of the demo's files under new names (hard links)."""
    if (out / "done").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    counts = {"train": slices * 3 // 5, "valid": slices // 5}
    counts["test"] = slices - counts["train"] - counts["valid"]
    for split, count in counts.items():
        sources = sorted((demo / split / "images").iterdir())
        for sub in ("images", "masks"):
            (out / split / sub).mkdir(parents=True)
        for i in range(count):
            src = sources[i % len(sources)]
            for sub in ("images", "masks"):
                os.link(demo / split / sub / src.name, out / split / sub / f"{i:06d}.npy")
    (out / "done").write_text(json.dumps(counts))
    return out


def _hwm_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _workers(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # the workers are python processes; mpirun's own command line names them too
        if b"python" in Path(cmd[0].decode(errors="replace")).name.encode() \
                and b"autocnnp.run_manage.worker" in cmd and any(marker.encode() in c for c in cmd):
            pids.append(int(entry.name))
    return pids


def measure(config: Path, code: Path, runs: Path) -> dict:
    """Run ``autocnnp run config`` with ``code`` on PYTHONPATH; peak RSS of everything."""
    env = dict(os.environ, PYTHONPATH=str(code), AUTOCNNP_INTRA_OP_THREADS="1")
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "autocnnp", "run", str(config)], env=env,
                            cwd=str(code), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    peaks: dict[str, int] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            value = _hwm_kib(proc.pid)
            if value:
                peaks["launcher"] = max(peaks.get("launcher", 0), value)
            for pid in _workers(str(runs)):
                value = _hwm_kib(pid)
                if value:
                    peaks[f"pid{pid}"] = max(peaks.get(f"pid{pid}", 0), value)
            time.sleep(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    output, _ = proc.communicate()
    done.set()
    thread.join()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"autocnnp run {config} failed:\n{output[-3000:]}")
    ranks = sorted((v for k, v in peaks.items() if k.startswith("pid")), reverse=True)
    run_dir = sorted(runs.iterdir())[-1]
    summary = json.loads((run_dir / "metrics" / "train_summary.json").read_text())
    shutil.rmtree(runs, ignore_errors=True)
    return {"launcher_mib": round(peaks.get("launcher", 0) / 1024, 1),
            "rank_mib": [round(v / 1024, 1) for v in ranks],
            "wall_s": round(wall, 1), "train_s": round(summary["seconds"], 1),
            "images_per_s": round(summary["images_per_s"], 1)}


#: batches a streaming rank holds at most, assumed for the projection: the ``prefetch`` buffer
#: and the batches being read in parallel (AUTOTUNE keeps a few of each on a few cores)
BUFFERED_BATCHES = 10


def projection(rows: list[dict], batch: int = 8) -> list[dict]:
    """Per-rank peak RSS projected to the thesis workload (33,880 training slices at 512x512,
    1 and 4 channels; a float32 image channel is 4 bytes a pixel, the int32 mask 4).

    Whole-split paths (``before``, ``memory``): the largest measured peak plus the measured
    growth per training slice, scaled by the bytes of a slice, for the slices not measured.
    Streaming (``none``): the largest measured peak plus :data:`BUFFERED_BATCHES` batches of
    512x512 data in place of the measured 128x128 ones (its measured growth per slice is
    shown: it is noise, not data). The model's own memory at 512x512 is left out of both (the
    same for both paths)."""
    out = []
    for mode in sorted({r["mode"] for r in rows if r["benchmark"] == "data"}):
        mine = sorted((r for r in rows if r["mode"] == mode and "set" not in r),
                      key=lambda r: r["slices"])
        if len(mine) < 2:
            continue
        lo, hi = mine[0], mine[-1]
        train_lo, train_hi = lo["slices"] * 3 // 5, hi["slices"] * 3 // 5
        per_slice = (max(hi["rank_mib"]) - max(lo["rank_mib"])) / max(train_hi - train_lo, 1)
        for channels in (1, 4):
            bytes_per_pixel = 4 * channels + 4
            scale = (512 * 512) / (128 * 128) * bytes_per_pixel / 8
            if mode == "none":
                buffers = BUFFERED_BATCHES * batch * bytes_per_pixel / 2**20
                rank_mib = max(hi["rank_mib"]) + buffers * (512 * 512 - 128 * 128 * 8
                                                            / bytes_per_pixel)
            else:
                rank_mib = max(hi["rank_mib"]) + per_slice * scale * (THESIS_SLICES - train_hi)
            out.append({"benchmark": "projection", "mode": mode, "channels": channels,
                        "slices": THESIS_SLICES, "size": "512x512",
                        "measured_mib_per_training_slice": round(per_slice, 4),
                        "rank_peak_gib": round(rank_mib / 1024, 1),
                        "node_of_4_ranks_gib": round(4 * rank_mib / 1024, 1)})
    return out


def acceptance(rows: list[dict]) -> list[dict]:
    """Issue 11's memory criterion: per-rank peak at the largest size within 1.2x of the
    smallest, streaming."""
    mine = sorted((r for r in rows if r.get("mode") == "none" and r["benchmark"] == "data"
                   and "set" not in r),
                  key=lambda r: r["slices"])
    if len(mine) < 2:
        return []
    lo, hi = mine[0], mine[-1]
    ratio = max(hi["rank_mib"]) / max(lo["rank_mib"])
    launcher = hi["launcher_mib"] / lo["launcher_mib"]
    return [{"benchmark": "acceptance", "mode": "none",
             "criterion": f"rank peak at {hi['slices']} within 1.2x of {lo['slices']}",
             "rank_ratio": round(ratio, 3), "launcher_ratio": round(launcher, 3),
             "holds": ratio <= 1.2}]


def run(quick: bool = False, sizes: tuple[int, ...] | None = None, before: Path | None = None,
        model: str = "small", modes: tuple[str, ...] = ("none", "memory"), msd: bool = True,
        cache_dir: Path = CACHE, msd_test: float = 0.1) -> list[dict]:
    from autocnnp.components.demo_data import build_demo_dataset

    if sizes is None:
        sizes = (150, 1500) if quick else (150, 1500, 15000)
    cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-data-"))
    demo = cache_dir / "demo"
    build_demo_dataset(demo)
    depth, filters = MODELS[model]
    plan = [(m, REPO) for m in modes] + ([("before", Path(before))] if before else [])
    rows = []
    try:
        for slices in sizes:
            data = build_repeated(demo, cache_dir / f"data-{slices}", slices)
            for mode, code in plan:
                cache = f' cache="{mode}"' if mode in ("none", "memory") else ""
                runs = work / f"runs-{slices}-{mode}"
                config = work / f"bench-{slices}-{mode}.xml"
                config.write_text(CONFIG.format(depth=depth, filters=filters, cache=cache,
                                                data=data, runs=runs))
                row = {"benchmark": "data", "slices": slices, "mode": mode,
                       "model": f"unet depth {depth}, {filters} filters",
                       **measure(config, code, runs), "unit": "MiB (VmHWM)"}
                print(json.dumps(row), flush=True)
                rows.append(row)
        if msd and not quick:
            data = build_msd4(cache_dir / "msd4-240")
            runs = work / "runs-msd4"
            config = work / "bench-msd4.xml"
            config.write_text(MSD_CONFIG.format(depth=depth, filters=filters, data=data,
                                                runs=runs, test=msd_test))
            test_cases = max(1, round(MSD_CASES * msd_test))
            valid_cases = max(1, round(MSD_CASES * 0.1))
            row = {"benchmark": "data", "slices": MSD_CASES * MSD_DEPTH, "mode": "none",
                   "set": f"msd4: {MSD_CASES} cases {MSD_SIZE}x{MSD_SIZE}x{MSD_DEPTH}x4 .nii "
                          f"({_folder_mib(data)} MiB), train/valid/test "
                          f"{MSD_CASES - test_cases - valid_cases}/{valid_cases}/{test_cases} "
                          f"cases",
                   "model": f"unet depth {depth}, {filters} filters",
                   **measure(config, REPO, runs), "unit": "MiB (VmHWM)"}
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows + acceptance(rows) + projection(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="150,1500,15000",
                        help="comma-separated slice counts (default 150,1500,15000; '' for "
                             "none)")
    parser.add_argument("--before", type=Path, default=None,
                        help="a checkout of the code before streaming, measured as 'before'")
    parser.add_argument("--model", choices=sorted(MODELS), default="small")
    parser.add_argument("--modes", default="none,memory", help="modes of this code to run")
    parser.add_argument("--msd", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the 4-modality MSD set (default: yes)")
    parser.add_argument("--msd-test", type=float, default=0.1, metavar="FRACTION",
                        help="fraction of the MSD cases held out for test (default 0.1; more "
                             "makes the epoch shorter, the listing is the same)")
    parser.add_argument("--cache", type=Path, default=CACHE,
                        help=f"where the datasets are built once and kept (default {CACHE})")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows here (JSON)")
    args = parser.parse_args(argv)
    rows = run(sizes=tuple(int(s) for s in args.sizes.split(",") if s.strip()),
               before=args.before,
               model=args.model, modes=tuple(m for m in args.modes.split(",") if m),
               msd=args.msd, cache_dir=args.cache, msd_test=args.msd_test)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run import print_table

    print_table("data", rows)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
