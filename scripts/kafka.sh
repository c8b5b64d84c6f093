#!/usr/bin/env bash
# Runs a single-node Apache Kafka broker (KRaft, no Docker) from jars fetched with Maven.
#   scripts/kafka.sh up     fetch the jars if missing, format storage once, start, wait until it answers (idempotent)
#   scripts/kafka.sh down   stop the broker this script started
#   scripts/kafka.sh status say whether it answers
# Env: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), KAFKA_DATA (build/kafka),
#      STREAMHOST_CACHE ($HOME/.cache/streamhost: jars live there, outside the clone), KAFKA_HEAP (-Xmx1g).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
PORT=${KAFKA_PORT:-9092}
CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
DATA=${KAFKA_DATA:-$here/build/kafka}
CACHE=${STREAMHOST_CACHE:-$HOME/.cache/streamhost}
VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")
LIBS=$CACHE/kafka-$VERSION/libs
PIDFILE=$DATA/broker.pid

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

fetch() {
  [ -f "$LIBS/.complete" ] && return 0
  echo "kafka: fetching Apache Kafka $VERSION jars with Maven into $LIBS"
  mkdir -p "$LIBS"
  (cd "$here/kafka" && mvn -q -B dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIBS")
  touch "$LIBS/.complete"
}

java_cmd() {
  java ${KAFKA_HEAP:--Xmx1g} -XX:+UseG1GC -Dkafka.logs.dir="$DATA" \
    -Dlog4j2.configurationFile="$here/kafka/log4j2.yaml" -cp "$LIBS/*" "$@"
}

# In the background, the subshell execs java, so the recorded pid is the broker's own.
start_broker() {
  (exec java ${KAFKA_HEAP:--Xmx1g} -XX:+UseG1GC -Dkafka.logs.dir="$DATA" \
    -Dlog4j2.configurationFile="$here/kafka/log4j2.yaml" -cp "$LIBS/*" kafka.Kafka "$DATA/server.properties") \
    > "$DATA/broker.out" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
}

up() {
  if answers; then echo "kafka: already answering on 127.0.0.1:$PORT"; return 0; fi
  command -v java >/dev/null || { echo "kafka: java not found (Java 17+ is needed)" >&2; exit 1; }
  command -v mvn >/dev/null || { echo "kafka: mvn not found (Maven is needed to fetch the broker)" >&2; exit 1; }
  fetch
  mkdir -p "$DATA"
  sed -e "s|@PORT@|$PORT|g" -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" -e "s|@DATA@|$DATA|g" \
    "$here/kafka/server.properties.in" > "$DATA/server.properties"
  if [ ! -f "$DATA/log/meta.properties" ]; then
    java_cmd kafka.tools.StorageTool format -t "$(java_cmd kafka.tools.StorageTool random-uuid)" \
      -c "$DATA/server.properties" >/dev/null
  fi
  # A fresh log, so the readiness check below sees this start's banner, not an old one.
  [ -f "$DATA/broker.log" ] && mv "$DATA/broker.log" "$DATA/broker.log.prev"
  echo "kafka: starting broker $VERSION on 127.0.0.1:$PORT (data in $DATA, log in $DATA/broker.log)"
  start_broker
  for _ in $(seq 1 120); do
    if answers && grep -q "Kafka Server started" "$DATA/broker.log" 2>/dev/null; then
      echo "kafka: up"; return 0
    fi
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
      echo "kafka: broker exited during start-up; last lines of $DATA/broker.out:" >&2
      tail -20 "$DATA/broker.out" >&2; exit 1
    fi
    sleep 1
  done
  echo "kafka: broker did not answer within 120 s; see $DATA/broker.log" >&2; exit 1
}

down() {
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    pid=$(cat "$PIDFILE"); kill "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$pid" 2>/dev/null || true
    echo "kafka: stopped"
  else
    echo "kafka: no broker started by this script is running"
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) if answers; then echo "kafka: answering on 127.0.0.1:$PORT"; else echo "kafka: not answering"; exit 1; fi ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
