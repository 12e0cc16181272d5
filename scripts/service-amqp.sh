#!/usr/bin/env bash
# Makes sure RabbitMQ listens on 127.0.0.1:5672 for the AMQP connector's tests
# (CONTRACT §1). Idempotent, fast when it is already up, and safe without stdin.
#
#   Debian package rabbitmq-server, bound to loopback only, started with
#   `rabbitmq-server -detached` (no systemd here); user guest/guest (loopback only).
set -euo pipefail

AMQP_HOST=127.0.0.1
AMQP_PORT=5672
ENV_CONF=/etc/rabbitmq/rabbitmq-env.conf
WAIT_SECONDS=60

say() { echo "service-amqp.sh: $*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

listening() {
  (exec 3<>"/dev/tcp/$AMQP_HOST/$AMQP_PORT") 2>/dev/null
}

if listening; then
  say "rabbitmq already listening on $AMQP_HOST:$AMQP_PORT"
  exit 0
fi

# --- package ------------------------------------------------------------------------------
if ! command -v rabbitmq-server >/dev/null || ! command -v rabbitmqctl >/dev/null; then
  say "installing rabbitmq-server"
  # With its recommended packages, as it was always installed here.
  APT_RECOMMENDS=1 bash "$(dirname "$0")/apt-install.sh" rabbitmq-server
fi

# --- loopback only --------------------------------------------------------------------------
as_root mkdir -p "$(dirname "$ENV_CONF")"
if ! grep -qs "^NODE_IP_ADDRESS=$AMQP_HOST$" "$ENV_CONF" \
  && ! grep -qs "^RABBITMQ_NODE_IP_ADDRESS=$AMQP_HOST$" "$ENV_CONF"; then
  # Inside rabbitmq-env.conf the RABBITMQ_ prefix is optional; both spellings work.
  echo "RABBITMQ_NODE_IP_ADDRESS=$AMQP_HOST" | as_root tee -a "$ENV_CONF" >/dev/null
fi
if ! grep -qs "^RABBITMQ_NODENAME=" "$ENV_CONF" && ! grep -qs "^NODENAME=" "$ENV_CONF"; then
  # A fixed node name on localhost: the container's hostname may not resolve.
  echo "RABBITMQ_NODENAME=rabbit@localhost" | as_root tee -a "$ENV_CONF" >/dev/null
fi

# Erlang's port mapper and the clustering port listen on all interfaces by default.
if ! grep -qs "ERL_EPMD_ADDRESS=" "$ENV_CONF"; then
  echo "export ERL_EPMD_ADDRESS=$AMQP_HOST" | as_root tee -a "$ENV_CONF" >/dev/null
fi
if ! grep -qs "inet_dist_use_interface" "$ENV_CONF"; then
  echo 'SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"' \
    | as_root tee -a "$ENV_CONF" >/dev/null
fi

# --- start ----------------------------------------------------------------------------------
say "starting rabbitmq-server"
# (The Debian wrapper drops to the rabbitmq user by itself.)
as_root rabbitmq-server -detached </dev/null >/dev/null 2>&1 || true

deadline=$((SECONDS + WAIT_SECONDS))
until listening; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    say "rabbitmq did not listen on $AMQP_HOST:$AMQP_PORT within ${WAIT_SECONDS}s" >&2
    exit 1
  fi
  sleep 0.5
done
say "rabbitmq listening on $AMQP_HOST:$AMQP_PORT"
