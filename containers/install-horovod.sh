#!/bin/sh
# Installs Horovod 0.28.1 in the image: the wheel(s) under wheels/ first, a source build if
# none of them loads. Usage: install-horovod.sh cpu|gpu
set -eu
flavour="${1:-cpu}"
here=/tmp/autocnnp-build
pip install --no-cache-dir -c "$here/constraints.txt" cloudpickle psutil pyyaml packaging "cffi>=1.4.0"

check() {
    python - <<'PY'
import horovod
import horovod.tensorflow as hvd
from horovod.tensorflow import mpi_ops  # loads the compiled library: fails on an ABI mismatch
assert hvd.gloo_built(), "Horovod was built without Gloo"
assert hvd.mpi_built(), "Horovod was built without MPI"
print("horovod", horovod.__version__, "with TensorFlow: Gloo and MPI built, library loads")
PY
}

source=""
if [ "$flavour" = cpu ]; then
    for wheel in "$here"/wheels/horovod-*.whl; do
        [ -f "$wheel" ] || continue
        echo "autocnnp: trying the host-built Horovod wheel $(basename "$wheel")"
        if pip install --no-cache-dir --no-deps "$wheel" && check; then
            source="wheel $(basename "$wheel")"
            break
        fi
        echo "autocnnp: the host wheel does not work here; removing it"
        pip uninstall -y horovod || true
    done
fi

if [ -z "$source" ]; then
    echo "autocnnp: compiling Horovod 0.28.1 from source (about 6 minutes on 2 cores)"
    build_deps="cmake g++ make libopenmpi-dev python3-dev"
    apt-get -o Acquire::https::CAInfo=/usr/local/share/autocnnp/ca-bundle.crt update
    apt-get -o Acquire::https::CAInfo=/usr/local/share/autocnnp/ca-bundle.crt install -y \
        --no-install-recommends $build_deps
    export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 \
        HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1
    if [ "$flavour" = gpu ]; then
        export HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_NCCL_LINK=SHARED
    fi
    pip install --no-cache-dir --no-build-isolation "horovod==0.28.1"
    if [ "$flavour" = cpu ]; then
        apt-get purge -y --auto-remove cmake g++ make python3-dev
    fi
    rm -rf /var/lib/apt/lists/*
    check
    source="compiled from source"
fi
mkdir -p /opt/autocnnp
echo "$source" > /opt/autocnnp/horovod-source
echo "autocnnp: Horovod installed ($source)"
