#!/usr/bin/env bash
# Installs the OpenID Connect provider the single sign-on tests run on loopback: node's
# `oidc-provider` (npm, under .tools/oidc-provider), a certified OpenID provider library.
# Safe to run again: skipped when the pinned version is already there. Starts no server: each
# test starts its own (tests/auth/sso/provider.mjs).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OIDC_PROVIDER_VERSION="${OIDC_PROVIDER_VERSION:-9.13.3}"
DEST="$ROOT/.tools/oidc-provider"
installed="$DEST/node_modules/oidc-provider/package.json"

if [ -f "$installed" ] && grep -q "\"version\": \"$OIDC_PROVIDER_VERSION\"" "$installed"; then
    echo "oidc-provider: $OIDC_PROVIDER_VERSION in $DEST"
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-oidc-provider: npm is missing; need root to apt-get install npm" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm
fi
mkdir -p "$DEST"
npm install --no-audit --no-fund --loglevel=error --prefix "$DEST" \
    "oidc-provider@$OIDC_PROVIDER_VERSION"
echo "oidc-provider: $OIDC_PROVIDER_VERSION in $DEST"
