#!/usr/bin/env bash
# Everything `make test` needs outside Python, installed idempotently: each script skips what
# is already present and none starts a server (the tests start their own, on loopback).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
for script in install-monitoring-tools.sh install-backup-tools.sh install-dr-tools.sh \
    install-oidc-provider.sh install-container-tools.sh install-lint-tools.sh install-tls-tools.sh; do
    if [ -x "$here/$script" ]; then
        "$here/$script"
    fi
done
