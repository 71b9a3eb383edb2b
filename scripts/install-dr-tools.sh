#!/usr/bin/env bash
# Installs what the physical-backup and disaster-recovery tests and commands need:
# pgBackRest (Debian package) and Azurite (npm, under .tools/azurite), plus openssl for the
# self-signed certificate Azurite must serve because pgBackRest's Azure driver only speaks
# HTTPS. Safe to run again: each step is skipped when its tool is already there.
# It never starts a server: the tests start (and stop) their own, on loopback.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
AZURITE_VERSION="${AZURITE_VERSION:-3.35.0}"

apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-dr-tools: need root to apt-get install $*" >&2
        exit 1
    fi
    # One `apt-get update` per run, and only when something is missing.
    if [ -z "${_APT_UPDATED:-}" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        _APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

command -v pgbackrest >/dev/null 2>&1 || apt_install pgbackrest
command -v openssl >/dev/null 2>&1 || apt_install openssl
# initdb/pg_ctl live outside PATH on Debian; the tests look in /usr/lib/postgresql/*/bin too.
if ! command -v pg_ctl >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    apt_install postgresql-15
fi

if [ ! -x "$ROOT/.tools/azurite/node_modules/.bin/azurite-blob" ]; then
    command -v npm >/dev/null 2>&1 || apt_install npm
    mkdir -p "$ROOT/.tools/azurite"
    npm install --no-audit --no-fund --loglevel=error \
        --prefix "$ROOT/.tools/azurite" "azurite@$AZURITE_VERSION"
fi

echo "pgbackrest: $(pgbackrest version)"
echo "azurite:    $ROOT/.tools/azurite/node_modules/.bin/azurite-blob"
