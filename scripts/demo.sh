#!/usr/bin/env bash
# The live demo: topics, a trickle of orders in the background, the host in the foreground.
# Ctrl+C stops both (the host finishes its batch and commits first).
set -euo pipefail
host=$1 loadgen=$2 guest=$3
here=$(cd "$(dirname "$0")/.." && pwd)
state=${STREAMHOST_STATE_DIR:-./state}
# The demo's state belongs to the local broker's topics: if the broker was reset since (a new
# cluster id), that state would count a new topic as an old one (the host refuses it), so it
# starts afresh. The changelog of the new broker is empty: nothing else to undo.
cluster=$(sed -n 's/^cluster.id=//p' "${KAFKA_DATA:-$here/build/kafka}/log/meta.properties" 2>/dev/null || true)
if [ -n "$cluster" ] && [ -d "$state" ] && [ "$(cat "$state.cluster-id" 2>/dev/null)" != "$cluster" ]; then
  echo "demo: the local broker was reset since $state was written: starting the demo's state afresh"
  rm -rf "$state"
fi
[ -n "$cluster" ] && echo "$cluster" >"$state.cluster-id"
"$host" create-topics
"$loadgen" seed --rate 12 &
seeder=$!
trap 'kill $seeder 2>/dev/null || true' EXIT
http=${STREAMHOST_HTTP:-127.0.0.1:9464}
echo "demo: orders flow into brew.orders.v1; the board prints every 5 s. Ctrl+C to stop."
echo "demo: the live board is at http://$http/ (metrics at /metrics)."
echo "demo: try Ctrl+C and 'make demo' again (counts continue), or 'make clean-state restore'."
"$host" run --guest "$guest" --http "$http" || true
