#!/usr/bin/env bash
# Installs what the benchmarks in bench/ need beyond the Python packages: wrk (the HTTP load
# generator of bench/api.py and bench/ingest.py) and py-spy (the sampling profiler their notes
# refer to, in the venv). Safe to run again: each step is skipped when its tool is there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if ! command -v wrk >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-bench-tools: need root to apt-get install wrk" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk
fi
[ -x "$ROOT/.venv/bin/py-spy" ] || "$ROOT/.venv/bin/pip" install --quiet py-spy
echo "wrk:    $(command -v wrk)"
echo "py-spy: $("$ROOT/.venv/bin/py-spy" --version)"
