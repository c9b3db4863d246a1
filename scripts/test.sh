#!/usr/bin/env bash
# The test command: set everything up (scripts/setup.sh), start dockerd and a one-node swarm
# for the docker tests, install Slurm for the slurm tests and Prometheus, tmux and Chromium for
# the monitoring tests, then run the whole test suite (every tier: fast, slow, mpi, docker,
# slurm, ssh, cluster).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not docker" -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The docker tier needs a running dockerd and a one-node swarm: a hard requirement here, since
# the swarm backend is tested for real (run pytest -m "not docker" by hand to skip that tier).
t0=$(date +%s)
bash .ci/docker.sh
echo "[test] docker ready ($(( $(date +%s) - t0 ))s)"
# The slurm tier needs Debian's slurm-wlm and munge; the tests start a one-node Slurm with
# scripts/slurm-local.sh up and stop it with down when the session ends.
t0=$(date +%s)
bash scripts/slurm-local.sh install
echo "[test] slurm packages ready ($(( $(date +%s) - t0 ))s)"
# The ssh tier needs openssh-server; its tests make two hosts with scripts/ssh-hosts.sh up/down.
t0=$(date +%s)
bash scripts/ssh-hosts.sh install
echo "[test] openssh-server ready ($(( $(date +%s) - t0 ))s)"
# The cluster tier needs docker.io, iproute2 and iptables; its tests make a three-node swarm
# with scripts/test-cluster.sh up/down (three dockerd in network namespaces).
t0=$(date +%s)
bash scripts/test-cluster.sh install
echo "[test] cluster tools ready ($(( $(date +%s) - t0 ))s)"
# The monitoring tests run a real Prometheus, tmux and headless Chromium (Debian packages).
t0=$(date +%s)
bash scripts/monitoring-tools.sh
echo "[test] monitoring tools ready ($(( $(date +%s) - t0 ))s)"
# Two pytest-xdist workers: the tiers that use one machine-wide service (dockerd, Slurm, the ssh
# hosts) each stay on one worker while the other tests run beside them (tests/conftest.py says
# how tests are grouped). AUTOCNNP_TEST_WORKERS=0 runs everything in one process.
workers=${AUTOCNNP_TEST_WORKERS:-2}
dist=(); [ "$workers" != 0 ] && dist=(-n "$workers")
exec .venv/bin/python -m pytest -ra --durations=15 "${dist[@]}" "$@"
