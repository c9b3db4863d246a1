#!/usr/bin/env bash
# The test command: set everything up (scripts/setup.sh), start dockerd and a one-node swarm
# for the docker tests, then run the whole test suite (every tier: fast, slow, mpi, docker).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not docker" -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -x .ci/docker.sh ] || [ -f .ci/docker.sh ]; then
  t0=$(date +%s)
  bash .ci/docker.sh
  echo "[test] docker ready ($(( $(date +%s) - t0 ))s)"
fi
exec .venv/bin/python -m pytest -ra --durations=15 "$@"
