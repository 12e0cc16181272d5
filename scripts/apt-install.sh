#!/usr/bin/env bash
# Installs the given Debian packages (apt-get, quietly, without stdin), as root or through
# `sudo -n`. A package's postinst may try to start its service; there is no init system
# here and the tests start their own, loopback-only instances, so invoke-rc.d is told not
# to (policy-rc.d exit 101 = action forbidden) for the duration of the install.
#   bash scripts/apt-install.sh redis-server nginx-light
set -euo pipefail
[ "$#" -gt 0 ] || exit 0

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

echo "apt-install.sh: installing $*" >&2
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
  as_root chmod 755 "$policy"
  own_policy=1
fi
trap '[ "$own_policy" -eq 1 ] && as_root rm -f "$policy"' EXIT
# The package lists may be missing on a clean machine; one update, then the install.
as_root apt-get update -qq
recommends=--no-install-recommends
[ "${APT_RECOMMENDS:-0}" = 1 ] && recommends=--install-recommends
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$recommends" \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" </dev/null >/dev/null
