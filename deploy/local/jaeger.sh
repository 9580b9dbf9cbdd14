#!/usr/bin/env bash
# A real trace backend for dev, tests and the demo: Jaeger 1.75.0 (its v2 binary, built on the
# OpenTelemetry Collector) compiled from the Go module proxy (no Docker; the module list is pinned
# in deploy/local/jaeger/go.mod), all-in-one with in-memory storage. It takes OTLP on
# 127.0.0.1:4318 (HTTP) and 127.0.0.1:4317 (gRPC) and answers its query API on 127.0.0.1:16686.
#   jaeger.sh up|down|status|url|query-url
# `url` prints the OTEL_EXPORTER_OTLP_ENDPOINT to give omnistream's processes. Idempotent: `up`
# when running and `down` when stopped exit 0. The first `up` builds it (a few minutes).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="1.75.0"
cache="${OMNISTREAM_CACHE:-$HOME/.cache/omnistream}"
bin="$cache/jaeger-$version/jaeger"
home="${OMNISTREAM_JAEGER_HOME:-$cache/jaeger}"
ready_timeout="${OMNISTREAM_JAEGER_READY_TIMEOUT:-60}"
pid_file="$home/jaeger.pid"
log_file="$home/jaeger.log"
otlp_url="http://127.0.0.1:4318"
query_url="http://127.0.0.1:16686"

log() { echo "jaeger: $*" >&2; }

ensure_binary() {
  if [[ -x "$bin" ]]; then return; fi
  command -v go >/dev/null || { log "Go is required to build Jaeger"; exit 1; }
  log "building Jaeger $version from the Go module proxy into $bin (once, a few minutes)"
  mkdir -p "$(dirname "$bin")"
  (cd "$here/jaeger" && go build -o "$bin.partial" github.com/jaegertracing/jaeger/cmd/jaeger)
  mv "$bin.partial" "$bin"
}

running_pid() {
  [[ -f "$pid_file" ]] || return 1
  local pid; pid="$(cat "$pid_file")"
  if kill -0 "$pid" 2>/dev/null && grep -q "jaeger" "/proc/$pid/cmdline" 2>/dev/null; then
    echo "$pid"; return 0
  fi
  return 1
}

# Ready means the query API answers and the OTLP receiver takes a (empty) request.
answers() {
  curl -fsS -o /dev/null --max-time 5 "$query_url/api/services" &&
    curl -fsS -o /dev/null --max-time 5 -H 'Content-Type: application/json' -d '{}' "$otlp_url/v1/traces"
}

up() {
  if pid="$(running_pid)"; then
    log "already running (pid $pid): OTLP at $otlp_url, query at $query_url"
    return
  fi
  ensure_binary
  log "starting Jaeger $version: OTLP at $otlp_url, query at $query_url (log: $log_file)"
  # setsid: it outlives the shell that started it; 9>&-: it must not hold the lock below.
  setsid "$bin" >"$log_file" 2>&1 </dev/null 9>&- &
  local jaeger_pid=$! deadline=$((SECONDS + ready_timeout))
  echo "$jaeger_pid" >"$pid_file"
  until answers 2>/dev/null; do
    if ! kill -0 "$jaeger_pid" 2>/dev/null || ((SECONDS >= deadline)); then
      log "not ready (it exited, or ${ready_timeout}s passed); last lines of $log_file:"
      tail -40 "$log_file" >&2
      exit 1
    fi
    sleep 0.3
  done
  log "ready"
}

down() {
  local pid
  if ! pid="$(running_pid)"; then
    log "not running"
    rm -f "$pid_file"
    return
  fi
  log "stopping (pid $pid)"
  kill -TERM "$pid"
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pid_file"; log "stopped"; return; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pid_file"
}

status() {
  running_pid >/dev/null || { log "not running"; return 3; }
  if answers; then log "answering: OTLP at $otlp_url, query at $query_url"; else log "not answering"; return 1; fi
}

mkdir -p "$home"
exec 9>"$home/.lock"
flock 9

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  url) echo "$otlp_url" ;;
  query-url) echo "$query_url" ;;
  *) echo "usage: $0 up|down|status|url|query-url" >&2; exit 2 ;;
esac
