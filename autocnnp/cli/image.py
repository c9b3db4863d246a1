"""Build the container images the swarm backend runs.

  autocnnp image build                       CPU image autocnnp:cpu
  autocnnp image build --gpu                 CUDA image autocnnp:gpu (needs its base image)
  autocnnp image build --ca-bundle proxy.pem behind a TLS-inspecting proxy
  autocnnp image build --dry-run             show what would be built

No registry is needed: without --base, the CPU base is made from Debian with
`debootstrap --variant=minbase bookworm` and `docker import` (cached as autocnnp-base:bookworm).
The Horovod wheel pip built on this machine is reused in the image when it loads there;
otherwise Horovod compiles inside the build (about 6 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from autocnnp.engine.vocabulary import HOROVOD_VERSION
from autocnnp.errors import EnvironmentProblemError

HELP = "build the container images for the swarm backend"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="image_command", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="build the CPU (default) or GPU image",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    build.add_argument("--gpu", action="store_true", help="build the CUDA image (Dockerfile.gpu)")
    build.add_argument("--base", metavar="IMAGE",
                       help="base image to build on (default: autocnnp-base:bookworm, made with "
                            "debootstrap if absent; for --gpu nvidia/cuda:12.2.2-cudnn8-devel-ubuntu22.04)")
    build.add_argument("--ca-bundle", metavar="FILE", type=Path,
                       help="CA bundle (PEM) apt and pip trust during the build (default: this "
                            "machine's system bundle)")
    build.add_argument("--tag", metavar="NAME", help="image tag (default autocnnp:cpu / autocnnp:gpu)")
    build.add_argument("--horovod-wheel", metavar="FILE", type=Path,
                       help=f"Horovod {HOROVOD_VERSION} cp311 wheel to install (default: pip's wheel cache)")
    build.add_argument("--no-cache", action="store_true", help="rebuild every layer")
    build.add_argument("--dry-run", action="store_true", help="print the build plan and stop")


def run(args: argparse.Namespace) -> int:
    from autocnnp.run_manage import image_build as ib
    from autocnnp.run_manage.docker_api import docker_client

    source_root = ib.find_source_root()
    wheels = () if args.gpu else ib.find_horovod_wheels(args.horovod_wheel)
    try:
        client = docker_client()
    except EnvironmentProblemError:
        if not args.dry_run:
            raise
        client = None  # a dry run still shows the plan without a daemon
    default_base = ib.DEFAULT_GPU_BASE if args.gpu else ib.DEBOOTSTRAP_BASE
    base_present = client is not None and ib.image_present(client, args.base or default_base)
    plan = ib.plan_image_build(gpu=args.gpu, tag=args.tag, base=args.base,
                               ca_bundle=args.ca_bundle or ib.default_ca_bundle(),
                               base_present=base_present,
                               source_root=source_root, horovod_wheels=wheels,
                               no_cache=args.no_cache)
    print(plan)
    if args.dry_run:
        return 0
    result = ib.build_image(plan, client, progress=lambda line: print(line, flush=True))
    print(f"built {result.tag} ({result.image_id[:19]}) in {result.seconds:.0f} s"
          + (f" (base {result.base_seconds:.0f} s)" if result.base_seconds else "")
          + f"; Horovod: {result.horovod_source}")
    return 0
