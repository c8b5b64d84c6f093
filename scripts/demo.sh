#!/usr/bin/env bash
# The live demo: topics, a trickle of orders in the background, the host in the foreground.
# Ctrl+C stops both (the host finishes its batch and commits first).
set -euo pipefail
host=$1 loadgen=$2 guest=$3
"$host" create-topics
"$loadgen" seed --rate 12 &
seeder=$!
trap 'kill $seeder 2>/dev/null || true' EXIT
http=${STREAMHOST_HTTP:-127.0.0.1:9464}
echo "demo: orders flow into brew.orders.v1; the board prints every 5 s. Ctrl+C to stop."
echo "demo: the live board is at http://$http/ (metrics at /metrics)."
echo "demo: try Ctrl+C and 'make demo' again (counts continue), or 'make clean-state restore'."
"$host" run --guest "$guest" --http "$http" || true
