"""Build the autocnnp container images with no image registry reachable.

``autocnnp image build`` prepares a build context (the Dockerfile from ``containers/``, a CA
bundle for pip and apt, the pinned constraints, the Horovod wheel already built on this
machine, the autocnnp source) and runs ``docker build`` through the docker SDK. When no base
image is given and none is present locally, the CPU base is made from Debian itself:
``debootstrap --variant=minbase bookworm`` and ``docker import``, cached as
``autocnnp-base:bookworm``. The torch image (``--torch``, :data:`TORCH_FLAVOUR`) is the CPU
image plus one layer: the CPU build of torch pinned in ``constraints.txt``, installed from
wheels ``pip download`` puts in the build context on this machine (nothing is fetched inside
the build).

The build is planned first (:func:`plan_image_build`, pure) and then executed
(:func:`build_image`), so ``--dry-run`` shows what would be built.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from autocnnp.engine.vocabulary import CPU_IMAGE, HOROVOD_VERSION, TORCH_CPU_IMAGE
from autocnnp.errors import AutocnnpError, EnvironmentProblemError

#: The base made by debootstrap when none is available.
DEBOOTSTRAP_BASE = "autocnnp-base:bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEFAULT_GPU_BASE = "nvidia/cuda:12.2.2-cudnn8-devel-ubuntu22.04"
#: the flavour of the torch image: the CPU image (its base) plus the CPU build of torch
TORCH_FLAVOUR = "cpu-torch"
#: where the CPU builds of torch are published, for the remedy when pip cannot find one
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"

#: Used when the repository has no constraints.txt: the stack measured to work together
#: (DESIGN.md section 9; numpy must stay below 2 for TensorFlow 2.15).
DEFAULT_CONSTRAINTS = """\
tensorflow-cpu==2.15.1
tensorflow==2.15.1
keras==2.15.0
tensorboard==2.15.2
numpy==1.26.4
protobuf==4.25.9
ml-dtypes==0.3.2
h5py==3.16.0
scipy==1.17.1
scikit-image==0.26.0
scikit-learn==1.9.1
pandas==2.3.3
nilearn==0.14.1
nibabel==5.4.2
pillow==13.0.0
lxml==6.1.3
PyYAML==6.0.3
psutil==7.2.2
rich==15.0.0
mpi4py==4.1.2
cloudpickle==3.1.2
cffi==2.1.1
packaging==26.3
"""

#: What the ranks import (setup.cfg's install_requires and the ``train`` extra).
_COMMON_REQUIREMENTS = [
    "numpy", "lxml", "pyyaml", "rich", "psutil", "nibabel", "scikit-image", "scipy",
    "pillow", "nilearn", "pandas<3", "mpi4py",
]
REQUIREMENTS = {
    "cpu": ["tensorflow-cpu==2.15.1", *_COMMON_REQUIREMENTS],
    # nvidia-ml-py: the ranks' GPU utilisation and memory in metrics/system.jsonl (NVML)
    "gpu": ["tensorflow==2.15.1", *_COMMON_REQUIREMENTS, "nvidia-ml-py"],
}

_SOURCE_FILES = ("setup.cfg", "pyproject.toml", "README.md", "LICENSE")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ImageBuildPlan:
    """Everything one image build will use; printable, and pure data."""

    flavour: str                     # "cpu", "gpu" or TORCH_FLAVOUR
    tag: str
    dockerfile: Path
    base: str
    make_base: bool                  # True: debootstrap + docker import makes ``base`` first
    ca_bundle: Path | None
    constraints: Path | None         # None: DEFAULT_CONSTRAINTS
    horovod_wheels: tuple[Path, ...]
    source_root: Path
    containers_dir: Path
    no_cache: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    #: the torch image: the pinned requirement (``torch==2.13.0+cpu``) and the wheel given with
    #: ``--torch-wheel`` (None: pip download finds it through this machine's pip settings)
    torch_requirement: str | None = None
    torch_wheel: Path | None = None

    def __str__(self) -> str:
        base = f"{self.base} (made now: debootstrap --variant=minbase bookworm + docker import)" \
            if self.make_base else self.base
        lines = [f"image {self.tag} ({self.flavour})",
                 f"  dockerfile:   {self.dockerfile}",
                 f"  base:         {base}"]
        if self.flavour == TORCH_FLAVOUR:
            return "\n".join(lines + [
                f"  constraints:  {self.constraints}",
                f"  torch:        {self.torch_requirement} from "
                + (str(self.torch_wheel) if self.torch_wheel else "this machine's pip (pip download)")
                + ", with what it needs, carried in the build context"])
        wheels = ", ".join(str(w) for w in self.horovod_wheels) or "none (Horovod compiles)"
        return "\n".join(lines + [
            f"  CA bundle:    {self.ca_bundle or 'none'}",
            f"  constraints:  {self.constraints or 'built-in pins (no constraints.txt)'}",
            f"  Horovod:      {wheels}",
            f"  source:       {self.source_root}",
        ])


@dataclass(frozen=True)
class ImageBuildResult:
    tag: str
    image_id: str
    seconds: float
    base_seconds: float
    horovod_source: str


def find_source_root() -> Path:
    """The checkout autocnnp runs from; images are built from a source checkout."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "setup.cfg").is_file() or not (root / "containers").is_dir():
        raise EnvironmentProblemError(
            f"autocnnp image build needs the autocnnp source checkout (setup.cfg and containers/); "
            f"{root} is not one",
            remedy="run it from a git clone of autocnnp (pip install -e .)")
    return root


