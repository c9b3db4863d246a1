#!/usr/bin/env bash
# Make this machine ready for the docker tests: dockerd running, and a one-node swarm.
# Idempotent: does nothing that is already done. Needs root (or sudo) to start dockerd.
#   DOCKERD_LOG      where dockerd logs (default /tmp/dockerd.log)
#   DOCKERD_TIMEOUT  seconds to wait for `docker info` to answer (default 60)
set -euo pipefail

log_file="${DOCKERD_LOG:-/tmp/dockerd.log}"
timeout_s="${DOCKERD_TIMEOUT:-60}"
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi

if ! command -v docker >/dev/null 2>&1; then
    echo "docker.sh: the docker CLI is not installed (apt-get install docker.io)" >&2
    exit 2
fi

if ! docker info >/dev/null 2>&1; then
    if ! command -v dockerd >/dev/null 2>&1; then
        echo "docker.sh: dockerd is not installed (apt-get install docker.io)" >&2
        exit 2
    fi
    echo "docker.sh: starting dockerd (log: $log_file)"
    $sudo setsid nohup dockerd >"$log_file" 2>&1 </dev/null &
    waited=0
    until docker info >/dev/null 2>&1; do
        if [ "$waited" -ge "$timeout_s" ]; then
            echo "docker.sh: dockerd did not answer within ${timeout_s} s; the end of $log_file:" >&2
            tail -n 40 "$log_file" >&2 || true
            exit 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    echo "docker.sh: dockerd is up after ${waited} s"
fi

state="$(docker info --format '{{.Swarm.LocalNodeState}}')"
if [ "$state" != "active" ]; then
    echo "docker.sh: making a one-node swarm (was: $state)"
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null
fi
if [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" != "true" ]; then
    echo "docker.sh: this node is in a swarm but is not a manager; the tests need a manager" >&2
    exit 1
fi
echo "docker.sh: docker $(docker version --format '{{.Server.Version}}'), swarm active" \
     "($(docker node ls --format '{{.Hostname}}' | wc -l) node(s))"
