#!/usr/bin/env bash
# A real single-node Apache Kafka (KRaft, broker+controller) assembled from Maven Central jars.
#   kafka.sh up|down|status|restart|prune|reset|jars|codecs TOPIC
# BROKERS=3: a replicated cluster instead, three nodes each broker and controller (a 3-voter
# KRaft quorum: any one node, the active controller included, can die and a quorum remains),
# replication factor 3, min.insync.replicas 2, on 127.0.0.1:19091-19093 (controllers
# 19191-19193), data under ~/.cache/omnistream/cluster; its own commands:
#   BROKERS=3 kafka.sh up|down|status|reset|controller|kill-node N|stop-node N|start-node N
# (kill-node: SIGKILL; stop-node: SIGTERM, a clean stop). Point clients at it with
# KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19091,127.0.0.1:19092,127.0.0.1:19093.
# `prune` deletes the topics tests and benchmarks create (`test.*`, `cost-*`), which a long-lived
# broker otherwise keeps; `reset` stops the broker and deletes all its data.
# Idempotent: `up` when running and `down` when stopped exit 0.
# When KAFKA_BOOTSTRAP_SERVERS is set, nothing local is started: `up`/`status` only check that
# cluster answers a metadata request, `down` does nothing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
kafka_version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")"
cache="${OMNISTREAM_CACHE:-$HOME/.cache/omnistream}"
libs="$cache/kafka-$kafka_version/libs"
home="${OMNISTREAM_KAFKA_HOME:-$cache/broker}"
port="${OMNISTREAM_KAFKA_PORT:-9092}"
controller_port="${OMNISTREAM_KAFKA_CONTROLLER_PORT:-9093}"
# A broker loads every partition's log before it answers: thousands of leftover test partitions
# took 80 s on this 2-core machine. The wait ends early if the broker process exits.
ready_timeout="${OMNISTREAM_KAFKA_READY_TIMEOUT:-300}"
pid_file="$home/kafka.pid"
log_file="$home/kafka.log"
local_bootstrap="127.0.0.1:$port"

log() { echo "kafka: $*" >&2; }

ensure_jars() {
  if [[ -f "$libs/.complete" ]]; then return; fi
  command -v mvn >/dev/null || { log "Maven (mvn) is required to fetch the broker jars"; exit 1; }
  command -v java >/dev/null || { log "Java 17+ is required to run the broker"; exit 1; }
  log "resolving Apache Kafka $kafka_version jars from Maven Central into $libs (once)"
  rm -rf "$libs" && mkdir -p "$libs"
  mvn -q -B -Dstyle.color=never --no-transfer-progress -f "$here/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$libs"
  touch "$libs/.complete"
}

running_pid() {
  [[ -f "$pid_file" ]] || return 1
  local pid; pid="$(cat "$pid_file")"
  if kill -0 "$pid" 2>/dev/null && grep -q "kafka.Kafka" "/proc/$pid/cmdline" 2>/dev/null; then
    echo "$pid"; return 0
  fi
  return 1
}

# wait_ready BOOTSTRAP [BROKER_PID]
wait_ready() {
  ensure_jars
  java -cp "$libs/*" "$here/KafkaReady.java" "$1" "$ready_timeout" ${2:+"$2"}
}

# The names tests (`unique_topic`: test.<label>.<uuid>) and bench/drain-cost.sh (cost-<service>-<ns>-)
# give their topics.
test_topics='test\..*|cost-.*'

