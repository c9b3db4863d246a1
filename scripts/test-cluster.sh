#!/usr/bin/env bash
# A three-node Docker Swarm on this machine, for the cluster tests, CI and curious users.
#
#   bash scripts/test-cluster.sh install  # check dockerd/containerd/runc/iproute2 (docker.io)
#   bash scripts/test-cluster.sh up       # start the three daemons and join them into one swarm
#   bash scripts/test-cluster.sh status   # the swarm's nodes as the manager sees them
#   bash scripts/test-cluster.sh down     # stop every daemon, remove every namespace, link, rule, file
#   bash scripts/test-cluster.sh kill-node acnp-n3   # stop one node's dockerd (a node dying)
#
# Each node is a network namespace (its own addresses, its own iptables) and a UTS namespace
# (its own hostname) running its own dockerd with its own data root, exec root, pidfile and
# sockets. A bridge acnp-cbr0 (10.78.0.1/24) joins veth pairs to the nodes: acnp-n1 = 10.78.0.11
# (manager), acnp-n2 = 10.78.0.12 and acnp-n3 = 10.78.0.13 (workers, each declaring 2 generic
# resources `gpu`, so placement by resources is exercised). Only these addresses are used.
# The daemons share this machine's mount namespace, so a plain folder, $DIR/shared, is the
# shared volume: the same path on every node, as an NFS mount would be on a real cluster.
#
# Every daemon listens on its socket $DIR/NODE/docker.sock and, for image delivery
# (autocnnp image push-nodes), on tcp://ADDR:2375 inside its namespace: without TLS, which is
# acceptable only because nothing outside this machine can reach 10.78.0.0/24; a real cluster
# uses ssh://user@node (the deployment property node_docker).
#
# Storage driver: overlay2 (default; AUTOCNNP_CLUSTER_STORAGE=vfs to compare): the data roots
# are on this machine's ext4, so overlay2 works and loads the 2 GB image without copying each
# layer (vfs copies every layer in full).
# Everything lives under $AUTOCNNP_CLUSTER_DIR (default /tmp/autocnnp-cluster). Needs root.
# `up` prints the environment to point autocnnp and the docker CLI at the manager.
set -euo pipefail
DIR=${AUTOCNNP_CLUSTER_DIR:-/tmp/autocnnp-cluster}
STORAGE=${AUTOCNNP_CLUSTER_STORAGE:-overlay2}
NODES=(acnp-n1 acnp-n2 acnp-n3)
declare -A ADDR=([acnp-n1]=10.78.0.11 [acnp-n2]=10.78.0.12 [acnp-n3]=10.78.0.13)
declare -A GPUS=([acnp-n1]=0 [acnp-n2]=2 [acnp-n3]=2)
BRIDGE=acnp-cbr0
MANAGER=acnp-n1
stamp() { printf '[test-cluster %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
dk() { local n=$1; shift; docker -H "unix://$DIR/$n/docker.sock" "$@"; }

install_packages() {
  local missing=()
  for cmd in dockerd containerd runc docker ip iptables unshare; do
    command -v "$cmd" >/dev/null || missing+=("$cmd")
  done
  [ ${#missing[@]} = 0 ] && return
  if [ "$(id -u)" != 0 ]; then
    echo "test-cluster: missing ${missing[*]}; run as root or: sudo apt-get install docker.io iproute2 iptables util-linux" >&2
    exit 1
  fi
  stamp "apt-get install docker.io iproute2 iptables (missing: ${missing[*]})"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io iproute2 iptables util-linux >/dev/null \
    || { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io iproute2 iptables util-linux >/dev/null; }
}

node_up() {
  local n=$1 addr=${ADDR[$1]} gen=()
  mkdir -p "$DIR/$n"
  ip netns add "$n"
  ip link add "v-$n" type veth peer name eth0 netns "$n"
  ip link set "v-$n" master "$BRIDGE" up
  ip -n "$n" addr add "$addr/24" dev eth0
  ip -n "$n" link set eth0 up
  ip -n "$n" link set lo up
  ip -n "$n" route add default via 10.78.0.1
  # its own config file: the machine's /etc/docker/daemon.json is not this node's
  echo '{}' > "$DIR/$n/daemon.json"
  if [ "${GPUS[$n]}" != 0 ]; then gen=(--node-generic-resource "gpu=${GPUS[$n]}"); fi
  # its own hostname: the swarm names the node by it, the ranks' logs say where they ran
  # nsenter, not `ip netns exec`: that one remounts /sys in a new mount namespace, hiding the
  # cgroup hierarchies dockerd needs ("Devices cgroup isn't mounted"); this way the daemons share
  # the machine's mounts, so the shared volume is a plain folder
  nsenter --net="/run/netns/$n" unshare --uts sh -c "hostname $n; exec setsid dockerd \
      --config-file $DIR/$n/daemon.json --data-root $DIR/$n/data --exec-root $DIR/$n/exec \
      --pidfile $DIR/$n/dockerd.pid -H unix://$DIR/$n/docker.sock -H tcp://$addr:2375 \
      --storage-driver $STORAGE --cgroup-parent acnp-$n ${gen[*]} \
      > $DIR/$n/dockerd.log 2>&1 < /dev/null" &
}

wait_daemon() {
  local n=$1
  for _ in $(seq 120); do
    dk "$n" info >/dev/null 2>&1 && return
    sleep 0.5
  done
  echo "test-cluster: dockerd of $n did not answer within 60 s; the end of $DIR/$n/dockerd.log:" >&2
  tail -n 30 "$DIR/$n/dockerd.log" >&2 || true
  exit 1
}

up() {
  install_packages
  if [ -e "$DIR/env" ] || ip link show "$BRIDGE" >/dev/null 2>&1; then down >/dev/null 2>&1 || true; fi
  mkdir -p "$DIR/shared"
  ip link add "$BRIDGE" type bridge
  ip addr add 10.78.0.1/24 dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # the host's dockerd sets FORWARD's policy to DROP and bridged frames pass iptables
  # (br_netfilter): let the nodes reach each other across the bridge (removed by `down`)
  iptables -I FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
  for n in "${NODES[@]}"; do node_up "$n"; done
  for n in "${NODES[@]}"; do wait_daemon "$n"; done
  # a pool apart from the bridge's 10.78.0.0/24 and the host swarm's default 10.0.0.0/8 /24s
  dk "$MANAGER" swarm init --advertise-addr "${ADDR[$MANAGER]}" \
     --default-addr-pool 10.201.0.0/16 >/dev/null
  local token
  token=$(dk "$MANAGER" swarm join-token -q worker)
  for n in "${NODES[@]}"; do
    [ "$n" = "$MANAGER" ] && continue
    dk "$n" swarm join --token "$token" --advertise-addr "${ADDR[$n]}" "${ADDR[$MANAGER]}:2377" >/dev/null
  done
  for _ in $(seq 60); do
    [ "$(dk "$MANAGER" node ls --format '{{.Status}}' | grep -c Ready)" = "${#NODES[@]}" ] && break
    sleep 0.5
  done
  cat > "$DIR/env" <<ENV
export DOCKER_HOST=unix://$DIR/$MANAGER/docker.sock
export AUTOCNNP_CLUSTER_SHARED=$DIR/shared
ENV
  status
  stamp "swarm of ${NODES[*]} up ($STORAGE); shared volume $DIR/shared; use: source $DIR/env"
}

status() {
  dk "$MANAGER" node ls --format '{{.Hostname}} {{.Status}} {{.Availability}} {{.ManagerStatus}}'
}

kill_node() {
  local n=${1:?kill-node NODE}
  [ -f "$DIR/$n/dockerd.pid" ] && kill "$(cat "$DIR/$n/dockerd.pid")" 2>/dev/null || true
  stamp "dockerd of $n stopped"
}

down() {
  for n in "${NODES[@]}"; do
    if [ -f "$DIR/$n/dockerd.pid" ]; then kill "$(cat "$DIR/$n/dockerd.pid")" 2>/dev/null || true; fi
  done
  for n in "${NODES[@]}"; do
    # dockerd stops its containers and its containerd; then whatever is left in the namespace
    for _ in $(seq 40); do
      [ -f "$DIR/$n/dockerd.pid" ] && kill -0 "$(cat "$DIR/$n/dockerd.pid")" 2>/dev/null || break
      sleep 0.5
    done
    if ip netns pids "$n" >/dev/null 2>&1; then
      ip netns pids "$n" | xargs -r kill -9 2>/dev/null || true
      ip netns del "$n" 2>/dev/null || true
    fi
    ip link del "v-$n" 2>/dev/null || true
    # the mounts a daemon made under its roots (overlay layers, netns files, shm of containers)
    if [ -d "$DIR/$n" ]; then
      grep -o " $DIR/$n/[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    fi
    # the cgroups its containers ran in
    for cg in /sys/fs/cgroup/acnp-$n /sys/fs/cgroup/*/acnp-$n; do
      [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
  done
  ip link del "$BRIDGE" 2>/dev/null || true
  while iptables -D FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT 2>/dev/null; do :; done
  rm -rf "$DIR"
  stamp "down: daemons, namespaces, links, rules, mounts and $DIR removed"
}

case "${1:-}" in
  install) install_packages ;;
  up) up ;;
  status) status ;;
  kill-node) kill_node "${2:-}" ;;
  down) down ;;
  *) echo "usage: $0 install|up|status|kill-node NODE|down" >&2; exit 2 ;;
esac
