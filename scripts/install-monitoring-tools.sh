#!/usr/bin/env bash
# Installs Prometheus (promtool), Alertmanager (amtool), the blackbox exporter and syslog-ng
# with its HTTP destination (the Loki log shipper) that tests/deploy uses (Debian/Ubuntu).
#
# Idempotent: does nothing when the tools are already on PATH. Starts no daemon: the packages'
# services are prevented from starting during installation (policy-rc.d), and the tests start
# their own processes on loopback when they need them.
#
# Usage: scripts/install-monitoring-tools.sh        (as root, or with sudo available)
set -euo pipefail

TOOLS=(prometheus promtool amtool prometheus-alertmanager prometheus-blackbox-exporter syslog-ng)
PACKAGES=(prometheus prometheus-alertmanager prometheus-blackbox-exporter syslog-ng-core syslog-ng-mod-http)

missing=()
for tool in "${TOOLS[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "monitoring tools present: $(promtool --version 2>&1 | head -n 1); $(amtool --version 2>&1 | head -n 1)"
  exit 0
fi
echo "missing: ${missing[*]}; installing ${PACKAGES[*]}"

if ! command -v apt-get >/dev/null 2>&1; then
  echo "apt-get not found: install ${PACKAGES[*]} (promtool, amtool, alertmanager) by hand" >&2
  exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "run as root or install sudo" >&2
    exit 1
  fi
  SUDO=(sudo)
fi

# Keep the packages' maintainer scripts from starting prometheus or alertmanager services.
policy=/usr/sbin/policy-rc.d
created_policy=false
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
  "${SUDO[@]}" chmod 0755 "$policy"
  created_policy=true
fi
cleanup() {
  if [ "$created_policy" = true ]; then
    "${SUDO[@]}" rm -f "$policy"
  fi
}
trap cleanup EXIT

"${SUDO[@]}" apt-get update
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y --no-install-recommends "${PACKAGES[@]}"

for tool in "${TOOLS[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "$tool still missing after install" >&2; exit 1; }
done
echo "installed: $(promtool --version 2>&1 | head -n 1); $(amtool --version 2>&1 | head -n 1)"
