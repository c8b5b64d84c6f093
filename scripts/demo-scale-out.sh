#!/usr/bin/env bash
# The scale-out demo: three hosts share one job in one consumer group (each keeps the shards
# of the partitions it is given); orders trickle in; every 5 s the global board is merged from
# the shards' boards with `host board`. Ctrl+C stops it all (each host commits first).
# Try `kill -9` on one host's pid (printed below): its partitions move to the others.
set -euo pipefail
host=$1 loadgen=$2 guest=$3
dir=${STREAMHOST_SCALE_OUT_DIR:-./state-scale-out}
topics=(--input brew.orders.scale-out --changelog brew.drink-count-scale-out-changelog
        --output brew.drink-counts-scale-out --scale-out)
# As in demo.sh: state written against another (reset) broker starts afresh.
cluster=$(sed -n 's/^cluster.id=//p' "${KAFKA_DATA:-$(dirname "$0")/../build/kafka}/log/meta.properties" 2>/dev/null || true)
if [ -n "$cluster" ] && [ -d "$dir" ] && [ "$(cat "$dir/cluster-id" 2>/dev/null)" != "$cluster" ]; then
  echo "demo: the local broker was reset since $dir was written: starting afresh"
  rm -rf "$dir"
fi
mkdir -p "$dir"
[ -n "$cluster" ] && echo "$cluster" >"$dir/cluster-id"
"$host" create-topics --partitions 6 "${topics[@]}"
pids=()
stop() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop EXIT
"$loadgen" --topic brew.orders.scale-out seed --rate 50 &
pids+=($!)
for h in 1 2 3; do
  "$host" run --guest "$guest" "${topics[@]}" --group drink-count-scale-out --state-dir "$dir/host-$h" \
    --flush-interval 2s >"$dir/host-$h.out" 2>"$dir/host-$h.log" &
  pids+=($!)
  echo "demo: host $h is pid $! (log: $dir/host-$h.log)"
done
echo "demo: three hosts share brew.orders.scale-out (6 partitions); the global board follows every 5 s. Ctrl+C to stop."
while sleep 5; do
  "$host" board --guest "$guest" --output brew.drink-counts-scale-out 2>/dev/null || echo "demo: (no board yet)"
  for h in 1 2 3; do
    shards=$(grep -o 'shard open shard=[0-9]*' "$dir/host-$h.log" 2>/dev/null | wc -l || true)
    echo "   host $h: $( (kill -0 "${pids[$h]}" 2>/dev/null && echo running) || echo stopped), shards opened so far: $shards"
  done
done
