"""The job's image on every node, without a registry: compare, then save -> load streamed.

A swarm pulls a service's image on each node from a registry; with none, every node must
already hold it. The launcher's daemon (the manager) knows the nodes and their swarm addresses;
the deployment property ``node_docker`` says how to reach each node's own daemon (a URL
template: ``ssh://root@{addr}`` on a real cluster, ``tcp://{addr}:2375`` on the test cluster of
``scripts/test-cluster.sh``). A node lacks the image when its image id differs from the
source's (a tag that names another build counts as lacking). Delivery saves the image once from
the source and streams the same bytes into ``docker load`` on every lacking node at once: no
temporary file of the full image.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from autocnnp.engine.plan_swarm import NodeInfo
from autocnnp.errors import EnvironmentProblemError
from autocnnp.run_manage.docker_api import docker_errors, explain

#: chunks in flight per node: a slow node holds back the save, never the memory
QUEUE_CHUNKS = 32
CHUNK = 2 * 1024 * 1024
_END = object()


def node_url(template: str, node: NodeInfo) -> str:
    """``template`` with the node's swarm address and hostname filled in."""
    return template.format(addr=node.addr, hostname=node.name)


def node_client(template: str, node: NodeInfo, timeout_s: int = 600):
    """A docker SDK client of ``node``'s own daemon, or EnvironmentProblemError naming it."""
    import docker

    url = node_url(template, node)
    try:
        client = docker.DockerClient(base_url=url, timeout=timeout_s,
                                     use_ssh_client=url.startswith("ssh://"))
        client.ping()
    except Exception as exc:  # DockerException, requests errors, ssh failures
        raise EnvironmentProblemError(
            f"cannot reach the Docker daemon of node {node.name} at {url} "
            f"({exc.__class__.__name__}: {explain(exc)})",
            remedy="check the node_docker property of <deployment> and that the node's dockerd "
                   "answers there (docker -H URL info)") from exc
    return client


def image_id(client: Any, image: str) -> str | None:
    """The id of ``image`` on the daemon of ``client``, or None when it has no such image."""
    import docker.errors

    try:
        return client.images.get(image).id
    except docker.errors.ImageNotFound:
        return None


@dataclass
class Delivery:
    """What :func:`deliver` did: the nodes it loaded the image on, what failed, how long."""

    image: str
    image_id: str
    loaded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    bytes: int = 0


def lacking(source_id: str, image: str, clients: dict[str, Any]) -> dict[str, str | None]:
    """node -> its id of ``image`` (None: absent), for the nodes whose id is not ``source_id``."""
    found = {name: image_id(client, image) for name, client in clients.items()}
    return {name: got for name, got in found.items() if got != source_id}


def deliver(source: Any, image: str, targets: dict[str, Any],
            say: Callable[[str], None] = lambda _: None) -> Delivery:
    """Save ``image`` once from ``source`` and load it on every client of ``targets`` at once.

    Every target reads the same stream through its own bounded queue; a target that fails is
    dropped (its reason recorded) and the others go on."""
    sid = image_id(source, image)
    if sid is None:
        raise EnvironmentProblemError(f"image {image} is not on the daemon it is delivered from",
                                      remedy="build it there: autocnnp image build")
    result = Delivery(image=image, image_id=sid)
    if not targets:
        return result
    failures = docker_errors()
    began = time.monotonic()
    queues = {name: queue.Queue(maxsize=QUEUE_CHUNKS) for name in targets}
    alive = dict.fromkeys(targets, True)

    def chunks(name: str) -> Iterator[bytes]:
        q = queues[name]
        while True:
            item = q.get()
            if item is _END:
                return
            yield item

    def load(name: str, client: Any) -> None:
        try:
            for answer in client.api.load_image(chunks(name)):
                if isinstance(answer, dict) and answer.get("error"):
                    raise RuntimeError(answer["error"])
            result.loaded.append(name)
        except failures as exc:
            result.failed[name] = explain(exc)
        except Exception as exc:  # the daemon's own error, ssh transport, broken pipe
            result.failed[name] = f"{exc.__class__.__name__}: {exc}"
        finally:
            alive[name] = False
            q = queues[name]
            while True:   # unblock the saver if it is waiting on this queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    break

    threads = [threading.Thread(target=load, args=(name, client), daemon=True,
                                name=f"image-load-{name}") for name, client in targets.items()]
    for thread in threads:
        thread.start()
    try:
        for chunk in source.api.get_image(image, chunk_size=CHUNK):
            result.bytes += len(chunk)
            if not any(alive.values()):
                break
            for name, q in queues.items():
                while alive[name]:
                    try:
                        q.put(chunk, timeout=1.0)
                        break
                    except queue.Full:
                        continue
    except failures as exc:
        for name in targets:
            result.failed.setdefault(name, f"saving {image} failed: {explain(exc)}")
    finally:
        for name, q in queues.items():
            while alive[name]:
                try:
                    q.put(_END, timeout=1.0)
                    break
                except queue.Full:
                    continue
        for thread in threads:
            thread.join()
    result.seconds = time.monotonic() - began
    # a load that "succeeded" must have produced the same image
    for name in list(result.loaded):
        got = image_id(targets[name], image)
        if got != sid:
            result.loaded.remove(name)
            result.failed[name] = f"after docker load its {image} is {got or 'absent'}, not {sid[:19]}"
    return result


def ensure_image(source: Any, image: str, nodes: list[NodeInfo], template: str,
                 say: Callable[[str], None] = lambda _: None) -> dict[str, str]:
    """Deliver ``image`` from ``source`` to each of ``nodes`` lacking it; returns
    node -> why it still lacks the image (empty: every node holds it)."""
    sid = image_id(source, image)
    if sid is None:
        raise EnvironmentProblemError(f"image {image} is not on the daemon it is delivered from",
                                      remedy="build it there: autocnnp image build")
    clients: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for node in nodes:
        try:
            clients[node.name] = node_client(template, node)
        except EnvironmentProblemError as exc:
            problems[node.name] = exc.message
    try:
        missing = lacking(sid, image, clients)
        if missing:
            what = ", ".join(f"{n} ({'other id ' + got[:19] if got else 'absent'})"
                             for n, got in sorted(missing.items()))
            say(f"delivering image {image} ({sid[:19]}) to {what}: docker save | docker load, "
                f"streamed")
            done = deliver(source, image, {n: clients[n] for n in missing}, say)
            problems.update(done.failed)
            if done.loaded:
                say(f"image {image} loaded on {', '.join(sorted(done.loaded))} in "
                    f"{done.seconds:.0f} s ({done.bytes / 1e9:.2f} GB streamed)")
        return problems
    finally:
        for client in clients.values():
            client.close()
