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

source "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"
apt_install_missing "tls tools" nginx pebble pebble-challtestsrv certbot envsubst openssl \
  -- nginx pebble certbot gettext-base openssl
echo "tls tools present: $(nginx -v 2>&1); certbot $(certbot --version 2>&1 | awk '{print $2}')"
