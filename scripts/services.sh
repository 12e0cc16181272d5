#!/usr/bin/env bash
# Makes sure the services the test suite needs are installed and listening on loopback
# (CONTRACT §1: `make test` installs missing Debian packages and starts what is not
# running). Idempotent, quiet when everything is already up, and safe without stdin.
#
#   PostgreSQL 15, cluster 15/main on 127.0.0.1:5432, wal_level=logical (change data
#   capture needs it), role streambridge/streambridge (superuser: the store tests create
#   and drop a database per test), database streambridge_test.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# Apache Kafka's JVM takes the longest to start: launch it first, wait for it last.
bash "$here/service-kafka.sh" --no-wait

PG_VERSION=15
PG_CLUSTER=main
PG_HOST=127.0.0.1
PG_PORT=5432
PG_ROLE=streambridge
PG_PASSWORD=streambridge
PG_DATABASE=streambridge_test
PG_BIN=/usr/lib/postgresql/$PG_VERSION/bin
PG_CONF=/etc/postgresql/$PG_VERSION/$PG_CLUSTER

say() { echo "services.sh: $*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -n -u postgres "$@"; fi
}

# --- packages ---------------------------------------------------------------------------
missing=()
if ! command -v pg_ctlcluster >/dev/null || [ ! -x "$PG_BIN/postgres" ]; then
  missing+=(postgresql "postgresql-$PG_VERSION")
fi
if [ ! -e "/usr/lib/postgresql/$PG_VERSION/lib/wal2json.so" ]; then
  missing+=("postgresql-$PG_VERSION-wal2json")
fi
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" </dev/null
fi

# --- cluster and its settings -------------------------------------------------------------
if [ ! -f "$PG_CONF/postgresql.conf" ]; then
  say "creating cluster $PG_VERSION/$PG_CLUSTER"
  as_root pg_createcluster "$PG_VERSION" "$PG_CLUSTER" --port "$PG_PORT" >/dev/null
fi

restart=0
# Port in postgresql.conf itself: the Debian tools (pg_lsclusters, psql's default) read it
# there. It is an integer, which pg_conftool writes as is.
if ! grep -qE "^[[:space:]]*port[[:space:]]*=[[:space:]]*$PG_PORT\b" "$PG_CONF/postgresql.conf"; then
  say "setting port = $PG_PORT"
  as_root pg_conftool "$PG_VERSION" "$PG_CLUSTER" set port "$PG_PORT"
  restart=1
fi
# The rest in a drop-in under conf.d (Debian's postgresql.conf includes it last, so it
# wins); comparing one file is cheaper than pg_conftool, a perl script, per setting.
dropin="$PG_CONF/conf.d/streambridge.conf"
wanted="# written by scripts/services.sh
listen_addresses = '$PG_HOST'
wal_level = logical"
if [ "$(cat "$dropin" 2>/dev/null)" != "$wanted" ]; then
  say "writing $dropin (listen_addresses, wal_level)"
  as_root mkdir -p "$PG_CONF/conf.d"
  printf '%s\n' "$wanted" | as_root tee "$dropin" >/dev/null
  restart=1
fi

# Password auth on loopback for the test role, normal and replication connections; the
# lines go first because pg_hba.conf is first-match.
hba="$PG_CONF/pg_hba.conf"
reload=0
if ! grep -q '^# streambridge test role' "$hba"; then
  say "allowing $PG_ROLE over TCP on $PG_HOST in pg_hba.conf"
  as_root sed -i "1i # streambridge test role\\
host all $PG_ROLE $PG_HOST/32 scram-sha-256\\
host replication $PG_ROLE $PG_HOST/32 scram-sha-256" "$hba"
  reload=1
fi

# --- running ------------------------------------------------------------------------------
running() { as_root pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" status >/dev/null 2>&1; }
if running; then
  if [ "$restart" -eq 1 ]; then
    say "restarting cluster $PG_VERSION/$PG_CLUSTER for the new settings"
    as_root pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" restart
  elif [ "$reload" -eq 1 ]; then
    as_root pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" reload
  fi
else
  say "starting cluster $PG_VERSION/$PG_CLUSTER"
  as_root pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start
fi

for _ in $(seq 1 300); do
  if pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; then break; fi
  sleep 0.1
done
if ! pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; then
  say "PostgreSQL is not accepting connections on $PG_HOST:$PG_PORT; see" \
    "/var/log/postgresql/postgresql-$PG_VERSION-$PG_CLUSTER.log" >&2
  exit 1
fi

# --- role and database --------------------------------------------------------------------
# From /: the postgres user may not be allowed into the caller's working directory.
psql_admin() { (cd / && as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -tA "$@"); }
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$PG_ROLE'")" != 1 ]; then
  say "creating role $PG_ROLE"
  psql_admin -c "CREATE ROLE $PG_ROLE LOGIN SUPERUSER REPLICATION PASSWORD '$PG_PASSWORD'"
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DATABASE'")" != 1 ]; then
  say "creating database $PG_DATABASE"
  psql_admin -c "CREATE DATABASE $PG_DATABASE OWNER $PG_ROLE"
fi

say "PostgreSQL $PG_VERSION ready on $PG_HOST:$PG_PORT" \
  "(postgresql://$PG_ROLE:***@$PG_HOST:$PG_PORT/$PG_DATABASE)"

# --- the other services ---------------------------------------------------------------------
# One script per service, each idempotent: Mosquitto, RabbitMQ, Redis, nginx (installed;
# tests start their own on free ports), and last Apache Kafka, started above.
for service in mqtt amqp redis nginx kafka; do
  bash "$here/service-$service.sh"
done
