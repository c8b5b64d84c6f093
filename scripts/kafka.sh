#!/usr/bin/env bash
# Runs Apache Kafka (KRaft, no Docker) from jars fetched with Maven: a single node for the
# tests and the demo, or a three-node cluster for the cluster tests (`make test-cluster`).
#   scripts/kafka.sh up     fetch the jars if missing, format storage once, start, wait until it answers (idempotent)
#   scripts/kafka.sh down   stop the broker this script started
#   scripts/kafka.sh status say whether it answers
#   scripts/kafka.sh cluster up|down|status         three nodes (each broker + controller), clients on
#                                                   127.0.0.1:29092-29094; up waits until every partition
#                                                   is led and fully in sync (idempotent)
#   scripts/kafka.sh cluster kill N                 kill -9 node N (1-3)
#   scripts/kafka.sh cluster stop N | start N       stop node N cleanly / start it again and wait for it
#   scripts/kafka.sh cluster rolling-restart        stop and start each node in turn, waiting for full sync
#   scripts/kafka.sh cluster leader TOPIC PARTITION the node leading a partition (and isr: its in-sync replicas)
#   scripts/kafka.sh cluster config TOPIC NAME      a topic's config value
#   scripts/kafka.sh cluster coordinator GROUP      the node coordinating a consumer group
#   scripts/kafka.sh cluster controller             the node that is the active controller
#   scripts/kafka.sh cluster ready                  wait until every partition is led and fully in sync
#   scripts/kafka.sh cluster cut all|N              drop every packet between the clients of the CUTTABLE
#                                                   listener (127.0.0.2:29392-29394) and every node / node N
#                                                   (iptables, root): a real network cut; replication and
#                                                   the EXTERNAL listener's clients are left alone
#   scripts/kafka.sh cluster heal [N]               end the cuts (of node N)
#   scripts/kafka.sh cluster latency MS|off         MS of delay each way on the SLOW listener's links
#                                                   (127.0.0.1:29592-29594, through toxiproxy)
# Env: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), KAFKA_DATA (build/kafka),
#      KAFKA_CLUSTER_DATA (build/kafka-cluster), KAFKA_CLUSTER_HEAP (-Xmx512m per node),
#      STREAMHOST_CACHE ($HOME/.cache/streamhost: jars live there, outside the clone), KAFKA_HEAP (-Xmx1g).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
PORT=${KAFKA_PORT:-9092}
CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
DATA=${KAFKA_DATA:-$here/build/kafka}
CACHE=${STREAMHOST_CACHE:-$HOME/.cache/streamhost}
VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")
LIBS=$CACHE/kafka-$VERSION/libs

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