def find_horovod_wheels(explicit: Path | None = None) -> tuple[Path, ...]:
    """Horovod wheels built on this machine for Python 3.11 (pip's wheel cache)."""
    if explicit is not None:
        if not explicit.is_file():
            raise EnvironmentProblemError(f"Horovod wheel {explicit} does not exist")
        return (explicit,)
    cache = Path(os.environ.get("PIP_CACHE_DIR", Path.home() / ".cache" / "pip"))
    pattern = str(cache / "wheels" / "**" / f"horovod-{HOROVOD_VERSION}-cp311-cp311-linux_x86_64.whl")
    found = sorted(glob.glob(pattern, recursive=True), key=os.path.getmtime, reverse=True)
    return tuple(Path(p) for p in found[:1])


def default_ca_bundle() -> Path | None:
    for candidate in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"):
        if Path(candidate).is_file() and Path(candidate).stat().st_size > 0:
            return Path(candidate)
    return None


def torch_requirement(constraints: Path) -> str:
    """The torch pin of ``constraints`` (``torch==2.13.0+cpu``); an error when it has none."""
    if constraints.is_file():
        for line in constraints.read_text().splitlines():
            pin = line.split("#", 1)[0].strip()
            if pin.replace(" ", "").lower().startswith("torch=="):
                return pin.replace(" ", "")
    raise EnvironmentProblemError(
        f"{constraints} pins no torch version, so the torch image cannot be built",
        remedy="add the CPU build's pin (e.g. torch==2.13.0+cpu) to constraints.txt")


def plan_image_build(*, gpu: bool, tag: str | None, base: str | None, ca_bundle: Path | None,
                     base_present: bool, source_root: Path, horovod_wheels: tuple[Path, ...],
                     no_cache: bool = False, torch: bool = False,
                     torch_wheel: Path | None = None) -> ImageBuildPlan:
    """Decide what to build (pure): which Dockerfile, which base, and whether to make it.
    With ``torch``, the torch image FROM the CPU image ``base`` (default ``autocnnp:cpu``)."""
    flavour = "gpu" if gpu else "cpu"
    containers = source_root / "containers"
    if ca_bundle is not None and not ca_bundle.is_file():
        raise AutocnnpError(f"--ca-bundle {ca_bundle}: no such file")
    if torch:
        if gpu:
            raise AutocnnpError(
                "--torch builds the CPU torch image on the CPU image; a GPU image with torch's "
                "CUDA build is not made by autocnnp at this version: build one FROM a CUDA torch "
                "image and name it in <deployment> (docs/torch.md)")
        if torch_wheel is not None and not torch_wheel.is_file():
            raise AutocnnpError(f"--torch-wheel {torch_wheel}: no such file")
        constraints = source_root / "constraints.txt"
        requirement = torch_requirement(constraints)
        return ImageBuildPlan(
            flavour=TORCH_FLAVOUR, tag=tag or TORCH_CPU_IMAGE,
            dockerfile=containers / "Dockerfile.torch", base=base or CPU_IMAGE, make_base=False,
            ca_bundle=None, constraints=constraints, horovod_wheels=(),
            source_root=source_root, containers_dir=containers, no_cache=no_cache,
            labels={"org.autocnnp.flavour": TORCH_FLAVOUR,
                    "org.autocnnp.horovod": HOROVOD_VERSION,
                    "org.autocnnp.torch": requirement.split("==", 1)[1]},
            torch_requirement=requirement, torch_wheel=torch_wheel)
    make_base = False
    if base is None:
        base = DEFAULT_GPU_BASE if gpu else DEBOOTSTRAP_BASE
        make_base = not gpu and not base_present
    constraints = source_root / "constraints.txt"
    return ImageBuildPlan(
        flavour=flavour,
        tag=tag or f"autocnnp:{flavour}",
        dockerfile=containers / f"Dockerfile.{flavour}",
        base=base,
        make_base=make_base,
        ca_bundle=ca_bundle,
        constraints=constraints if constraints.is_file() else None,
        horovod_wheels=horovod_wheels if not gpu else (),
        source_root=source_root,
        containers_dir=containers,
        no_cache=no_cache,
        labels={"org.autocnnp.flavour": flavour, "org.autocnnp.horovod": HOROVOD_VERSION},
    )


