#!/usr/bin/env bash
# Makes sure an MQTT broker (Mosquitto) listens on 127.0.0.1:1883 for the MQTT tests, with
# the mosquitto_pub/mosquitto_sub clients the end-to-end test uses. Idempotent, fast and
# quiet when up. Persistence is on, so QoS 1 sessions survive a broker restart.
set -euo pipefail

HOST=127.0.0.1
PORT=1883
CONF=/tmp/streambridge-mosquitto.conf
DATA=/tmp/streambridge-mosquitto/
LOG=/tmp/streambridge-mosquitto.log

say() { echo "service-mqtt.sh: $*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

listening() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

# A real MQTT round trip ($SYS answers without any publisher), not just an open port.
answers() {
  mosquitto_sub -h "$HOST" -p "$PORT" -t '$SYS/broker/version' -C 1 -W 2 >/dev/null 2>&1
}

# The end-to-end tests run mosquitto_pub and mosquitto_sub and fail without them.
if ! command -v mosquitto >/dev/null || ! command -v mosquitto_sub >/dev/null \
  || ! command -v mosquitto_pub >/dev/null; then
  say "installing mosquitto"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    mosquitto mosquitto-clients </dev/null >/dev/null
fi

started=0
if ! listening; then
  mkdir -p "$DATA"
  cat >"$CONF" <<CONF
listener $PORT $HOST
allow_anonymous true
persistence true
persistence_location $DATA
log_dest file $LOG
CONF
  # Debian's mosquitto drops privileges to the "mosquitto" user when started as root.
  if id mosquitto >/dev/null 2>&1; then
    chown -R mosquitto "$DATA" 2>/dev/null || true
    touch "$LOG" && chown mosquitto "$LOG" 2>/dev/null || true
  fi
  mosquitto -c "$CONF" -d
  started=1
fi

for _ in $(seq 1 100); do
  if listening && answers; then
    if [ "$started" -eq 1 ]; then say "mosquitto started on $HOST:$PORT"; else say "mosquitto up on $HOST:$PORT"; fi
    exit 0
  fi
  sleep 0.1
done
say "mosquitto did not answer on $HOST:$PORT (see $LOG)" >&2
exit 1