fetch() {
  [ -f "$LIBS/.complete" ] && return 0
  command -v mvn >/dev/null || { echo "kafka: mvn not found (Maven is needed to fetch the broker)" >&2; exit 1; }
  echo "kafka: fetching Apache Kafka $VERSION jars with Maven into $LIBS"
  mkdir -p "$LIBS"
  (cd "$here/kafka" && mvn -q -B dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIBS")
  touch "$LIBS/.complete"
}

java_cmd() {
  java ${KAFKA_HEAP:--Xmx1g} -XX:+UseG1GC -Dkafka.logs.dir="$DATA" \
    -Dlog4j2.configurationFile="$here/kafka/log4j2.yaml" -cp "$LIBS/*" "$@"
}

# --- A broker process: its config, pid file and logs in one dir ----------------------------
broker_pid() { cat "$1/broker.pid" 2>/dev/null; }
broker_running() { local pid; pid=$(broker_pid "$1") && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

# start_in DIR HEAP: in the background, the subshell execs java, so the pid is the broker's own.
start_in() {
  local dir=$1 heap=$2
  # A fresh log, so the readiness check sees this start's banner, not an old one.
  [ -f "$dir/broker.log" ] && mv "$dir/broker.log" "$dir/broker.log.prev"
  (exec java $heap -XX:+UseG1GC -Dkafka.logs.dir="$dir" \
    -Dlog4j2.configurationFile="$here/kafka/log4j2.yaml" -cp "$LIBS/*" kafka.Kafka "$dir/server.properties") \
    > "$dir/broker.out" 2>&1 < /dev/null &
  echo $! > "$dir/broker.pid"
}

# wait_in DIR PORT NAME: until the broker answers and has logged its start, or it exits.
wait_in() {
  local dir=$1 port=$2 name=$3
  for _ in $(seq 1 120); do
    if answers "$port" && grep -q "Kafka Server started" "$dir/broker.log" 2>/dev/null; then return 0; fi
    if ! broker_running "$dir"; then
      echo "kafka: $name exited during start-up; last lines of $dir/broker.out:" >&2
      tail -20 "$dir/broker.out" >&2; exit 1
    fi
    sleep 1
  done
  echo "kafka: $name did not answer within 120 s; see $dir/broker.log" >&2; exit 1
}

# stop_in DIR NAME: SIGTERM (a clean shutdown), kill -9 after 60 s.
stop_in() {
  local dir=$1 name=$2 pid
  if broker_running "$dir"; then
    pid=$(broker_pid "$dir"); kill "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$pid" 2>/dev/null || true
    echo "kafka: $name stopped"
  else
    echo "kafka: $name (started by this script) is not running"
  fi
  rm -f "$dir/broker.pid"
}

# format_in DIR CLUSTER_ID: formats the storage of DIR's config once.
format_in() {
  [ -f "$1/log/meta.properties" ] && return 0
  java_cmd kafka.tools.StorageTool format -t "$2" -c "$1/server.properties" >/dev/null
}

# --- The single node ----------------------------------------------------------------------
up() {
  if answers "$PORT"; then echo "kafka: already answering on 127.0.0.1:$PORT"; return 0; fi
  command -v java >/dev/null || { echo "kafka: java not found (Java 17+ is needed)" >&2; exit 1; }
  fetch
  mkdir -p "$DATA"
  sed -e "s|@PORT@|$PORT|g" -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" -e "s|@DATA@|$DATA|g" \
    "$here/kafka/server.properties.in" > "$DATA/server.properties"
  [ -f "$DATA/log/meta.properties" ] || format_in "$DATA" "$(java_cmd kafka.tools.StorageTool random-uuid)"
  echo "kafka: starting broker $VERSION on 127.0.0.1:$PORT (data in $DATA, log in $DATA/broker.log)"
  start_in "$DATA" "${KAFKA_HEAP:--Xmx1g}"
  wait_in "$DATA" "$PORT" broker
  echo "kafka: up"
}

# --- The three-node cluster -----------------------------------------------------------------
CLUSTER_DATA=${KAFKA_CLUSTER_DATA:-$here/build/kafka-cluster}
CLUSTER_HEAP=${KAFKA_CLUSTER_HEAP:--Xmx512m}
NODES="1 2 3"
CLUSTER_BROKERS=127.0.0.1:29092,127.0.0.1:29093,127.0.0.1:29094
# Node N: clients on 29091+N, replication on 29291+N, the controller quorum on 29191+N; the
# host under a network fault on 127.0.0.2:29391+N (CUTTABLE) or through toxiproxy on
# 127.0.0.1:29591+N, which forwards to the node's SLOW listener on 29491+N.
node_port() { echo $((29091 + $1)); }
cuttable_port() { echo $((29391 + $1)); }
slow_port() { echo $((29491 + $1)); }
proxy_port() { echo $((29591 + $1)); }
node_dir() { echo "$CLUSTER_DATA/$1"; }
TOXIPROXY_VERSION=v2.5.0
TOXIPROXY=$CACHE/tools/toxiproxy-server-$TOXIPROXY_VERSION
TOXIPROXY_API=127.0.0.1:29690

check_node() {
  case "${1:-}" in 1|2|3) ;; *) echo "kafka cluster: node must be 1, 2 or 3 (got '${1:-}')" >&2; exit 2 ;; esac
}

# A node that answers but was not started with this data dir (another checkout's cluster on
# the same ports): a fault aimed at it through this script would silently miss.
foreign() { ! broker_running "$(node_dir "$1")" && answers "$(node_port "$1")"; }

check_ours() {
  if foreign "$1"; then
    echo "kafka cluster: port $(node_port "$1") answers, but not a node started with data in $CLUSTER_DATA" \
      "(another checkout's cluster?): 'scripts/kafka.sh cluster up' here takes the ports over" >&2
    exit 1
  fi
}

# The test cluster's ports are this script's: a cluster another checkout left running on
# them (a CI clone's) is stopped, so that this one's nodes can be started and faulted.
take_over() {
  local n pid
  for n in $NODES; do
    foreign "$n" || continue
    pid=$(ss -ltnpH "sport = :$(node_port "$n")" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -1)
    [ -n "$pid" ] || { check_ours "$n"; }
    echo "kafka cluster: killing the broker (pid $pid) another checkout left on port $(node_port "$n")"
    kill -9 "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  done
}

# The Admin API's answers (scripts/ClusterTool.java, run from source with the broker's jars).
tool() {
  mkdir -p "$CLUSTER_DATA/tool"
  CLUSTER_BROKERS=$CLUSTER_BROKERS java -Dkafka.logs.dir="$CLUSTER_DATA/tool" \
    -Dlog4j2.configurationFile="$here/kafka/log4j2.yaml" -cp "$LIBS/*" "$here/scripts/ClusterTool.java" "$@"
}