def image_present(client, name: str) -> bool:
    import docker.errors

    try:
        client.images.get(name)
        return True
    except docker.errors.ImageNotFound:
        return False


def make_debootstrap_base(client, tag: str, progress: Progress, *,
                          mirror: str = DEBIAN_MIRROR) -> float:
    """``debootstrap --variant=minbase bookworm`` + ``docker import`` as ``tag``; seconds taken."""
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise EnvironmentProblemError(
            "no base image is available and debootstrap is not installed to make one",
            remedy="apt-get install debootstrap, or pass --base IMAGE (an image already loaded "
                   "with docker load)")
    if os.geteuid() != 0:
        raise EnvironmentProblemError("debootstrap must run as root to make the base image",
                                      remedy="run autocnnp image build as root, or pass --base")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="autocnnp-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        progress(f"making base image {tag}: debootstrap --variant=minbase bookworm ({mirror})")
        proc = subprocess.run(
            [debootstrap, "--variant=minbase", "bookworm", str(rootfs), mirror],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.splitlines()[-15:])
            raise EnvironmentProblemError(
                f"debootstrap failed (exit {proc.returncode}):\n{tail}",
                remedy=f"check that {mirror} is reachable, or pass --base IMAGE")
        (rootfs / "etc/apt/sources.list").write_text(
            f"deb {mirror} bookworm main\n"
            f"deb {mirror} bookworm-updates main\n"
            f"deb {mirror.replace('/debian', '/debian-security')} bookworm-security main\n")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / junk).glob("*"):
                if entry.is_file():
                    entry.unlink()
        tarball = Path(tmp) / "rootfs.tar"
        progress("packing the root filesystem")
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(tarball), "."],
                       check=True)
        repository, _, image_tag = tag.rpartition(":")
        progress(f"docker import -> {tag}")
        client.api.import_image_from_file(str(tarball), repository=repository, tag=image_tag,
                                          changes=['CMD ["/bin/bash"]', "ENV LANG=C.UTF-8"])
    return time.monotonic() - started


def download_torch(plan: ImageBuildPlan, wheels: Path) -> None:
    """``pip download`` the pinned torch (or the ``--torch-wheel`` file) and what it requires
    into ``wheels``, through this machine's pip settings (its index, find-links, cache)."""
    requirement = str(plan.torch_wheel) if plan.torch_wheel else plan.torch_requirement
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary", ":all:",
         "--dest", str(wheels), "-c", str(plan.constraints), str(requirement)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-10:])
        raise EnvironmentProblemError(
            f"pip download {requirement} failed (exit {proc.returncode}):\n{tail}",
            remedy=f"the CPU builds of torch are on {TORCH_CPU_INDEX}: pip download --no-deps "
                   f"{plan.torch_requirement} --index-url {TORCH_CPU_INDEX} -d DIR, then pass "
                   f"--torch-wheel DIR/<the wheel>")


def prepare_context(plan: ImageBuildPlan, context: Path) -> None:
    """Fill ``context`` with what the Dockerfile copies."""
    shutil.copy2(plan.dockerfile, context / "Dockerfile")
    if plan.flavour == TORCH_FLAVOUR:
        (context / "torch" / "wheels").mkdir(parents=True)
        shutil.copyfile(plan.constraints, context / "torch" / "constraints.txt")
        download_torch(plan, context / "torch" / "wheels")
        return
    for name in ("entrypoint.sh", "install-horovod.sh"):
        shutil.copy2(plan.containers_dir / name, context / name)
    bundle = plan.ca_bundle or default_ca_bundle()
    if bundle is not None:
        shutil.copyfile(bundle, context / "ca-bundle.crt")
    else:
        import certifi  # pip and requests depend on it

        shutil.copyfile(certifi.where(), context / "ca-bundle.crt")
    if plan.constraints is not None:
        shutil.copyfile(plan.constraints, context / "constraints.txt")
    else:
        (context / "constraints.txt").write_text(DEFAULT_CONSTRAINTS)
    (context / "requirements.txt").write_text("\n".join(REQUIREMENTS[plan.flavour]) + "\n")
    wheels = context / "wheels"
    wheels.mkdir()
    (wheels / ".keep").write_text("")
    for wheel in plan.horovod_wheels:
        shutil.copy2(wheel, wheels / wheel.name)
    src = context / "src"
    src.mkdir()
    for name in _SOURCE_FILES:
        if (plan.source_root / name).is_file():
            shutil.copy2(plan.source_root / name, src / name)
    shutil.copytree(plan.source_root / "autocnnp", src / "autocnnp",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))


