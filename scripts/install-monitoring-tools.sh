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

source "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"
apt_install_missing "monitoring tools" prometheus promtool amtool prometheus-alertmanager \
  prometheus-blackbox-exporter syslog-ng \
  -- prometheus prometheus-alertmanager prometheus-blackbox-exporter syslog-ng-core \
  syslog-ng-mod-http
echo "monitoring tools present: $(promtool --version 2>&1 | head -n 1); $(amtool --version 2>&1 | head -n 1)"
