#!/usr/bin/env bash
# Makes sure Apache Kafka listens on 127.0.0.1:9092 for the Kafka tests. Idempotent, fast
# and quiet when up; safe without stdin.
#
#   The broker is org.apache.kafka:kafka_2.13 (pinned below, the same release as
#   docker-compose.yml's apache/kafka image) and its runtime dependencies, fetched once
#   with `mvn dependency:copy-dependencies` into $CACHE (outside the source tree). It runs
#   as one KRaft node (broker and controller) whose store is formatted under $DATA, tuned for
#   tests: small heap, no initial rebalance delay, replication factor 1 for the internal
#   topics, auto topic creation on.
#
# `--no-wait` starts the broker and returns at once (`make services` starts the JVM first
# and the other services meanwhile); a later plain call waits until it answers.
# Needs java (17+) and mvn; the Debian packages openjdk-17-jre-headless and maven are
# installed when missing.
set -euo pipefail

KAFKA_VERSION=4.1.1
SCALA_VERSION=2.13
LOG4J_VERSION=2.24.3   # the log4j the pinned release is built with (its slf4j binding)
HOST=127.0.0.1
PORT=${KAFKA_PORT:-9092}
CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
CACHE=${STREAMBRIDGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/streambridge}/kafka-$KAFKA_VERSION
DATA=${KAFKA_DATA:-/tmp/streambridge-kafka}
LOG=$DATA.log
WAIT_SECONDS=120

say() { echo "service-kafka.sh: $*"; }

listening() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

# An ApiVersions request answered by Apache Kafka, not just an open port: the 4-byte size,
# then the correlation id 1 echoed back. (Kafka 4 drops requests older than v0 here.)
answers() {
  local reply
  reply=$(
    exec 3<>"/dev/tcp/$HOST/$PORT" || exit 1
    # size 16: api_key 18, api_version 0, correlation_id 1, client_id "sbtest" (length 6)
    printf '\x00\x00\x00\x10\x00\x12\x00\x00\x00\x00\x00\x01\x00\x06sbtest' >&3
    timeout 3 head -c 8 <&3 | od -An -tx1 | tr -d ' \n'
  ) 2>/dev/null || return 1
  [ "${reply:8:8}" = "00000001" ]
}

wait_up() {
  local deadline=$((SECONDS + WAIT_SECONDS))
  until listening && answers; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "Kafka did not answer on $HOST:$PORT within ${WAIT_SECONDS}s; see $LOG" >&2
      exit 1
    fi
    sleep 0.2
  done
}

