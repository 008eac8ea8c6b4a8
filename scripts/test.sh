#!/usr/bin/env bash
# The project's test command (README): installs the Python engines the tests compare
# against (pinned, from PyPI), starts the test services on loopback (scripts/services.sh:
# a Kafka-protocol broker, PostgreSQL, an S3 server), then runs every Rust test, doctests
# included. Services this script started are stopped again at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
# Stop at the end only the services this script started, not those already running (a
# developer's, another session's). The status is read whole first: `grep -q` on a pipe
# would end it early, and pipefail would take that for "not running".
status="$(bash scripts/services.sh status)"
started="$(awk -F: '/: stopped/ {print $1}' <<<"$status" | tr '\n' ' ')"
eval "$(bash scripts/services.sh up)"
if [[ -n "${started// /}" ]]; then
    # shellcheck disable=SC2086 # a list of names
    trap "bash scripts/services.sh down $started" EXIT
fi
cargo test --workspace --locked "$@"
