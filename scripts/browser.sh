#!/usr/bin/env bash
# Installs the browser the tests drive (tests/browser): Debian's chromium, which Playwright
# launches by path (/usr/bin/chromium). Playwright's own browser download is not used, so
# this needs only Debian's archive. Idempotent, quiet when chromium is already there.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}
echo "browser.sh: installing chromium (Debian)" >&2
export DEBIAN_FRONTEND=noninteractive
as_root apt-get update -qq
as_root apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
test -x /usr/bin/chromium