def _fix_mtimes(root: Path) -> None:
    # The classic builder's cache key for COPY includes file metadata; a fixed mtime keeps a
    # rebuild with unchanged content on the cached layers.
    for path in [root, *root.rglob("*")]:
        os.utime(path, (0, 0), follow_symlinks=False)


def build_image(plan: ImageBuildPlan, client, progress: Progress = print) -> ImageBuildResult:
    """Execute ``plan``: make the base if needed, then ``docker build``; raises on failure."""
    started = time.monotonic()
    base_seconds = 0.0
    if plan.make_base:
        base_seconds = make_debootstrap_base(client, plan.base, progress)
        progress(f"base image {plan.base} made in {base_seconds:.0f} s")
    elif not image_present(client, plan.base):
        progress(f"base image {plan.base} is not here; trying docker pull")
        try:
            client.images.pull(plan.base)
        except Exception as exc:
            remedy = {"gpu": "load it first (docker load -i FILE) or pass --base IMAGE",
                      TORCH_FLAVOUR: "build the CPU image first (autocnnp image build --torch "
                                     "without --base builds both)"}
            raise EnvironmentProblemError(
                f"base image {plan.base} is not available locally and cannot be pulled: {exc}",
                remedy=remedy.get(plan.flavour, "omit --base to make one with debootstrap, or "
                                                "docker load one")) from exc
    previous = _image_id(client, plan.tag)
    with tempfile.TemporaryDirectory(prefix="autocnnp-image-") as tmp:
        context = Path(tmp)
        prepare_context(plan, context)
        _fix_mtimes(context)
        progress(f"docker build -t {plan.tag} (base {plan.base})")
        image_id = ""
        errors: list[str] = []
        horovod_source = "unknown"
        buildargs = {"BASE": plan.base}
        if plan.torch_requirement:
            buildargs["TORCH_REQUIREMENT"] = plan.torch_requirement
        for chunk in client.api.build(path=str(context), tag=plan.tag, rm=True, forcerm=True,
                                      decode=True, nocache=plan.no_cache, pull=False,
                                      buildargs=buildargs, labels=plan.labels):
            if "stream" in chunk:
                for line in chunk["stream"].splitlines():
                    if line.strip():
                        progress(f"  {line}")
                    if line.startswith("autocnnp: Horovod installed ("):
                        horovod_source = line.split("(", 1)[1].rstrip(")")
            if "error" in chunk:
                errors.append(chunk["error"].strip())
            aux = chunk.get("aux") or {}
            if "ID" in aux:
                image_id = aux["ID"]
        if errors:
            raise EnvironmentProblemError(
                f"docker build of {plan.tag} failed: {errors[-1]}",
                remedy="read the build output above; behind a TLS-inspecting proxy pass "
                       "--ca-bundle FILE with the proxy's CA")
    if not image_id:
        image_id = client.images.get(plan.tag).id
    if horovod_source == "unknown":
        horovod_source = _read_horovod_source(client, plan.tag)
    if previous and previous != image_id:
        try:  # the image this tag named before: dangling now, 2 GB each on a small disk
            client.images.remove(previous)
            progress(f"removed the previous {plan.tag} ({previous[:19]})")
        except Exception:
            pass  # still used by a container or another tag
    return ImageBuildResult(tag=plan.tag, image_id=image_id,
                            seconds=time.monotonic() - started, base_seconds=base_seconds,
                            horovod_source=horovod_source)


def _image_id(client, name: str) -> str | None:
    try:
        return client.images.get(name).id
    except Exception:
        return None


def _read_horovod_source(client, tag: str) -> str:
    try:
        out = client.containers.run(tag, ["cat", "/opt/autocnnp/horovod-source"], remove=True,
                                    entrypoint=[], network_mode="none")
        return out.decode().strip()
    except Exception:  # informational only
        return "unknown"
