#!/usr/bin/env bash
# Installs what the edge and certificate tests use (Debian/Ubuntu): nginx (the edge image's
# server), pebble (a local ACME CA, with pebble-challtestsrv), certbot, envsubst (gettext-base,
# which renders the edge templates) and openssl.
#
# Idempotent: does nothing when the tools are already on PATH. Starts no daemon: the packages'
# services (nginx, certbot's timer) are prevented from starting during installation
# (policy-rc.d), and the tests start their own processes on loopback when they need them.
#
# Usage: scripts/install-tls-tools.sh        (as root, or with sudo available)
set -euo pipefail

TOOLS=(nginx pebble pebble-challtestsrv certbot envsubst openssl)
PACKAGES=(nginx pebble certbot gettext-base openssl)

missing=()
for tool in "${TOOLS[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "tls tools present: $(nginx -v 2>&1); certbot $(certbot --version 2>&1 | awk '{print $2}')"
  exit 0
fi
echo "missing: ${missing[*]}; installing ${PACKAGES[*]}"

if ! command -v apt-get >/dev/null 2>&1; then
  echo "apt-get not found: install ${PACKAGES[*]} by hand" >&2
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

# Keep the packages' maintainer scripts from starting nginx on port 80.
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
echo "installed: $(nginx -v 2>&1); certbot $(certbot --version 2>&1 | awk '{print $2}')"
