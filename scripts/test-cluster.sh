#!/usr/bin/env bash
# The cluster tests (`make test-cluster`): broker and network faults against a real three-broker KRaft
# cluster (scripts/kafka.sh cluster, started by `make test-cluster` before this script), one
# test at a time, since a fault hits every job on the cluster.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export STREAMHOST_GUEST_DIR="$here/build/guests"
export STREAMHOST_HOST_BIN="$CARGO_TARGET_DIR/debug/host"
echo "== cluster tests (three brokers on 127.0.0.1:29092-29094)"
cargo test -p integration-tests --features cluster --test cluster -- --test-threads=1 "$@"
