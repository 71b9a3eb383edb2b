#!/usr/bin/env bash
# Builds the project's container images with podman.
#
#   scripts/build-images.sh [--local-base] [--tag TAG] [IMAGE...]
#
# IMAGE: app, edge (the default pair), postgres, redis, mosquitto, prometheus (local stand-ins
# for the official images, used by the compose test; prometheus also runs alertmanager). Images are named localhost/ctafleet/IMAGE:TAG
# (TAG defaults to dev).
# --local-base: start from localhost/debian:bookworm-slim and localhost/python:3.11-bookworm,
#   built here from the Debian mirror when missing (and kept, so later runs reuse them), for
#   hosts that reach no registry. Without it the official images are the bases.
# PODMAN: the podman command (default scripts/podman-local.sh: a private store and settings for
#   hosts without systemd; set PODMAN=podman to use the host's own).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
PODMAN=${PODMAN:-$root/scripts/podman-local.sh}
local_base=false tag=dev images=()
while [ $# -gt 0 ]; do
  case $1 in
    --local-base) local_base=true ;;
    --tag) tag=${2:?--tag needs a value}; shift ;;
    app|edge|postgres|redis|mosquitto|prometheus) images+=("$1") ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown image or option: $1 (images: app edge postgres redis mosquitto prometheus)" >&2; exit 2 ;;
  esac
  shift
done
[ ${#images[@]} -gt 0 ] || images=(app edge)

quiet() { # podman prints these on every build without systemd or syslog; they are harmless
  "$@" 2> >(grep -v -E 'systemd connection|connect to syslog' >&2)
}
debian_base=docker.io/library/debian:bookworm-slim
python_base=docker.io/library/python:3.11-slim-bookworm
if $local_base; then
  debian_base=localhost/debian:bookworm-slim
  python_base=localhost/python:3.11-bookworm
  if ! quiet "$PODMAN" image exists "$debian_base"; then
    echo "==> $debian_base (mmdebstrap; about a minute, once)"
    deploy/docker/base/build.sh "$PODMAN"
  fi
  if ! quiet "$PODMAN" image exists "$python_base"; then
    echo "==> $python_base"
    quiet "$PODMAN" build -q --network=host -t "$python_base" deploy/docker/python >/dev/null
  fi
fi

version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n 1)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
build=(build --format docker --network=host --layers)
# pip inside the build trusts the host's CA bundle (needed behind a TLS-inspecting proxy); the
# secret is mounted for that one step and never stored in a layer.
ca=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca" ] && build+=(--secret "id=ca,src=$ca")
# Each build's whole output goes to a log; its tail is shown when the build fails.
logs=${CTAFLEET_CACHE_DIR:-/var/cache/ctafleet}/build-logs
mkdir -p "$logs"
for image in "${images[@]}"; do
  name=localhost/ctafleet/$image:$tag
  log=$logs/$image.log
  echo "==> $name"
  case $image in
    app|edge)
      base=$python_base; [ "$image" = edge ] && base=$debian_base
      # The labels are also given directly: buildah reuses a cached LABEL layer when only the
      # ARG behind it changed, which would stamp an image with an older revision.
      args=(--build-arg "BASE=$base" --build-arg "VERSION=$version" --build-arg "REVISION=$revision"
            --label "org.opencontainers.image.version=$version"
            --label "org.opencontainers.image.revision=$revision"
            -f "deploy/docker/$image/Containerfile" .) ;;
    *)
      args=(--build-arg "BASE=$debian_base" "deploy/docker/$image") ;;
  esac
  if ! "$PODMAN" "${build[@]}" -t "$name" "${args[@]}" >"$log" 2>&1; then
    grep -v -E 'systemd connection|connect to syslog' "$log" | tail -n 40 >&2
    echo "building $name failed; the whole output is in $log" >&2
    exit 1
  fi
  quiet "$PODMAN" image inspect "$name" --format "    {{.Size}} bytes, user {{.Config.User}}"
done
