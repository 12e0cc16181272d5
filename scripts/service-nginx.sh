#!/usr/bin/env bash
# Makes sure nginx (Debian nginx-light) is installed for the tests that put a plain load
# balancer in front of several gateways. No shared nginx runs: such a test starts its own
# on a free loopback port with its own configuration (tests/e2e/nginx.py: nginx_front), as
# the upstreams are the test's own gateways. Checks that this nginx runs unprivileged
# from a loopback-only configuration. Idempotent, fast and quiet when installed.
set -euo pipefail

say() { echo "service-nginx.sh: $*"; }

if [ ! -x /usr/sbin/nginx ]; then
  bash "$(dirname "$0")/apt-install.sh" nginx-light
fi

dir=$(mktemp -d /tmp/streambridge-nginx-check.XXXXXX)
trap 'rm -rf "$dir"' EXIT
cat >"$dir/nginx.conf" <<CONF
pid $dir/nginx.pid;
error_log stderr;
events {}
http {
  access_log off;
  client_body_temp_path $dir; proxy_temp_path $dir; fastcgi_temp_path $dir;
  uwsgi_temp_path $dir; scgi_temp_path $dir;
  server { listen 127.0.0.1:1; }
}
CONF
if ! out=$(/usr/sbin/nginx -t -q -p "$dir" -c "$dir/nginx.conf" 2>&1); then
  say "nginx cannot run the tests' configuration: $out" >&2
  exit 1
fi
