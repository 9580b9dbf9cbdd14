#!/usr/bin/env bash
# A real schema registry for dev, tests and the demo: Apicurio Registry from Maven Central (no
# Docker), its Confluent-compatible API at http://127.0.0.1:PORT/apis/ccompat/v7 (PORT 8089).
#   registry.sh up|down|status|url|reset
# Idempotent: `up` when running and `down` when stopped exit 0. When SCHEMA_REGISTRY_URL is set,
# nothing local is started: `up`/`status` only check that registry answers.
# Its schemas are kept in an H2 file under the cache (the records on the local broker name their
# ids, so they must outlive a restart); `reset` stops it and deletes them.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="3.0.9"
cache="${OMNISTREAM_CACHE:-$HOME/.cache/omnistream}"
app="$cache/apicurio-registry-$version"
home="${OMNISTREAM_REGISTRY_HOME:-$cache/registry}"
port="${OMNISTREAM_REGISTRY_PORT:-8089}"
ready_timeout="${OMNISTREAM_REGISTRY_READY_TIMEOUT:-120}"
pid_file="$home/registry.pid"
log_file="$home/registry.log"
local_url="http://127.0.0.1:$port/apis/ccompat/v7"

log() { echo "registry: $*" >&2; }

ensure_app() {
  if [[ -f "$app/.complete" ]]; then return; fi
  command -v mvn >/dev/null || { log "Maven (mvn) is required to fetch the registry"; exit 1; }
  log "fetching Apicurio Registry $version from Maven Central into $app (once, about 110 MB)"
  rm -rf "$app" && mkdir -p "$app"
  mvn -q -B -Dstyle.color=never --no-transfer-progress -f "$here/pom.xml" dependency:copy \
    -Dartifact="io.apicurio:apicurio-registry-app:$version:tar.gz:all" -DoutputDirectory="$app"
  tar -xzf "$app/apicurio-registry-app-$version-all.tar.gz" -C "$app"
  rm "$app/apicurio-registry-app-$version-all.tar.gz"
  touch "$app/.complete"
}

running_pid() {
  [[ -f "$pid_file" ]] || return 1
  local pid; pid="$(cat "$pid_file")"
  if kill -0 "$pid" 2>/dev/null && grep -q "apicurio-registry-app" "/proc/$pid/cmdline" 2>/dev/null; then
    echo "$pid"; return 0
  fi
  return 1
}

# Ready means a real request of the Confluent API answers 200.
answers() { curl -fsS -o /dev/null --max-time 5 "$1/subjects"; }

# wait_ready URL [PID]
wait_ready() {
  local deadline=$((SECONDS + ready_timeout))
  until answers "$1" 2>/dev/null; do
    if [[ -n "${2:-}" ]] && ! kill -0 "$2" 2>/dev/null; then return 1; fi
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

up() {
  if [[ -n "${SCHEMA_REGISTRY_URL:-}" ]]; then
    log "SCHEMA_REGISTRY_URL=$SCHEMA_REGISTRY_URL: using that registry, starting nothing"
    ready_timeout=10 wait_ready "$SCHEMA_REGISTRY_URL" || { log "it does not answer"; exit 1; }
    return
  fi
  if pid="$(running_pid)"; then
    log "already running (pid $pid) at $local_url"
    return
  fi
  command -v java >/dev/null || { log "Java 17+ is required to run the registry"; exit 1; }
  ensure_app
  mkdir -p "$home/data"
  log "starting Apicurio Registry $version at $local_url (log: $log_file)"
  # setsid: it outlives the shell that started it; 9>&-: it must not hold the lock below.
  setsid java ${OMNISTREAM_REGISTRY_HEAP_OPTS:--Xms128m -Xmx512m} \
    -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$port" \
    -Dapicurio.datasource.url="jdbc:h2:file:$home/data/registry" \
    -jar "$app/apicurio-registry-app-$version-runner.jar" >"$log_file" 2>&1 </dev/null 9>&- &
  local registry_pid=$!
  echo "$registry_pid" >"$pid_file"
  if ! wait_ready "$local_url" "$registry_pid"; then
    log "registry not ready (it exited, or ${ready_timeout}s passed); last lines of $log_file:"
    tail -40 "$log_file" >&2
    exit 1
  fi
  log "ready"
}

down() {
  if [[ -n "${SCHEMA_REGISTRY_URL:-}" ]]; then
    log "SCHEMA_REGISTRY_URL is set: an external registry is not ours to stop"
    return
  fi
  local pid
  if ! pid="$(running_pid)"; then
    log "not running"
    rm -f "$pid_file"
    return
  fi
  log "stopping registry (pid $pid)"
  kill -TERM "$pid"
  for _ in $(seq 1 200); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pid_file"; log "stopped"; return; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pid_file"
}

status() {
  local url="${SCHEMA_REGISTRY_URL:-$local_url}" pid
  if [[ -z "${SCHEMA_REGISTRY_URL:-}" ]] && ! pid="$(running_pid)"; then
    log "not running"
    return 3
  fi
  if answers "$url"; then log "answering at $url"; else log "not answering at $url"; return 1; fi
}

mkdir -p "$home"
exec 9>"$home/.lock"
flock 9

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  url) echo "${SCHEMA_REGISTRY_URL:-$local_url}" ;;
  reset)
    [[ -z "${SCHEMA_REGISTRY_URL:-}" ]] || { log "SCHEMA_REGISTRY_URL is set: not resetting a registry of yours"; exit 2; }
    down
    log "deleting $home/data"
    rm -rf "$home/data" "$log_file"
    ;;
  *) echo "usage: $0 up|down|status|url|reset" >&2; exit 2 ;;
esac
