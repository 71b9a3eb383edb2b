#!/usr/bin/env bash
# `podman` with a private image store and settings that work on a host with no systemd, no
# Docker engine and no reachable registry (CI and the test suite): runc with cgroupfs, events
# to a file, no short-name lookups, and a store under the machine cache so built images (the
# local base image above all) survive between runs and clean clones.
#
# Usage: scripts/podman-local.sh ARGS...          (same arguments as podman)
#        eval "$(scripts/podman-local.sh --env)"  (export the settings into this shell)
set -euo pipefail

store=${CTAFLEET_PODMAN_DIR:-${CTAFLEET_CACHE_DIR:-/var/cache/ctafleet}/podman}
mkdir -p "$store/graph" "$store/run"
write() { # only when the content changed, so concurrent callers never see a half file
  local file=$1 content=$2
  if [ "$(cat "$file" 2>/dev/null)" != "$content" ]; then
    printf '%s\n' "$content" > "$file.$$" && mv -f "$file.$$" "$file"
  fi
}
write "$store/containers.conf" "[containers]
default_ulimits = [\"nofile=20000:20000\", \"nproc=4096:4096\"]
netns = \"none\"
[engine]
runtime = \"runc\"
cgroup_manager = \"cgroupfs\"
events_logger = \"file\"
events_logfile_path = \"$store/events.log\"
[network]
# netavark + aardvark-dns: service names resolve on compose networks (CNI would need dnsname).
network_backend = \"netavark\""
write "$store/storage.conf" "[storage]
driver = \"overlay\"
graphroot = \"$store/graph\"
runroot = \"$store/run\""
write "$store/registries.conf" 'unqualified-search-registries = []
short-name-mode = "enforcing"'

export CONTAINERS_CONF=$store/containers.conf CONTAINERS_STORAGE_CONF=$store/storage.conf \
  CONTAINERS_REGISTRIES_CONF=$store/registries.conf
if [ "${1:-}" = --env ]; then
  printf 'export CONTAINERS_CONF=%q CONTAINERS_STORAGE_CONF=%q CONTAINERS_REGISTRIES_CONF=%q\n' \
    "$CONTAINERS_CONF" "$CONTAINERS_STORAGE_CONF" "$CONTAINERS_REGISTRIES_CONF"
  exit 0
fi
exec podman "$@"
