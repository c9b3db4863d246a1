#!/usr/bin/env bash
# Two real ssh hosts on this machine, for the hosts backend's tests, CI and curious users.
#
#   bash scripts/ssh-hosts.sh install  # only install openssh-server (Debian) if missing
#   bash scripts/ssh-hosts.sh up       # make the hosts acnp-h1 and acnp-h2 and start their sshd
#   bash scripts/ssh-hosts.sh status   # which hosts answer over ssh
#   bash scripts/ssh-hosts.sh down     # stop the sshd, remove every namespace, link and file
#
# Each host is a network namespace (its own addresses) and a UTS namespace (its own hostname)
# running its own sshd; they share this machine's file system, so the project's .venv and run
# directories are the same path on every host, as on a cluster with a shared home. A bridge
# acnp-br0 (10.77.0.1/24) joins veth pairs to the hosts: acnp-h1 = 10.77.0.11,
# acnp-h2 = 10.77.0.12. Only these addresses are used.
#
# The hosts accept one administrator key, made by `up` (the "key you already have" of a real
# lab); the hosts backend uses it only to install and remove each job's own key. Point autocnnp
# at the hosts with `export AUTOCNNP_SSH_CONFIG=$DIR/ssh_config AUTOCNNP_SSH_IDENTITY=$DIR/admin_key`
# (printed by `up`).
# Everything lives under $AUTOCNNP_SSH_HOSTS_DIR (default /tmp/autocnnp-ssh-hosts). Needs root.
set -euo pipefail
DIR=${AUTOCNNP_SSH_HOSTS_DIR:-/tmp/autocnnp-ssh-hosts}
HOSTS=(acnp-h1 acnp-h2)
declare -A ADDR=([acnp-h1]=10.77.0.11 [acnp-h2]=10.77.0.12)
BRIDGE=acnp-br0
stamp() { printf '[ssh-hosts %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

install_packages() {
  dpkg -s openssh-server >/dev/null 2>&1 && return
  if [ "$(id -u)" != 0 ]; then
    echo "ssh-hosts: missing Debian package openssh-server; run as root or: sudo apt-get install openssh-server" >&2
    exit 1
  fi
  stamp "apt-get install openssh-server"
  # policy-rc.d: install the binaries without starting the machine's own sshd
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' RETURN
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server >/dev/null \
    || { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server >/dev/null; }
}

host_up() {
  local h=$1 addr=${ADDR[$1]}
  ip netns add "$h"
  ip link add "v-$h" type veth peer name eth0 netns "$h"
  ip link set "v-$h" master "$BRIDGE" up
  ip -n "$h" addr add "$addr/24" dev eth0
  ip -n "$h" link set eth0 up
  ip -n "$h" link set lo up
  ip -n "$h" route add default via 10.77.0.1
  # the hosts know each other by name, as a lab's DNS would have them: `ip netns exec` shows
  # /etc/netns/$h/hosts as /etc/hosts to what runs in the host (sshd, ranks); the machine's own
  # /etc/hosts is not touched
  mkdir -p "/etc/netns/$h"
  { printf '127.0.0.1 localhost\n'; for o in "${HOSTS[@]}"; do printf '%s %s\n' "${ADDR[$o]}" "$o"; done; } \
    > "/etc/netns/$h/hosts"
  ssh-keygen -q -t ed25519 -N "" -f "$DIR/$h/host_key" -C "$h"
  cat > "$DIR/$h/sshd_config" <<CONF
ListenAddress $addr
Port 22
HostKey $DIR/$h/host_key
PidFile $DIR/$h/sshd.pid
AuthorizedKeysFile .ssh/authorized_keys $DIR/admin_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
LogLevel VERBOSE
CONF
  # its own hostname: ranks started through this sshd say they run on $h
  ip netns exec "$h" unshare --uts sh -c "hostname $h; exec /usr/sbin/sshd -f $DIR/$h/sshd_config -E $DIR/$h/sshd.log"
}

up() {
  install_packages
  [ -e "$DIR/ssh_config" ] && down >/dev/null 2>&1 || true
  mkdir -p "$DIR" /run/sshd
  chmod 700 "$DIR"
  ssh-keygen -q -t ed25519 -N "" -f "$DIR/admin_key" -C "autocnnp-ssh-hosts-admin"
  cp "$DIR/admin_key.pub" "$DIR/admin_keys"
  ip link add "$BRIDGE" type bridge
  ip addr add 10.77.0.1/24 dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # dockerd sets FORWARD's policy to DROP and bridged frames pass iptables (br_netfilter):
  # let the hosts reach each other across the bridge (the rule goes again in `down`)
  if command -v iptables >/dev/null; then iptables -I FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT; fi
  : > "$DIR/ssh_config"
  for h in "${HOSTS[@]}"; do
    mkdir -p "$DIR/$h"
    host_up "$h"
    cat >> "$DIR/ssh_config" <<CONF
Host $h
  HostName ${ADDR[$h]}
  User root
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
  ConnectTimeout 5

CONF
  done
  for h in "${HOSTS[@]}"; do
    for _ in $(seq 50); do
      ssh -F "$DIR/ssh_config" -i "$DIR/admin_key" -o BatchMode=yes "$h" true 2>/dev/null && break
      sleep 0.2
    done
    ssh -F "$DIR/ssh_config" -i "$DIR/admin_key" -o BatchMode=yes "$h" true
  done
  stamp "hosts ${HOSTS[*]} answer over ssh; use: export AUTOCNNP_SSH_CONFIG=$DIR/ssh_config AUTOCNNP_SSH_IDENTITY=$DIR/admin_key"
}

status() {
  for h in "${HOSTS[@]}"; do
    if ssh -F "$DIR/ssh_config" -i "$DIR/admin_key" -o BatchMode=yes "$h" hostname 2>/dev/null; then :; else echo "$h: down"; fi
  done
}

down() {
  for h in "${HOSTS[@]}"; do
    if [ -f "$DIR/$h/sshd.pid" ]; then kill "$(cat "$DIR/$h/sshd.pid")" 2>/dev/null || true; fi
    # every process left in the host (ranks, orted, ssh sessions)
    if ip netns pids "$h" >/dev/null 2>&1; then
      ip netns pids "$h" | xargs -r kill -9 2>/dev/null || true
      ip netns del "$h" 2>/dev/null || true
    fi
    ip link del "v-$h" 2>/dev/null || true
    rm -rf "/etc/netns/$h"
  done
  rmdir /etc/netns 2>/dev/null || true
  ip link del "$BRIDGE" 2>/dev/null || true
  if command -v iptables >/dev/null; then
    while iptables -D FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT 2>/dev/null; do :; done
  fi
  rm -rf "$DIR"
  stamp "down: namespaces, links, /etc/netns entries and $DIR removed"
}

case "${1:-}" in
  install) install_packages ;;
  up) up ;;
  status) status ;;
  down) down ;;
  *) echo "usage: $0 install|up|status|down" >&2; exit 2 ;;
esac
