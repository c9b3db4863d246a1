#!/bin/sh
# autocnnp-entrypoint: the entrypoint of the autocnnp images.
#
# On a Swarm rank task it
#   1. pins CUDA_VISIBLE_DEVICES to the GPUs Swarm assigned to this task. Swarm publishes the
#      generic resources of a task as DOCKER_RESOURCE_<KIND>=<id>,<id>; with the NVIDIA runtime
#      every GPU of the node may still be visible, so without this pin two ranks could share
#      one GPU while another stays idle.
#   2. computes the rank environment from the task slot. The plan gives each rank service its
#      rank table, one entry per slot ("rank:local_rank:local_size:cross_rank:cross_size:
#      horovod_hostname", entries separated by ';'), and the task gets its slot from the
#      {{.Task.Slot}} template in AUTOCNNP_TASK_SLOT. Horovod ranks get HOROVOD_RANK,
#      HOROVOD_SIZE...; torch ranks (AUTOCNNP_ENGINE=torch) get RANK, WORLD_SIZE, LOCAL_RANK
#      and LOCAL_WORLD_SIZE.
#   3. waits (up to the rendezvous timeout) for the rendezvous service (Horovod's
#      HOROVOD_GLOO_RENDEZVOUS_ADDR, torch's MASTER_ADDR): Swarm has no gang scheduling, so
#      ranks may start before it.
# then runs the command. Outside Swarm (no AUTOCNNP_TASK_SLOT) it only runs the command.
set -eu

log() { echo "autocnnp-entrypoint: $*" >&2; }

gpu_kind=$(printf '%s' "${AUTOCNNP_GPU_RESOURCE:-NVIDIA-GPU}" | tr '[:lower:]' '[:upper:]')
# Read the environment this process was started with: a kind such as NVIDIA-GPU makes the
# variable name DOCKER_RESOURCE_NVIDIA-GPU, which is not a shell identifier, and dash drops
# such variables from what it passes on (so `env` would not show it).
gpu_ids=$(tr '\0' '\n' < /proc/$$/environ | sed -n "s/^DOCKER_RESOURCE_${gpu_kind}=//p" | head -n 1)
if [ -n "$gpu_ids" ]; then
    if [ -n "${CUDA_VISIBLE_DEVICES:-}" ] && [ "${CUDA_VISIBLE_DEVICES}" != "$gpu_ids" ]; then
        log "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES} overridden by the Swarm assignment"
    fi
    export CUDA_VISIBLE_DEVICES="$gpu_ids"
    export NVIDIA_VISIBLE_DEVICES="$gpu_ids"
    log "GPUs assigned by Swarm: $gpu_ids"
fi

# The per-job secret: a rank only writes into a run directory launched with the same token
# (a stale task of an earlier launch must not write into a resumed run).
token=/run/secrets/autocnnp_job_token
if [ -f "$token" ] && [ -n "${AUTOCNNP_RUN_DIR:-}" ] && [ -f "$AUTOCNNP_RUN_DIR/swarm-token.sha256" ]; then
    have=$(sha256sum < "$token" | cut -d ' ' -f 1)
    if [ "$have" != "$(cat "$AUTOCNNP_RUN_DIR/swarm-token.sha256")" ]; then
        log "this task belongs to another launch of $AUTOCNNP_RUN_DIR (job token mismatch)"
        exit 65
    fi
fi

if [ -n "${AUTOCNNP_TASK_SLOT:-}" ] && [ -n "${AUTOCNNP_RANK_TABLE:-}" ]; then
    entry=$(printf '%s' "$AUTOCNNP_RANK_TABLE" | cut -d ';' -f "$AUTOCNNP_TASK_SLOT")
    if [ -z "$entry" ]; then
        log "task slot $AUTOCNNP_TASK_SLOT has no entry in the rank table ($AUTOCNNP_RANK_TABLE)"
        exit 64
    fi
    IFS=: read -r rank local_rank local_size cross_rank cross_size rank_host <<EOT
$entry
EOT
    size="${AUTOCNNP_WORLD_SIZE:?AUTOCNNP_WORLD_SIZE is not set}"
    export AUTOCNNP_RANK="$rank"
    if [ "${AUTOCNNP_ENGINE:-horovod}" = torch ]; then
        export RANK="$rank" WORLD_SIZE="$size" LOCAL_RANK="$local_rank" \
            LOCAL_WORLD_SIZE="$local_size"
        rendezvous_addr="${MASTER_ADDR:-}" rendezvous_port="${MASTER_PORT:-}"
    else
        export HOROVOD_RANK="$rank" HOROVOD_SIZE="$size" HOROVOD_LOCAL_RANK="$local_rank" \
            HOROVOD_LOCAL_SIZE="$local_size" HOROVOD_CROSS_RANK="$cross_rank" \
            HOROVOD_CROSS_SIZE="$cross_size" HOROVOD_HOSTNAME="$rank_host"
        rendezvous_addr="${HOROVOD_GLOO_RENDEZVOUS_ADDR:-}"
        rendezvous_port="${HOROVOD_GLOO_RENDEZVOUS_PORT:-}"
    fi
    log "slot $AUTOCNNP_TASK_SLOT -> rank $rank/$size" \
        "(local $local_rank/$local_size, cross $cross_rank/$cross_size," \
        "host $rank_host) on $(hostname)"
    if [ -n "$rendezvous_addr" ]; then
        RENDEZVOUS_ADDR="$rendezvous_addr" RENDEZVOUS_PORT="$rendezvous_port" \
        RENDEZVOUS_TIMEOUT="${AUTOCNNP_RENDEZVOUS_TIMEOUT_S:-${HOROVOD_GLOO_TIMEOUT_SECONDS:-120}}" \
        python - <<'PY'
import os, socket, sys, time
addr = os.environ["RENDEZVOUS_ADDR"]
port = int(os.environ["RENDEZVOUS_PORT"])
deadline = time.monotonic() + float(os.environ["RENDEZVOUS_TIMEOUT"])
while True:
    try:
        socket.create_connection((addr, port), timeout=2).close()
        break
    except OSError as exc:
        if time.monotonic() > deadline:
            sys.exit(f"autocnnp-entrypoint: rendezvous {addr}:{port} not reachable: {exc}")
        time.sleep(0.5)
PY
    fi
fi

exec "$@"
