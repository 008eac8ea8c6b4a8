#!/usr/bin/env bash
# The project's test command (README): installs the Python engines the tests compare
# against (pinned, from PyPI), starts the test services on loopback (scripts/services.sh:
# a Kafka-protocol broker), then runs every Rust test, doctests included. Services this
# script started are stopped again at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
started=""
if ! bash scripts/services.sh status | grep -q running; then
    started=yes
fi
eval "$(bash scripts/services.sh up)"
if [[ -n "$started" ]]; then
    trap 'bash scripts/services.sh down' EXIT
fi
cargo test --workspace --locked "$@"