prune() {
  if [[ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
    log "KAFKA_BOOTSTRAP_SERVERS is set: not deleting topics on a cluster of yours"
    return
  fi
  running_pid >/dev/null || { log "not running: nothing to prune"; return; }
  ensure_jars
  java -cp "$libs/*" "$here/KafkaPrune.java" "$local_bootstrap" "$test_topics" | sed 's/^/kafka: /' >&2
}

write_config() {
  mkdir -p "$home/data"
  cat > "$home/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$home/data
num.partitions=6
# Topics are created explicitly (make topics, tests); a typo must not create a topic silently.
auto.create.topics.enable=false
# Single node: every internal topic has one replica.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Dev and tests: compacted topics show compaction soon; small segments keep the disk small.
log.cleaner.min.compaction.lag.ms=0
log.segment.bytes=67108864
log.retention.check.interval.ms=60000
PROPS
}

up() {
  if [[ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
    log "KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS: using that cluster, starting nothing"
    wait_ready "$KAFKA_BOOTSTRAP_SERVERS"
    return
  fi
  if pid="$(running_pid)"; then
    log "already running (pid $pid) at $local_bootstrap"
    return
  fi
  ensure_jars
  command -v java >/dev/null || { log "Java 17+ is required to run the broker"; exit 1; }
  write_config
  if [[ ! -f "$home/data/meta.properties" ]]; then
    local cluster_id
    cluster_id="$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid)"
    log "formatting KRaft storage in $home/data (cluster $cluster_id)"
    java -cp "$libs/*" -Dlog4j2.configurationFile="$here/log4j2.properties" \
      kafka.tools.StorageTool format --standalone -t "$cluster_id" \
      -c "$home/server.properties" >>"$home/format.log" 2>&1 \
      || { log "storage format failed:"; tail -20 "$home/format.log" >&2; exit 1; }
  fi
  log "starting broker at $local_bootstrap (log: $log_file)"
  # setsid: the broker outlives the shell that started it and is not hit by its Ctrl-C;
  # 9>&-: it must not inherit (and hold forever) the lock below.
  setsid java ${OMNISTREAM_KAFKA_HEAP_OPTS:--Xms512m -Xmx1g} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$here/log4j2.properties" \
    -Dkafka.logs.dir="$home" -cp "$libs/*" kafka.Kafka "$home/server.properties" \
    >"$log_file" 2>&1 </dev/null 9>&- &
  local broker_pid=$!
  echo "$broker_pid" >"$pid_file"
  if ! wait_ready "$local_bootstrap" "$broker_pid"; then
    log "broker not ready (it exited, or ${ready_timeout}s passed); last lines of $log_file:"
    tail -40 "$log_file" >&2
    exit 1
  fi
}

down() {
  if [[ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
    log "KAFKA_BOOTSTRAP_SERVERS is set: an external cluster is not ours to stop"
    return
  fi
  local pid
  if ! pid="$(running_pid)"; then
    log "not running"
    rm -f "$pid_file"
    return
  fi
  log "stopping broker (pid $pid)"
  kill -TERM "$pid"
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pid_file"; log "stopped"; return; }
    sleep 0.1
  done
  log "broker did not stop within 30s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pid_file"
}

status() {
  if [[ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
    ready_timeout=5 wait_ready "$KAFKA_BOOTSTRAP_SERVERS"
    return
  fi
  local pid
  if pid="$(running_pid)"; then
    log "running (pid $pid) at $local_bootstrap, data in $home/data"
    ready_timeout=5 wait_ready "$local_bootstrap"
  else
    log "not running"
    return 3
  fi
}

# ---- the replicated cluster (BROKERS=3) -----------------------------------------------------

cluster_home="${OMNISTREAM_KAFKA_CLUSTER_HOME:-$cache/cluster}"
cluster_nodes=3
node_port() { echo $((19090 + $1)); }
node_controller_port() { echo $((19190 + $1)); }
cluster_bootstrap() {
  local node list=()
  for node in $(seq 1 "$cluster_nodes"); do list+=("127.0.0.1:$(node_port "$node")"); done
  (IFS=,; echo "${list[*]}")
}
cluster_voters() {
  local node list=()
  for node in $(seq 1 "$cluster_nodes"); do list+=("$node@127.0.0.1:$(node_controller_port "$node")"); done
  (IFS=,; echo "${list[*]}")
}

node_pid() {
  local pid_file="$cluster_home/node-$1/kafka.pid"
  [[ -f "$pid_file" ]] || return 1
  local pid; pid="$(cat "$pid_file")"
  if kill -0 "$pid" 2>/dev/null && grep -q "kafka.Kafka" "/proc/$pid/cmdline" 2>/dev/null; then
    echo "$pid"; return 0
  fi
  return 1
}

write_node_config() {
  local node=$1 dir="$cluster_home/node-$1"
  mkdir -p "$dir/data"
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=$node
controller.quorum.voters=$(cluster_voters)
# FAULTY: what make chaos runs the services on. It advertises the port of the chaos harness's
# TCP proxy (19391-19393, which forwards to 19291-19293 and delays, blackholes or cuts on
# command), so that every connection of a client bootstrapped there goes through the proxy.
listeners=PLAINTEXT://127.0.0.1:$(node_port "$node"),CONTROLLER://127.0.0.1:$(node_controller_port "$node"),FAULTY://127.0.0.1:$((19290 + node))
advertised.listeners=PLAINTEXT://127.0.0.1:$(node_port "$node"),CONTROLLER://127.0.0.1:$(node_controller_port "$node"),FAULTY://127.0.0.1:$((19390 + node))
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,FAULTY:PLAINTEXT
log.dirs=$dir/data
num.partitions=6
auto.create.topics.enable=false
# Every topic on all three nodes; a write is acknowledged (acks=all) once two hold it, so one
# node can die without losing an acknowledged write or stopping writes.
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
# A replica that has not read a leader's log since the last election must not become leader.
unclean.leader.election.enable=false
group.initial.rebalance.delay.ms=0
log.cleaner.min.compaction.lag.ms=0
log.segment.bytes=67108864
log.retention.check.interval.ms=60000
PROPS
}

start_node() {
  local node=$1 dir="$cluster_home/node-$1"
  if pid="$(node_pid "$node")"; then
    log "node $node already running (pid $pid)"
    return
  fi
  write_node_config "$node"
  log "starting node $node at 127.0.0.1:$(node_port "$node") (log: $dir/kafka.log)"
  # Appended, not truncated: a node restarted after a fault keeps what it logged before it.
  echo "=== node $node starting at $(date -u +%FT%TZ)" >>"$dir/kafka.log"
  setsid java ${OMNISTREAM_KAFKA_HEAP_OPTS:--Xms256m -Xmx768m} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$here/log4j2.properties" \
    -Dkafka.logs.dir="$dir" -cp "$libs/*" kafka.Kafka "$dir/server.properties" \
    >>"$dir/kafka.log" 2>&1 </dev/null 9>&- &
  echo "$!" >"$dir/kafka.pid"
}

# stop_node N SIGNAL
stop_node() {
  local node=$1 signal=$2 pid
  if ! pid="$(node_pid "$node")"; then
    log "node $node not running"
    return
  fi
  log "node $node: $signal (pid $pid)"
  kill "-$signal" "$pid"
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$cluster_home/node-$node/kafka.pid"; return; }
    sleep 0.1
  done
  log "node $node did not stop within 30s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$cluster_home/node-$node/kafka.pid"
}

cluster_up() {
  ensure_jars
  command -v java >/dev/null || { log "Java 17+ is required to run the brokers"; exit 1; }
  local node
  if [[ ! -f "$cluster_home/node-1/data/meta.properties" ]]; then
    local cluster_id
    cluster_id="$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid)"
    log "formatting KRaft storage of $cluster_nodes nodes in $cluster_home (cluster $cluster_id)"
    for node in $(seq 1 "$cluster_nodes"); do
      write_node_config "$node"
      java -cp "$libs/*" -Dlog4j2.configurationFile="$here/log4j2.properties" \
        kafka.tools.StorageTool format -t "$cluster_id" -c "$cluster_home/node-$node/server.properties" \
        >>"$cluster_home/format.log" 2>&1 \
        || { log "storage format of node $node failed:"; tail -20 "$cluster_home/format.log" >&2; exit 1; }
    done
  fi
  for node in $(seq 1 "$cluster_nodes"); do start_node "$node"; done
  if ! OMNISTREAM_KAFKA_MIN_BROKERS="$cluster_nodes" wait_ready "$(cluster_bootstrap)"; then
    log "cluster not ready within ${ready_timeout}s; last lines of each node's log:"
    for node in $(seq 1 "$cluster_nodes"); do tail -15 "$cluster_home/node-$node/kafka.log" >&2; done
    exit 1
  fi
  log "use it with KAFKA_BOOTSTRAP_SERVERS=$(cluster_bootstrap)"
}

cluster_status() {
  local node pid up=0
  for node in $(seq 1 "$cluster_nodes"); do
    if pid="$(node_pid "$node")"; then
      log "node $node running (pid $pid) at 127.0.0.1:$(node_port "$node")"
      up=$((up + 1))
    else
      log "node $node not running"
    fi
  done
  ((up > 0)) || return 3
  ready_timeout=5 wait_ready "$(cluster_bootstrap)"
}

cluster_command() {
  local node
  case "${1:-}" in
    up) cluster_up ;;
    # All at once: stopped one by one, the last nodes lose their quorum and wait for it.
    down)
      for node in $(seq 1 "$cluster_nodes"); do stop_node "$node" TERM & done
      wait
      ;;
    status) cluster_status ;;
    # The active controller's node id, as the running nodes' quorum state files record it (the
    # highest leader epoch wins: a node that was down may still name an old leader).
    controller)
      cat "$cluster_home"/node-*/data/__cluster_metadata-0/quorum-state 2>/dev/null \
        | grep -o '"leaderId":[0-9-]*,"leaderEpoch":[0-9]*' | sort -t: -k3 -n | tail -1 | sed 's/"leaderId":\([0-9-]*\),.*/\1/'
      ;;
    reset)
      for node in $(seq 1 "$cluster_nodes"); do stop_node "$node" TERM & done
      wait
      log "deleting $cluster_home"
      rm -rf "$cluster_home"
      ;;
    kill-node|stop-node|start-node)
      [[ "${2:-}" =~ ^[1-3]$ ]] || { echo "usage: BROKERS=3 $0 $1 1|2|3" >&2; exit 2; }
      case "$1" in
        kill-node) stop_node "$2" KILL ;;
        stop-node) stop_node "$2" TERM ;;
        start-node) ensure_jars; start_node "$2" ;;
      esac
      ;;
    *) echo "usage: BROKERS=3 $0 up|down|status|reset|controller|kill-node N|stop-node N|start-node N" >&2; exit 2 ;;
  esac
}

