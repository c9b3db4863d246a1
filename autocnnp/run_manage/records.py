"""What a run records so anyone can repeat it: packages, hardware, code, data, seeds."""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from autocnnp import __version__
from autocnnp.engine.spec import TrainingSpec

PACKAGES = ("tensorflow-cpu", "tensorflow", "keras", "horovod", "torch", "numpy", "scipy",
            "lxml", "nibabel", "scikit-image", "mpi4py", "docker", "pillow")


def package_versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0], "autocnnp": __version__}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _command_output(cmd: list[str]) -> str | None:
    if not shutil.which(cmd[0]):
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def hardware() -> dict[str, Any]:
    import psutil

    return {"hostname": platform.node(), "platform": platform.platform(),
            "cpu_model": _cpu_model(), "cpu_cores": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "gpus": (_command_output(["nvidia-smi", "-L"]) or "none").splitlines(),
            "mpirun": (_command_output(["mpirun", "--version"]) or "not found").splitlines()[0]}


def code_version() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[2]
    rev = _command_output(["git", "-C", str(root), "rev-parse", "HEAD"])
    dirty = _command_output(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"])
    return {"autocnnp": __version__, "git_commit": rev, "git_dirty": bool(dirty)}


def checksum_tree(path: Path | None) -> dict[str, Any] | None:
    """sha256 over every file under ``path`` (names and contents), and the file count."""
    if path is None or not path.exists():
        return None
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return {"path": str(path), "files": len(files), "sha256": digest.hexdigest()}


def describe_split(spec: TrainingSpec, split: str) -> dict[str, Any] | None:
    """The checksum record of one split plus its number of samples (image/mask pairs or
    volume slices, as training counts them; files such as ``.keep`` or a dataset.json are
    not samples)."""
    from autocnnp.components.datasets import open_data_split
    from autocnnp.errors import DataError

    record = checksum_tree(getattr(spec.data, split))
    if record is not None:
        cases = (spec.data.cases or {}).get(split)
        if cases is not None:  # a case-level split of one folder: the checksum is the folder's
            record["cases"] = len(cases)
        try:
            samples = open_data_split(spec.data, split)
            record["samples"] = len(samples) if samples is not None else None
        except DataError:
            record["samples"] = None  # not listable (the data check reports why)
    return record


def build_manifest(spec: TrainingSpec, argv: list[str], image: str | None = None) -> dict[str, Any]:
    """What ``manifest.json`` records; ``image``: the container image the ranks run from."""
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": argv,
        "config": str(spec.source),
        "engine": spec.engine,
        "seed": spec.reproducibility.seed,
        "deterministic": spec.reproducibility.deterministic,
        "packages": package_versions(),
        "hardware": hardware(),
        "code": code_version(),
        "data": {split: describe_split(spec, split) for split in ("train", "valid", "test")},
        "image": image,
    }
