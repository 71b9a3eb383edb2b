#!/usr/bin/env bash
# Builds localhost/debian:bookworm-slim from the Debian mirror with mmdebstrap, for hosts that
# reach no container registry (CI, air-gapped build machines). Production builds start from
# the official images instead (see deploy/docker/README.md). minbase + merged /usr + no docs,
# man pages or locales: 78 MB, and the dpkg excludes persist so later apt layers stay slim.
#
# Usage: deploy/docker/base/build.sh [PODMAN]     (root; PODMAN defaults to scripts/podman-local.sh)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
podman=${1:-$here/../../../scripts/podman-local.sh}
image=localhost/debian:bookworm-slim
work=$(mktemp -d "${TMPDIR:-/var/tmp}/ctafleet-base.XXXXXX")
trap 'rm -rf "$work"' EXIT
TMPDIR=$work mmdebstrap --variant=minbase --mode=root --format=tar \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr --dpkgopt=force-unsafe-io \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/info/*' \
  --aptopt='Acquire::Languages "none"' bookworm "$work/rootfs.tar" >"$work/mmdebstrap.log" 2>&1 \
  || { tail -n 20 "$work/mmdebstrap.log" >&2; exit 1; }
"$podman" import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' \
  "$work/rootfs.tar" "$image" >/dev/null
echo "built $image"
