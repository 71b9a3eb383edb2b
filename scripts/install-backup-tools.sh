#!/usr/bin/env bash
# Installs what the logical-backup tests and the benchmark need, beyond the Python packages:
#   - pg_dump / pg_restore (Debian postgresql-client-15), the dump and restore tools;
#   - Azurite (npm, under .tools/azurite), the Azure Blob Storage emulator;
#   - prometheus-pushgateway, so the Pushgateway push is tested against the real server;
#   - age and zstd, the standard tools of the break-glass recovery that must work without
#     CTAFleet (a test decrypts a backup with them).
# Safe to run again: each step is skipped when its tool is already there. It never starts a
# server: the tests start (and stop) their own, on loopback.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
AZURITE_VERSION="${AZURITE_VERSION:-3.35.0}"
_APT_UPDATED=""

apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-backup-tools: need root to apt-get install $*" >&2
        exit 1
    fi
    # One `apt-get update` per run, and only when something is missing.
    if [ -z "$_APT_UPDATED" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        _APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

command -v pg_dump >/dev/null 2>&1 || apt_install postgresql-client-15
command -v age >/dev/null 2>&1 || apt_install age
command -v zstd >/dev/null 2>&1 || apt_install zstd
# Debian installs the binary as prometheus-pushgateway; the tests look for that name.
command -v prometheus-pushgateway >/dev/null 2>&1 || apt_install prometheus-pushgateway

if [ ! -x "$ROOT/.tools/azurite/node_modules/.bin/azurite-blob" ]; then
    command -v npm >/dev/null 2>&1 || apt_install npm
    mkdir -p "$ROOT/.tools/azurite"
    npm install --no-audit --no-fund --loglevel=error \
        --prefix "$ROOT/.tools/azurite" "azurite@$AZURITE_VERSION"
fi

echo "pg_dump:     $(pg_dump --version)"
echo "age:         $(age --version)"
echo "pushgateway: $(command -v prometheus-pushgateway)"
echo "azurite:     $ROOT/.tools/azurite/node_modules/.bin/azurite-blob"
