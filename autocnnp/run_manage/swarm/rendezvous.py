"""The rendezvous service's program: ``python -m autocnnp.run_manage.swarm rendezvous --port P``.

For the Horovod engine, Horovod's Gloo HTTP rendezvous server, initialised with the plan's host
layout (``AUTOCNNP_HOST_PLAN``); for the torch engine (``--engine torch``), the job's c10d TCP
store, which every rank joins as a client (``MASTER_ADDR``/``MASTER_PORT`` name this service).
Either way the swarm's rank tasks form their ring without ssh or mpirun, and without knowing
each other's addresses before they start.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import threading


def serve_rendezvous(port: int, host_plan: list[list]) -> None:
    """Horovod's Gloo HTTP rendezvous on ``port`` for the given host layout (runs forever)."""
    from horovod.runner.common.util.hosts import SlotInfo
    from horovod.runner.http.http_server import RendezvousHandler, RendezvousHTTPServer

    slots = [SlotInfo(hostname=h, rank=r, local_rank=lr, cross_rank=cr, size=s, local_size=ls,
                      cross_size=cs) for h, r, lr, cr, s, ls, cs in host_plan]
    server = RendezvousHTTPServer(("0.0.0.0", port), RendezvousHandler, 0)
    server.init(slots)
    print(f"autocnnp rendezvous: listening on :{port} for {len(slots)} rank(s)", flush=True)
    server.serve_forever()


def serve_torch_store(port: int, world_size: int) -> None:
    """The c10d TCP store of a torch job on ``port`` (runs until the service is removed)."""
    import torch.distributed as dist

    store = dist.TCPStore("0.0.0.0", port, world_size, is_master=True, wait_for_workers=False,
                          timeout=datetime.timedelta(hours=1))
    print(f"autocnnp rendezvous: torch store listening on :{port} for {world_size} rank(s)",
          flush=True)
    threading.Event().wait()   # the store serves from its own thread
    del store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autocnnp.run_manage.swarm")
    sub = parser.add_subparsers(dest="command", required=True)
    rdv = sub.add_parser("rendezvous", help="run the rendezvous server of a swarm job")
    rdv.add_argument("--port", type=int, required=True)
    rdv.add_argument("--engine", choices=("horovod", "torch"), default="horovod")
    rdv.add_argument("--world-size", type=int, help="the job's ranks (torch)")
    args = parser.parse_args(argv)
    if args.engine == "torch":
        if not args.world_size:
            parser.error("--engine torch needs --world-size")
        serve_torch_store(args.port, args.world_size)
    else:
        serve_rendezvous(args.port, json.loads(os.environ["AUTOCNNP_HOST_PLAN"]))
    return 0
