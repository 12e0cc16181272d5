#!/usr/bin/env bash
# Makes sure Redis listens on 127.0.0.1:6379 for the cluster tests (cluster-wide limits).
# Idempotent, fast and quiet when up; safe without stdin. Debian's redis-server, bound to
# loopback, without persistence (test data only), started as a daemon (no init system here).
set -euo pipefail

HOST=127.0.0.1
PORT=6379
DIR=/tmp/streambridge-redis
LOG=$DIR.log

say() { echo "service-redis.sh: $*"; }

listening() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

answers() { [ "$(redis-cli -h "$HOST" -p "$PORT" ping 2>/dev/null)" = PONG ]; }

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  bash "$(dirname "$0")/apt-install.sh" redis-server
fi

started=0
if ! listening; then
  mkdir -p "$DIR"
  redis-server --bind "$HOST" --port "$PORT" --daemonize yes --dir "$DIR" --logfile "$LOG" \
    --save '' --appendonly no --protected-mode yes >/dev/null
  started=1
fi

for _ in $(seq 1 100); do
  if listening && answers; then
    if [ "$started" -eq 1 ]; then say "redis started on $HOST:$PORT"; else say "redis up on $HOST:$PORT"; fi
    exit 0
  fi
  sleep 0.1
done
say "redis did not answer on $HOST:$PORT (see $LOG)" >&2
exit 1
