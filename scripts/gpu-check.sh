#!/usr/bin/env bash
# The torch engine on one GPU (NCCL, bf16): images/s and peak memory, on a host of today:
# Python 3.12+ with a CUDA build of torch already installed, no network.
#
#   bash scripts/gpu-check.sh [--wheels DIR] [--cpu] [gpu_check.py options...]
#
#   --wheels DIR  install autocnnp's other runtime needs (numpy, lxml, rich, psutil, pyyaml)
#                 from the wheels in DIR, offline (pip --no-index --find-links DIR), into the
#                 Python that has torch; skipped for what is importable already. Make DIR on
#                 a machine with network: pip download -d DIR numpy lxml rich psutil pyyaml
#                 --python-version 3.12 --only-binary=:all:
#   --cpu         dry mode: the same path on the CPU (Gloo, fp32, a small model), to check
#                 the script where there is no GPU
#   PYTHON=...    the interpreter with torch (default: python3)
#
# autocnnp itself is not installed (its setup.cfg pins Python 3.11 for TensorFlow 2.15): the
# check runs this checkout from PYTHONPATH. Results: benchmarks/results/gpu-check-*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=""
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEELS=$2; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done

if ! "$PYTHON" -c 'import torch' 2>/dev/null; then
  echo "gpu-check: $PYTHON cannot import torch; this check uses the torch that is installed (a CUDA build on a GPU host). Set PYTHON=/path/to/python" >&2
  exit 2
fi
# module name -> distribution name of what the torch engine's ranks import besides torch
NEEDS=(numpy:numpy lxml:lxml rich:rich psutil:psutil yaml:pyyaml)
missing=()
for pair in "${NEEDS[@]}"; do
  "$PYTHON" -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ -z "$WHEELS" ]; then
    echo "gpu-check: missing Python packages: ${missing[*]}; give their wheels with --wheels DIR (no network needed)" >&2
    exit 2
  fi
  echo "[gpu-check] installing ${missing[*]} from $WHEELS (offline)"
  "$PYTHON" -m pip install -q --no-index --find-links "$WHEELS" "${missing[@]}"
fi
"$PYTHON" -c 'import sys, torch; print(f"[gpu-check] python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}, GPUs {torch.cuda.device_count()}")'
exec "$PYTHON" scripts/gpu_check.py "${ARGS[@]}"