node_config() {
  local n=$1 dir voters
  dir=$(node_dir "$n")
  voters=$(for v in $NODES; do printf '%s@127.0.0.1:%s,' "$v" $((29191 + v)); done)
  mkdir -p "$dir"
  sed -e "s|@NODE@|$n|g" -e "s|@VOTERS@|${voters%,}|g" -e "s|@PORT@|$(node_port "$n")|g" \
    -e "s|@INTERNAL_PORT@|$((29291 + n))|g" -e "s|@CUTTABLE_PORT@|$(cuttable_port "$n")|g" \
    -e "s|@SLOW_PORT@|$(slow_port "$n")|g" -e "s|@PROXY_PORT@|$(proxy_port "$n")|g" \
    -e "s|@CONTROLLER_PORT@|$((29191 + n))|g" -e "s|@DATA@|$dir|g" \
    "$here/kafka/cluster.properties.in" > "$dir/server.properties"
}

# start_node N: starts node N unless it runs, and waits for it.
start_node() {
  local dir
  dir=$(node_dir "$1")
  node_config "$1"
  broker_running "$dir" || start_in "$dir" "$CLUSTER_HEAP"
  wait_in "$dir" "$(node_port "$1")" "node $1"
}

# --- Network faults between the host and the nodes ------------------------------------------
# Cuts: DROP rules in a chain of our own (hooked into OUTPUT once: loopback packets pass it
# in both directions), so `heal` removes exactly ours.
CUT_CHAIN=STREAMHOST_CUT
need_iptables() {
  command -v iptables >/dev/null || { echo "kafka cluster: iptables not found (make test-cluster installs it)" >&2; exit 1; }
  [ "$(id -u)" = 0 ] || { echo "kafka cluster: a network cut needs root (iptables)" >&2; exit 1; }
  iptables -w -N "$CUT_CHAIN" 2>/dev/null || true
  iptables -w -C OUTPUT -j "$CUT_CHAIN" 2>/dev/null || iptables -w -I OUTPUT -j "$CUT_CHAIN"
}
cut_rules() { # cut_rules -A|-D N
  local port
  port=$(cuttable_port "$2")
  iptables -w "$1" "$CUT_CHAIN" -p tcp -d 127.0.0.2 --dport "$port" -j DROP
  iptables -w "$1" "$CUT_CHAIN" -p tcp -s 127.0.0.2 --sport "$port" -j DROP
}
cut() {
  need_iptables
  local nodes=${1:-}
  [ "$nodes" = all ] && nodes=$NODES || check_node "$nodes"
  for n in $nodes; do
    iptables -w -C "$CUT_CHAIN" -p tcp -d 127.0.0.2 --dport "$(cuttable_port "$n")" -j DROP 2>/dev/null || cut_rules -A "$n"
  done
  echo "kafka cluster: cut the CUTTABLE listener of node(s) $nodes (127.0.0.2)"
}
heal() {
  need_iptables
  if [ -z "${1:-}" ]; then
    iptables -w -F "$CUT_CHAIN"
    echo "kafka cluster: every cut healed"
  else
    check_node "$1"
    while iptables -w -C "$CUT_CHAIN" -p tcp -d 127.0.0.2 --dport "$(cuttable_port "$1")" -j DROP 2>/dev/null; do
      cut_rules -D "$1"
    done
    echo "kafka cluster: node $1's cut healed"
  fi
}

