"""Run the benchmarks, print a table and write JSON.

    .venv/bin/python benchmarks/run.py                 # every benchmarks/bench_*.py
    .venv/bin/python benchmarks/run.py validate        # only bench_validate.py
    .venv/bin/python benchmarks/run.py --quick         # fewer repetitions

Each bench_NAME.py defines ``run(quick: bool = False) -> list[dict]``; every row is a flat
dict (``benchmark``, values, ``unit``, notes). Results go to benchmarks/results/NAME.json with
the machine they were measured on.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(HERE))
    spec.loader.exec_module(module)
    return module


def print_table(name: str, rows: list[dict]) -> None:
    if not rows:
        print(f"{name}: no rows")
        return
    keys = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[_fmt(row.get(k, "")) for k in keys] for row in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print(f"\n== {name}")
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths)))
    print("  ".join("-" * w for w in widths))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args(argv)
    files = sorted(HERE.glob("bench_*.py"))
    if args.names:
        files = [f for f in files if f.stem.removeprefix("bench_") in args.names]
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    machine = {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
               "platform": platform.platform()}
    for path in files:
        name = path.stem.removeprefix("bench_")
        started = time.perf_counter()
        rows = load(path).run(quick=args.quick)
        elapsed = time.perf_counter() - started
        print_table(name, rows)
        result = {"benchmark": name, "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "seconds": round(elapsed, 1), "machine": machine, "rows": rows}
        (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2))
        print(f"-> {out_dir / (name + '.json')} ({elapsed:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
