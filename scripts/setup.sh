#!/usr/bin/env bash
# Set up everything autocnnp needs on a fresh Debian bookworm machine (or re-check a ready one):
#   - apt: Open MPI, a C++ toolchain and cmake (to build Horovod), docker.io and debootstrap
#     (swarm backend and its tests)
#   - .venv/ with the pinned stack from constraints.txt (TensorFlow 2.15.1 CPU, Keras 2.15,
#     and the CPU build of torch 2.13.0 for the torch engine: about 40 s more on first setup)
#   - Horovod 0.28.1 built with MPI and Gloo against that TensorFlow (pip caches the built wheel,
#     so only the first setup on a machine compiles it, ~6 minutes on 2 cores)
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
stamp() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
t0=$(date +%s)

APT_PACKAGES=(python3 python3-venv python3-dev openmpi-bin libopenmpi-dev g++ cmake make git
              docker.io debootstrap iproute2 ca-certificates)
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  stamp "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
stamp "apt packages ready ($(( $(date +%s) - t0 ))s)"

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PYTHON=$candidate; break
    fi
  done
fi
if [ -z "$PYTHON" ]; then
  echo "setup: Python 3.11 is required (TensorFlow 2.15 + Horovod 0.28.1); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  stamp "creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check)
wanted=$(cat constraints.txt setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1)
if ! .venv/bin/python -c 'import autocnnp, tensorflow, torch, lxml, nibabel, docker, pytest' >/dev/null 2>&1 \
   || [ "$wanted" != "$(cat .venv/.stack-installed 2>/dev/null)" ]; then
  stamp "installing the pinned stack (constraints.txt)"
  "${PIP[@]}" install -q --upgrade "pip==26.3" "setuptools==84.2.1" "wheel==0.48.0"
  "${PIP[@]}" install -q -c constraints.txt --config-settings editable_mode=compat -e ".[train,swarm,test,torch,monai]"
  echo "$wanted" > .venv/.stack-installed
fi
.venv/bin/python -m compileall -q autocnnp >/dev/null  # byte-code up front: `validate` stays fast
stamp "python stack ready ($(( $(date +%s) - t0 ))s)"

if ! TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python -c 'import horovod.tensorflow.keras as hvd; from horovod.common.util import mpi_built, gloo_built; assert mpi_built() and gloo_built()' >/dev/null 2>&1; then
  stamp "building horovod 0.28.1 with MPI and Gloo (first time on this machine: ~6 min)"
  HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_PYTORCH=1 \
  HOROVOD_WITHOUT_MXNET=1 MAKEFLAGS="-j$(nproc)" \
    "${PIP[@]}" install -q --no-build-isolation -c constraints.txt horovod==0.28.1
fi
TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python - <<'PY'
import horovod
import horovod.tensorflow.keras  # noqa: F401  (fails here if the TensorFlow op library is broken)
from horovod.common.util import gloo_built, mpi_built
import tensorflow as tf
print(f"[setup] tensorflow {tf.__version__}, horovod {horovod.__version__} (mpi={mpi_built()}, gloo={gloo_built()})")
PY
stamp "done in $(( $(date +%s) - t0 ))s"
