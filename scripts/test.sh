#!/usr/bin/env bash
# Runs every test: host unit tests, guest unit tests (native), and the integration tests
# against the local broker (started by `make test` before this script).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export STREAMHOST_GUEST_DIR="$here/build/guests"
export STREAMHOST_HOST_BIN="$CARGO_TARGET_DIR/debug/host"
echo "== guest unit tests"
(cd guests && CARGO_TARGET_DIR="${GUEST_TARGET_DIR:-$HOME/.cache/streamhost/target-guests}" \
  cargo test --target x86_64-unknown-linux-gnu)
echo "== Python and JavaScript guest tests (natively, and the built components)"
python3 -m unittest discover -s guests/python/drink_count
node --test guests/js/drink_count/
echo "== host unit and integration tests"
cargo test --workspace -- --test-threads="${TEST_THREADS:-4}"
