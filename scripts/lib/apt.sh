# Sourced by the install-*.sh scripts: one way to install Debian packages for the tests.
#
#   apt_install_missing "WHAT" TOOLS... -- PACKAGES...
#
# Does nothing when every TOOL (a command name or an absolute path) is present. Otherwise
# installs the PACKAGES with apt (as root, or through sudo), keeping the packages' maintainer
# scripts from starting any service (policy-rc.d: the tests start their own processes on
# loopback), and fails when a TOOL is still missing afterwards.

apt_install_missing() {
  local what=$1 tools=() packages=() missing=() tool
  shift
  while [ $# -gt 0 ] && [ "$1" != -- ]; do tools+=("$1"); shift; done
  shift
  packages=("$@")
  for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  echo "$what: missing ${missing[*]}; installing ${packages[*]}"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "apt-get not found: install ${packages[*]} by hand" >&2
    return 1
  fi
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "run as root or install sudo" >&2; return 1; }
    sudo=(sudo)
  fi
  local policy=/usr/sbin/policy-rc.d created=false rc=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 0755 "$policy"
    created=true
  fi
  "${sudo[@]}" apt-get update -qq && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null || rc=$?
  if [ "$created" = true ]; then "${sudo[@]}" rm -f "$policy"; fi
  [ "$rc" -eq 0 ] || return "$rc"
  for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$tool still missing after install" >&2; return 1; }
  done
}
