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
# The CLI runs inside the tests write to PMI_DATABASE_URL: give this run a database of its
# own, so that nothing an earlier run (or an edited migration) left behind is seen, and
# drop it at the end.
server_url="$PMI_DATABASE_URL"
test_db="pmi_test_$$"
psql_admin() { "${PMI_PG_BIN:-/usr/lib/postgresql/15/bin}/psql" -q -X -v ON_ERROR_STOP=1 "${server_url%/*}/postgres" -c "$1" >/dev/null; }
psql_admin "DROP DATABASE IF EXISTS $test_db WITH (FORCE)"
psql_admin "CREATE DATABASE $test_db"
export PMI_DATABASE_URL="${server_url%/*}/$test_db"
cleanup() {
    psql_admin "DROP DATABASE IF EXISTS $test_db WITH (FORCE)" || true
    if [[ -n "${started// /}" ]]; then
        # shellcheck disable=SC2086 # a list of names
        bash scripts/services.sh down $started
    fi
}
trap cleanup EXIT
cargo test --workspace --locked "$@"