# Latency: toxiproxy (a Go module, built once into the cache) forwards 127.0.0.1:29591+N to
# node N's SLOW listener; its HTTP API adds or removes a latency toxic on both directions.
toxiproxy_build() {
  [ -x "$TOXIPROXY" ] && return 0
  command -v go >/dev/null || { echo "kafka cluster: go not found (toxiproxy is built from the Go module proxy)" >&2; exit 1; }
  echo "kafka cluster: building toxiproxy $TOXIPROXY_VERSION into $CACHE/tools (once)"
  mkdir -p "$CACHE/tools/gobin"
  GOBIN="$CACHE/tools/gobin" GOFLAGS=-mod=mod go install "github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION"
  mv "$CACHE/tools/gobin/server" "$TOXIPROXY"
}
api() { curl -sf -X "$1" "http://$TOXIPROXY_API$2" ${3:+-H 'Content-Type: application/json' -d "$3"}; }
toxiproxy_up() {
  toxiproxy_build
  local dir=$CLUSTER_DATA/toxiproxy pid
  mkdir -p "$dir"
  if ! { [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; }; then
    # The port is this script's: a toxiproxy another checkout left on it goes.
    pid=$(ss -ltnpH "sport = :${TOXIPROXY_API##*:}" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -1)
    [ -z "$pid" ] || { kill -9 "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done; }
    ("$TOXIPROXY" -host "${TOXIPROXY_API%:*}" -port "${TOXIPROXY_API##*:}" > "$dir/toxiproxy.log" 2>&1 < /dev/null &
     echo $! > "$dir/pid")
    for _ in $(seq 1 50); do api GET /version >/dev/null && break; sleep 0.2; done
  fi
  for n in $NODES; do
    api GET "/proxies/node$n" >/dev/null || api POST /proxies \
      "{\"name\":\"node$n\",\"listen\":\"127.0.0.1:$(proxy_port "$n")\",\"upstream\":\"127.0.0.1:$(slow_port "$n")\",\"enabled\":true}" >/dev/null
  done
}
toxiproxy_down() {
  local pidfile=$CLUSTER_DATA/toxiproxy/pid
  if [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null; then echo "kafka cluster: toxiproxy stopped"; fi
  rm -f "$pidfile"
}
latency() {
  local ms=${1:-}
  api GET /version >/dev/null || { echo "kafka cluster: toxiproxy is not running ('cluster up' starts it)" >&2; exit 1; }
  for n in $NODES; do
    for stream in upstream downstream; do api DELETE "/proxies/node$n/toxics/latency_$stream" >/dev/null || true; done
  done
  if [ "$ms" = off ]; then echo "kafka cluster: latency off"; return 0; fi
  case "$ms" in ''|*[!0-9]*) echo "kafka cluster: latency takes milliseconds or 'off' (got '$ms')" >&2; exit 2 ;; esac
  for n in $NODES; do
    for stream in upstream downstream; do
      api POST "/proxies/node$n/toxics" \
        "{\"name\":\"latency_$stream\",\"type\":\"latency\",\"stream\":\"$stream\",\"attributes\":{\"latency\":$ms}}" >/dev/null
    done
  done
  echo "kafka cluster: ${ms} ms each way on the SLOW listener's links (127.0.0.1:29592-29594)"
}

cluster_up() {
  command -v java >/dev/null || { echo "kafka: java not found (Java 17+ is needed)" >&2; exit 1; }
  fetch
  take_over
  local id
  id=$(java_cmd kafka.tools.StorageTool random-uuid)
  for n in $NODES; do node_config "$n"; format_in "$(node_dir "$n")" "$id"; done
  echo "kafka cluster: starting nodes $NODES ($VERSION) on $CLUSTER_BROKERS (data in $CLUSTER_DATA)"
  # All at once: a node waits for a quorum of controllers before it answers.
  for n in $NODES; do broker_running "$(node_dir "$n")" || start_in "$(node_dir "$n")" "$CLUSTER_HEAP"; done
  for n in $NODES; do start_node "$n"; done
  toxiproxy_up
  tool ready 3
}

cluster() {
  local what=${1:-}
  shift || true
  case "$what" in
    up) cluster_up ;;
    down) for n in $NODES; do stop_in "$(node_dir "$n")" "node $n"; done; toxiproxy_down ;;
    status)
      for n in $NODES; do
        if answers "$(node_port "$n")"; then echo "node $n: answering on 127.0.0.1:$(node_port "$n")"; else echo "node $n: down"; fi
      done ;;
    kill)
      check_node "${1:-}"; check_ours "$1"
      if broker_running "$(node_dir "$1")"; then
        kill -9 "$(broker_pid "$(node_dir "$1")")"; rm -f "$(node_dir "$1")/broker.pid"
        echo "kafka cluster: node $1 killed (-9)"
      else
        echo "kafka cluster: node $1 is not running"
      fi ;;
    stop) check_node "${1:-}"; check_ours "$1"; stop_in "$(node_dir "$1")" "node $1" ;;
    start) check_node "${1:-}"; check_ours "$1"; fetch; start_node "$1"; echo "kafka cluster: node $1 up" ;;
    rolling-restart)
      for n in $NODES; do check_ours "$n"; done
      for n in $NODES; do stop_in "$(node_dir "$n")" "node $n"; start_node "$n"; tool ready 3; done ;;
    leader|isr|config|coordinator) tool "$what" "$@" ;;
    controller) tool controller ;;
    ready) tool ready 3 ;;
    cut) cut "$@" ;;
    heal) heal "$@" ;;
    latency) latency "$@" ;;
    *) echo "usage: $0 cluster up|down|status|kill N|stop N|start N|rolling-restart|leader T P|isr T P|config T NAME|coordinator G|controller|ready|cut all|N|heal [N]|latency MS|off" >&2
       exit 2 ;;
  esac
}

case "${1:-}" in
  up) up ;;
  down) stop_in "$DATA" broker ;;
  status) if answers "$PORT"; then echo "kafka: answering on 127.0.0.1:$PORT"; else echo "kafka: not answering"; exit 1; fi ;;
  cluster) shift; cluster "$@" ;;
  *) echo "usage: $0 up|down|status|cluster ..." >&2; exit 2 ;;
esac
