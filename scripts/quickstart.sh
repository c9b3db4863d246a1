#!/usr/bin/env bash
# The main job on the embedded default: set up, then train configs/quickstart.xml (2 Horovod
# ranks on this machine, a small U-Net on the MNI152 brain-tissue demo data built on the fly).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/autocnnp run configs/quickstart.xml "$@"
