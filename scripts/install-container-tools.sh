#!/usr/bin/env bash
# Installs what the container tests need to build and run images without a Docker engine or a
# registry (Debian/Ubuntu): podman, buildah, runc (crun fails on cgroup v1 hosts), mmdebstrap
# for the local base image, aardvark-dns (service names on compose networks), catatonit (the
# pause process of every pod podman kube play makes), and
# podman-compose in a venv under the machine cache.
#
# Idempotent: does nothing when everything is present. Starts no daemon (podman has none).
#
# Usage: scripts/install-container-tools.sh        (as root, or with sudo available)
set -euo pipefail

CACHE=${CTAFLEET_CACHE_DIR:-/var/cache/ctafleet}
TOOLS=(podman buildah runc mmdebstrap newuidmap catatonit /usr/lib/podman/aardvark-dns)
PACKAGES=(podman buildah runc mmdebstrap uidmap aardvark-dns catatonit)
COMPOSE_PINS="podman-compose==1.6.0"

source "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"
apt_install_missing "container tools" "${TOOLS[@]}" -- "${PACKAGES[@]}"
SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo)

# podman-compose from PyPI (Debian's is older); its own venv so it never meets the app's pins.
venv="$CACHE/venvs/compose"
if [ "$(cat "$venv/.pins" 2>/dev/null)" != "$COMPOSE_PINS" ]; then
  "${SUDO[@]}" mkdir -p "$CACHE/venvs"
  "${SUDO[@]}" rm -rf "$venv"
  "${SUDO[@]}" python3 -m venv "$venv"
  # shellcheck disable=SC2086 # the pin list is word-split on purpose
  "${SUDO[@]}" "$venv/bin/pip" install --quiet --disable-pip-version-check $COMPOSE_PINS \
    2> >(grep -v '^WARNING: Location' >&2)
  echo "$COMPOSE_PINS" | "${SUDO[@]}" tee "$venv/.pins" >/dev/null
fi
echo "container tools present: $(podman --version), $(buildah --version | cut -d' ' -f1-3), $("$venv/bin/podman-compose" --version 2>/dev/null | grep -i compose)"
