"""Build the container images the swarm backend runs, and copy them to the swarm's nodes.

  autocnnp image build                       CPU image autocnnp:cpu
  autocnnp image build --gpu                 CUDA image autocnnp:gpu (needs its base image)
  autocnnp image build --torch               autocnnp:cpu, then autocnnp:cpu-torch on it (the
                                             torch engine's image, dist_strategy torch_ddp)
  autocnnp image build --ca-bundle proxy.pem behind a TLS-inspecting proxy
  autocnnp image build --dry-run             show what would be built
  autocnnp image push-nodes CONFIG           copy the config's image to the swarm nodes lacking it

No registry is needed: without --base, the CPU base is made from Debian with
`debootstrap --variant=minbase bookworm` and `docker import` (cached as autocnnp-base:bookworm).
The Horovod wheel pip built on this machine is reused in the image when it loads there;
otherwise Horovod compiles inside the build (about 6 minutes on 2 cores). The torch image adds
one layer to the CPU image: the CPU build of torch pinned in constraints.txt, which pip
downloads on this machine (its index, find-links or cache) into the build context.

push-nodes gets the image to the other nodes of a swarm, still without a registry: it compares
the image id on each ready node's own Docker daemon, reached through the deployment property
node_docker (e.g. ssh://root@{addr}), with the id on the source daemon (the manager DOCKER_HOST
names, or --from), and streams `docker save` into `docker load` on every node that lacks it.
`autocnnp run` does the same in its pre-flight when node_docker is set.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from autocnnp.engine.vocabulary import HOROVOD_VERSION
from autocnnp.errors import EnvironmentProblemError

HELP = "build the container images for the swarm backend, copy them to its nodes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="image_command", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="build the CPU (default) or GPU image",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    build.add_argument("--gpu", action="store_true", help="build the CUDA image (Dockerfile.gpu)")
    build.add_argument("--torch", action="store_true",
                       help="build the CPU image, then the torch engine's image on it "
                            "(Dockerfile.torch, default tag autocnnp:cpu-torch); with --base, only "
                            "the torch layer on that image")
    build.add_argument("--torch-wheel", metavar="FILE", type=Path,
                       help="the pinned torch wheel to install with --torch (default: pip download "
                            "finds it through this machine's pip settings)")
    build.add_argument("--base", metavar="IMAGE",
                       help="base image to build on (default: autocnnp-base:bookworm, made with "
                            "debootstrap if absent; for --gpu nvidia/cuda:12.2.2-cudnn8-devel-ubuntu22.04; "
                            "for --torch a CPU image, which is then not rebuilt)")
    build.add_argument("--ca-bundle", metavar="FILE", type=Path,
                       help="CA bundle (PEM) apt and pip trust during the build (default: this "
                            "machine's system bundle)")
    build.add_argument("--tag", metavar="NAME", help="image tag (default autocnnp:cpu / autocnnp:gpu / autocnnp:cpu-torch)")
    build.add_argument("--horovod-wheel", metavar="FILE", type=Path,
                       help=f"Horovod {HOROVOD_VERSION} cp311 wheel to install (default: pip's wheel cache)")
    build.add_argument("--no-cache", action="store_true", help="rebuild every layer")
    build.add_argument("--dry-run", action="store_true", help="print the build plan and stop")
    push = sub.add_parser("push-nodes", help="copy a config's image to the swarm nodes lacking it",
                          description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    push.add_argument("config", type=Path, help="the XML training config (its image, node_docker)")
    push.add_argument("--from", dest="source", metavar="URL",
                      help="the Docker daemon holding the image (default: the manager, DOCKER_HOST); "
                           "with it, the manager is a target too")
    push.add_argument("--node-docker", metavar="URL",
                      help="how to reach each node's daemon, e.g. ssh://root@{addr} (default: the "
                           "config's node_docker)")


def run(args: argparse.Namespace) -> int:
    if args.image_command == "push-nodes":
        return push_nodes(args)
    from autocnnp.run_manage import image_build as ib
    from autocnnp.run_manage.docker_api import docker_client

    source_root = ib.find_source_root()
    try:
        client = docker_client()
    except EnvironmentProblemError:
        if not args.dry_run:
            raise
        client = None  # a dry run still shows the plan without a daemon
    plans = []
    if not (args.torch and args.base):   # the Horovod (CPU or GPU) image
        wheels = () if args.gpu else ib.find_horovod_wheels(args.horovod_wheel)
        default_base = ib.DEFAULT_GPU_BASE if args.gpu else ib.DEBOOTSTRAP_BASE
        base = None if args.torch else args.base
        base_present = client is not None and ib.image_present(client, base or default_base)
        plans.append(ib.plan_image_build(gpu=args.gpu, tag=None if args.torch else args.tag,
                                         base=base,
                                         ca_bundle=args.ca_bundle or ib.default_ca_bundle(),
                                         base_present=base_present,
                                         source_root=source_root, horovod_wheels=wheels,
                                         no_cache=args.no_cache))
    if args.torch:
        plans.append(ib.plan_image_build(gpu=args.gpu, tag=args.tag,
                                         base=args.base or plans[0].tag, ca_bundle=None,
                                         base_present=True, source_root=source_root,
                                         horovod_wheels=(), no_cache=args.no_cache,
                                         torch=True, torch_wheel=args.torch_wheel))
    print("\n".join(str(plan) for plan in plans))
    if args.dry_run:
        return 0
    for plan in plans:
        result = ib.build_image(plan, client, progress=lambda line: print(line, flush=True))
        print(f"built {result.tag} ({result.image_id[:19]}) in {result.seconds:.0f} s"
              + (f" (base {result.base_seconds:.0f} s)" if result.base_seconds else "")
              + f"; Horovod: {result.horovod_source}"
              + (f"; {plan.torch_requirement}" if plan.torch_requirement else ""), flush=True)
    return 0


def push_nodes(args: argparse.Namespace) -> int:
    from autocnnp.engine.plan_swarm import node_matches
    from autocnnp.generator.assembly import load_checked_spec
    from autocnnp.run_manage.swarm import SwarmBackend
    from autocnnp.run_manage.swarm.images import ensure_image, image_id

    spec = load_checked_spec(args.config, [])
    template = args.node_docker or spec.deployment.node_docker
    if not template:
        raise EnvironmentProblemError(
            f"{args.config}: no node_docker: autocnnp does not know how to reach the nodes' "
            f"Docker daemons", remedy="set <property name=\"node_docker\">ssh://root@{addr}"
                                      "</property> in <deployment>, or pass --node-docker URL")
    image = spec.deployment.image
    manager = SwarmBackend()
    manager.ensure_swarm()
    nodes = sorted((n for n in manager.nodes() if n.ready
                    and node_matches(n, spec.deployment.node_constraints)), key=lambda n: n.name)
    source = manager.client
    if args.source:
        import docker

        source = docker.DockerClient(base_url=args.source, timeout=600,
                                     use_ssh_client=args.source.startswith("ssh://"))
    else:
        nodes = [n for n in nodes if not n.is_self]
    lacking = ensure_image(source, image, nodes, template, say=print)
    sid = image_id(source, image) or "?"
    for node in nodes:
        if node.name in lacking:
            print(f"  {node.name}: LACKS {image}: {lacking[node.name]}")
        else:
            print(f"  {node.name}: has {image} ({sid[:19]})")
    if lacking:
        raise EnvironmentProblemError(
            f"image {image} is not on node(s) {', '.join(sorted(lacking))}",
            remedy="fix what is named above and run autocnnp image push-nodes again")
    return 0