# --- java and maven (to fetch and run the broker), kcat (the Kafka e2e's producer) -------
missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v kcat >/dev/null || missing+=(kcat)
if [ ${#missing[@]} -gt 0 ]; then
  bash "$(dirname "$0")/apt-install.sh" "${missing[@]}"
fi

no_wait=0
[ "${1:-}" = "--no-wait" ] && no_wait=1

# A broker of ours still booting (`make kafka-early` started it) is waited for, never
# started twice: a second JVM on the same ports and store stops at once, and may take the
# first one's controller port with it.
booting() {
  local pid
  pid=$(cat "$DATA/kafka.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q kafka.Kafka "/proc/$pid/cmdline" 2>/dev/null
}

if listening || booting; then
  [ "$no_wait" -eq 1 ] && exit 0
  wait_up
  say "Kafka up on $HOST:$PORT"
  exit 0
fi

# --- the broker's jars ------------------------------------------------------------------
if [ ! -f "$CACHE/.complete" ]; then
  say "fetching org.apache.kafka:kafka_$SCALA_VERSION:$KAFKA_VERSION into $CACHE (once)"
  mkdir -p "$CACHE"
  cat >"$CACHE/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>streambridge.test</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>$KAFKA_VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_$SCALA_VERSION</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
POM
  rm -rf "$CACHE/libs"
  (cd "$CACHE" && mvn -q -B -Dstyle.color=never dependency:copy-dependencies \
    -DoutputDirectory="$CACHE/libs" -DincludeScope=runtime </dev/null >"$CACHE/mvn.log" 2>&1) \
    || { cat "$CACHE/mvn.log" >&2; say "mvn could not fetch Kafka (log above)" >&2; exit 1; }
  touch "$CACHE/.complete"
fi

# --- configuration and store -----------------------------------------------------------------
mkdir -p "$DATA"
cat >"$DATA/server.properties" <<CONF
# written by scripts/service-kafka.sh
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$DATA/logs
num.partitions=1
auto.create.topics.enable=true
group.initial.rebalance.delay.ms=0
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
log.flush.interval.ms=60000
CONF
cat >"$DATA/log4j2.yaml" <<CONF
Configuration:
  Appenders:
    File:
      name: file
      fileName: $LOG
      PatternLayout: {pattern: "[%d] %p %m (%c)%n"}
  Loggers:
    Root: {level: WARN, AppenderRef: [{ref: file}]}
    Logger:
      - {name: kafka.server.KafkaRaftServer, level: INFO}
CONF

CP="$CACHE/libs/*"
# Client-side JIT only and a serial collector: the JVM starts in seconds on a loaded
# 2-core machine, and the tests' traffic is small.
JAVA_OPTS=(-Xms128m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto
  -Djava.awt.headless=true -Dlog4j2.configurationFile="$DATA/log4j2.yaml")

# A cold start opens every partition in the store, one by one: the suite makes about 150
# uniquely named topics a run, and after some 35 runs (5,100 partitions) the broker took
# 130 s to answer, past WAIT_SECONDS. A store holding more than MAX_PARTITIONS is test
# data from earlier runs (no test reads a topic an earlier run wrote), so it is formatted
# afresh; a broker a test restarts keeps its few partitions, and its offsets.
MAX_PARTITIONS=${KAFKA_MAX_PARTITIONS:-400}
if [ -d "$DATA/logs" ]; then
  partitions=$(find "$DATA/logs" -mindepth 1 -maxdepth 1 -type d | wc -l)
  if [ "$partitions" -gt "$MAX_PARTITIONS" ]; then
    say "the store holds $partitions partitions from earlier runs (over $MAX_PARTITIONS);" \
      "formatting it afresh"
    rm -rf "$DATA/logs"
  fi
fi

if [ ! -f "$DATA/logs/meta.properties" ]; then
  # A KRaft cluster id is 16 random bytes, base64url without padding; one beginning with
  # "-" is drawn again, as Kafka's own Uuid.randomUuid does: the storage tool's parser
  # took it for an option (1 start in 64 failed, "--cluster-id: expected one argument").
  cluster_id=-
  while [ "${cluster_id:0:1}" = "-" ]; do
    cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
  done
  java "${JAVA_OPTS[@]}" -cp "$CP" kafka.tools.StorageTool format \
    -t "$cluster_id" -c "$DATA/server.properties" >/dev/null
fi

start_broker() {
  setsid nohup java "${JAVA_OPTS[@]}" -cp "$CP" kafka.Kafka "$DATA/server.properties" \
    >>"$LOG" 2>&1 </dev/null &
  echo $! >"$DATA/kafka.pid"
}

# Waits as wait_up does, and starts the broker again (twice at most) when its JVM has
# exited: once a broker still shutting down held the controller port, and the new one
# stopped at once ("Address already in use").
wait_started() {
  local deadline=$((SECONDS + WAIT_SECONDS)) restarts=0
  until listening && answers; do
    if ! kill -0 "$(cat "$DATA/kafka.pid" 2>/dev/null || echo 0)" 2>/dev/null; then
      if [ "$restarts" -ge 2 ]; then
        say "Kafka exited at start $((restarts + 1)) times; see $LOG" >&2
        exit 1
      fi
      restarts=$((restarts + 1))
      say "Kafka exited at start (see $LOG); starting it again in 2s"
      sleep 2
      start_broker
      deadline=$((SECONDS + WAIT_SECONDS))
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "Kafka did not answer on $HOST:$PORT within ${WAIT_SECONDS}s; see $LOG" >&2
      exit 1
    fi
    sleep 0.2
  done
}

start_broker
say "starting Apache Kafka $KAFKA_VERSION on $HOST:$PORT (store $DATA, log $LOG)"
[ "$no_wait" -eq 1 ] && exit 0
wait_started
say "Kafka up on $HOST:$PORT"
