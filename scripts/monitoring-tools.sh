#!/usr/bin/env bash
# Debian packages the monitoring tests use (issue 14), installed when missing:
#   prometheus  a real Prometheus server that scrapes a running job (tests/run_manage/test_prometheus.py)
#   tmux        a real terminal in which `autocnnp watch` is run and read back (capture-pane)
#   chromium    headless screenshots of `autocnnp report`'s HTML page
# Only the binaries are used: the tests start and stop their own Prometheus; the package's
# own service is not started (no systemd here, and policy-rc.d refuses it elsewhere).
set -euo pipefail
PACKAGES=(prometheus tmux chromium)
missing=()
for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "monitoring-tools: missing Debian packages: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then  # keep the package from starting its service
  printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; made_policy=1
fi
trap '[ "$made_policy" = 1 ] && rm -f "$policy"' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
