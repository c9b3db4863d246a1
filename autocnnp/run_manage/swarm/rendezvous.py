"""The rendezvous service's program: ``python -m autocnnp.run_manage.swarm rendezvous --port P``.

Horovod's Gloo HTTP rendezvous server, initialised with the plan's host layout
(``AUTOCNNP_HOST_PLAN``), so the swarm's rank tasks can form a ring without ssh or mpirun.
"""

from __future__ import annotations

import argparse
import json
import os

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autocnnp.run_manage.swarm")
    sub = parser.add_subparsers(dest="command", required=True)
    rdv = sub.add_parser("rendezvous", help="run the Gloo rendezvous server of a swarm job")
    rdv.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "rendezvous":
        serve_rendezvous(args.port, json.loads(os.environ["AUTOCNNP_HOST_PLAN"]))
    return 0
