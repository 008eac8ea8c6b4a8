#!/usr/bin/env bash
# The project's test command (README): installs the Python engines the tests compare
# against (pinned, from PyPI), then runs every Rust test, doctests included.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
cargo test --workspace --locked "$@"