if [[ "${BROKERS:-1}" != 1 ]]; then
  [[ "$BROKERS" == 3 ]] || { log "BROKERS is 1 (one broker) or 3 (a replicated cluster), not $BROKERS"; exit 2; }
  mkdir -p "$cluster_home"
  exec 9>"$cluster_home/.lock"
  flock 9
  cluster_command "$@"
  exit 0
fi

# codecs TOPIC: how many data batches (transaction markers aside) of each codec the local broker's
# log of TOPIC holds, as Kafka's own DumpLogSegments reads them: what its producers compressed with.
codecs() {
  local topic="${1:?usage: kafka.sh codecs TOPIC}" dir files=()
  for dir in "$home/data/$topic"-*; do
    [[ "${dir##*-}" =~ ^[0-9]+$ && "${dir%-*}" == "$home/data/$topic" ]] || continue
    files+=("$dir"/*.log)
  done
  (( ${#files[@]} )) || { log "no log of topic $topic under $home/data"; exit 1; }
  ensure_jars
  local IFS=,
  java -cp "$libs/*" kafka.tools.DumpLogSegments --files "${files[*]}" \
    | sed -n 's/.*isControl: false .*compresscodec: \([a-z0-9]*\).*/\1/p' | sort | uniq -c
}

if [[ "${1:-}" == codecs ]]; then codecs "${2:-}"; exit 0; fi

# One caller at a time: tests in parallel processes may all ask for `up`.
mkdir -p "$home"
exec 9>"$home/.lock"
flock 9

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  restart) down; up ;;
  prune) prune ;;
  reset)
    [[ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]] || { log "KAFKA_BOOTSTRAP_SERVERS is set: not resetting a cluster of yours"; exit 2; }
    down
    log "deleting $home/data"
    rm -rf "$home/data" "$log_file" "$home/format.log"
    ;;
  jars) ensure_jars; echo "$libs" ;;
  *) echo "usage: $0 up|down|status|restart|prune|reset|jars|codecs TOPIC" >&2; exit 2 ;;
esac
