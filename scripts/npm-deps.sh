#!/usr/bin/env bash
# Installs the Node packages the tests use (tests/asyncapi: the official AsyncAPI parser)
# exactly as package-lock.json pins them. Idempotent and fast when done: `npm ci` runs only
# when node_modules is missing or the lock file changed since the last install.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/tests/asyncapi"
stamp="$dir/node_modules/.streambridge-lock.sha256"

for tool in node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "npm-deps: '$tool' is not installed; the AsyncAPI tests need Node.js >= 18 and npm" \
         "(Debian: apt-get install nodejs npm)" >&2
    exit 1
  fi
done
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 18 ]; then
  echo "npm-deps: Node.js $(node --version) is too old; @asyncapi/parser needs >= 18" >&2
  exit 1
fi

want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

echo "npm-deps: installing tests/asyncapi from package-lock.json" >&2
# --ignore-scripts: the parser needs no install step (one dependency only sends telemetry).
npm ci --prefix "$dir" --ignore-scripts --no-audit --no-fund --loglevel=error >&2
echo "$want" > "$stamp"
