#!/usr/bin/env bash
# A real one-node Slurm on this machine, for the slurm backend's tests, CI and curious users.
#
#   bash scripts/slurm-local.sh install # only install slurm-wlm + munge (Debian) if missing
#   bash scripts/slurm-local.sh up      # install slurm-wlm + munge if missing, start munged,
#                                       # slurmctld and slurmd; prints the SLURM_CONF to export
#   bash scripts/slurm-local.sh status  # sinfo of the local cluster
#   bash scripts/slurm-local.sh down    # stop the daemons, remove every file `up` made
#
# Everything lives under $AUTOCNNP_SLURM_DIR (default /tmp/autocnnp-slurm): slurm.conf, spool,
# state, logs, pid files and munge's socket. The system's /etc/slurm is never written: point
# Slurm's commands at this cluster with `export SLURM_CONF=$AUTOCNNP_SLURM_DIR/slurm.conf`.
# One node (this machine, all its CPUs), one partition `debug` (default) and a second one
# `long`, so that partition choice is exercised. Needs root (the daemons run as root here).
set -euo pipefail
DIR=${AUTOCNNP_SLURM_DIR:-/tmp/autocnnp-slurm}
CONF=$DIR/slurm.conf
stamp() { printf '[slurm-local %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

install_packages() {
  local missing=()
  for p in slurm-wlm munge; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return
  if [ "$(id -u)" != 0 ]; then
    echo "slurm-local: missing Debian packages: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  stamp "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
}

write_conf() {
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  mkdir -p "$DIR"/{spool,state,log,run,munge}
  # cred_expire: how long a step credential lives and how long a requeued job waits before
  # it may start again (120 s by default); 20 s keeps the requeue tests short and still gives
  # a loaded machine time to launch a step.
  cat > "$CONF" <<CONF
# written by scripts/slurm-local.sh up; removed by down
ClusterName=autocnnp-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket.2,cred_expire=20
CryptoType=crypto/munge
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/slurmd-%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
MinJobAge=3600
KillWait=10
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=long Nodes=$host Default=NO MaxTime=INFINITE State=UP
CONF
}

up() {
  install_packages
  if [ -f "$DIR/run/slurmctld.pid" ] && kill -0 "$(cat "$DIR/run/slurmctld.pid")" 2>/dev/null; then
    stamp "already up ($CONF)"
  else
    write_conf
    stamp "munged"
    munged --force --socket="$DIR/munge/munge.socket.2" --pid-file="$DIR/run/munged.pid" \
           --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munge.seed"
    export SLURM_CONF=$CONF
    stamp "slurmctld"
    slurmctld -f "$CONF"
    stamp "slurmd"
    slurmd -f "$CONF"
  fi
  export SLURM_CONF=$CONF
  for _ in $(seq 60); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qE '^idle'; then
      stamp "up: $(sinfo -h -o '%P %D nodes %c cpus %T' | tr '\n' ';')"
      echo "export SLURM_CONF=$CONF"
      return 0
    fi
    scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
    sleep 1
  done
  echo "slurm-local: the node did not become idle in 60 s; logs in $DIR/log:" >&2
  tail -n 20 "$DIR"/log/*.log >&2 || true
  exit 1
}

stop_pidfile() {
  local file=$1 pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
}

down() {
  if [ -f "$CONF" ]; then
    SLURM_CONF=$CONF scancel --quiet --user=root 2>/dev/null || true
  fi
  for f in "$DIR"/run/slurmd-*.pid "$DIR/run/slurmctld.pid" "$DIR/run/munged.pid"; do
    stop_pidfile "$f"
  done
  rm -rf "$DIR"
  stamp "down"
}

case "${1:-}" in
  install) install_packages; stamp "slurm-wlm and munge installed" ;;
  up) up ;;
  down) down ;;
  status) SLURM_CONF=$CONF sinfo ;;
  *) echo "usage: $0 install|up|down|status" >&2; exit 2 ;;
esac
