"""The one door to the Docker daemon: the client, and docker SDK errors turned into ours.

The docker SDK is imported lazily (inside the functions), so nothing that imports this module
needs it until it really talks to a daemon.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

from autocnnp.errors import AutocnnpError, EnvironmentProblemError

DAEMON_REMEDY = ("check that dockerd is running and this node is a swarm manager "
                 "(docker info; docker node ls), then retry")


def docker_client():
    """A docker SDK client, or an error that says how to start dockerd."""
    try:
        import docker
    except ImportError as exc:
        raise EnvironmentProblemError(
            "the docker Python SDK is not installed", remedy="pip install 'autocnnp[swarm]'"
        ) from exc
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as exc:  # docker raises DockerException, requests errors, FileNotFoundError
        raise EnvironmentProblemError(
            f"cannot reach the Docker daemon ({exc.__class__.__name__}: {exc})",
            remedy="start it as root: dockerd > /tmp/dockerd.log 2>&1 &  "
                   "(or systemctl start docker; or .ci/docker.sh), then retry") from exc
    return client


def docker_errors() -> tuple[type[BaseException], ...]:
    """What the docker SDK raises when the daemon refuses or cannot be reached."""
    import docker.errors

    kinds: list[type[BaseException]] = [docker.errors.DockerException]
    try:
        import requests.exceptions

        kinds.append(requests.exceptions.RequestException)
    except ImportError:  # pragma: no cover - the docker SDK depends on requests
        pass
    return tuple(kinds)


def explain(exc: BaseException) -> str:
    """The daemon's own words for a docker SDK error, on one line."""
    text = getattr(exc, "explanation", None) or str(exc) or exc.__class__.__name__
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(str(text).split())


def _status_code(exc: BaseException) -> int | None:
    try:
        return exc.status_code  # type: ignore[attr-defined]
    except Exception:
        return None


@contextmanager
def docker_call(what: str, *, remedy: str | None = None, error: type[AutocnnpError] = EnvironmentProblemError,
                conflict: str | None = None, **kwargs: Any):
    """Turn a docker SDK error raised in the block into ``error`` ("WHAT: the daemon's reason"),
    with ``remedy`` (``conflict`` instead when the daemon answered 409 Conflict)."""
    try:
        yield
    except AutocnnpError:
        raise
    except docker_errors() as exc:
        fix = conflict if conflict and _status_code(exc) == 409 else remedy
        raise error(f"{what}: {explain(exc)}", remedy=fix or DAEMON_REMEDY, **kwargs) from exc
