#!/usr/bin/env bash
# `make demo`: the whole pipeline on the local broker. Starts the four services, the ingest-gateway
# and the customer-api, publishes simulated customers through the gateway over HTTP, and shows a
# live view of a few customers through the customer-api. Ctrl-C stops everything; `make down`
# stops anything left (and the broker).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

rate="${DEMO_RATE:-50}"
seconds="${DEMO_SECONDS:-30}"
customers="${DEMO_CUSTOMERS:-200}"
logs=target/demo
pid_file="$logs/pids"
mkdir -p "$logs"

if [[ -s "$pid_file" ]]; then
  bash deploy/local/demo-down.sh
fi

# A process left from an earlier run would answer the readiness checks below in place of a new
# one that failed to bind.
# The service registry (crates/model/src/services.rs, written out by `omni services`): name, admin
# port, HTTP port, one service per line, in start order.
services="$(python3 -c '
import json
for s in json.load(open("deploy/services.json"))["services"]:
    print(s["name"], s["admin_port"], s["http_port"] or "")
')"
for port in $(awk '{print $2, $3}' <<<"$services"); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "something already listens on 127.0.0.1:$port; stop it (make down) and run make demo again" >&2
    exit 1
  fi
done

pids=()
stop() {
  trap - EXIT INT TERM
  if ((${#pids[@]})); then
    echo "== stopping the pipeline"
    # After Ctrl-C the processes got the terminal's SIGINT too and are stopping cleanly; a second
    # signal would make them exit at once, so give them time first.
    if [[ -n "${interrupted:-}" ]]; then
      for _ in $(seq 1 250); do kill -0 "${pids[@]}" 2>/dev/null || break; sleep 0.1; done
    fi
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  rm -f "$pid_file"
}
trap stop EXIT
trap 'interrupted=1; exit 130' INT
trap 'exit 143' TERM

start() {
  local name="$1"; shift
  "target/release/$name" "$@" >"$logs/$name.log" 2>&1 &
  pids+=("$!")
  echo "$!" >>"$pid_file"
}

wait_ready() {
  local name="$1" port="$2" deadline=$((SECONDS + 90))
  until curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then
      echo "$name is not ready after 90 s; see $logs/$name.log" >&2
      exit 1
    fi
    sleep 0.5
  done
  echo "   $name ready (admin 127.0.0.1:$port)"
}

echo "== starting $(awk '{print $1}' <<<"$services" | paste -sd' ') (logs in $logs/)"
while read -r name _ http_port; do
  # The stream processors' transactional ids: stable across demo runs, so a restart fences the last.
  if [[ -z "$http_port" ]]; then start "$name" --instance-id demo; else start "$name"; fi
done <<<"$services"
while read -r name admin_port _; do
  wait_ready "$name" "$admin_port"
done <<<"$services"

cat <<TEXT
== try it yourself while it runs:
   curl -s -XPOST localhost:8080/v1/events -H 'content-type: application/json' -d '{"event_id": "demo-1", "customer_id": "c-000001", "occurred_at": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "channel": "whatsapp", "type": "support_ticket_opened", "properties": {"ticket_id": "T-77", "topic": "delivery"}}'
   curl -s localhost:8081/v1/customers/c-000001
   curl -s 'localhost:8081/v1/customers/c-000001/reachability?purpose=marketing'
   curl -s localhost:8081/v1/customers/c-000001/loyalty
   curl -s localhost:9105/metrics | grep omnistream_gateway_events_total
== publishing $rate events/s for ${seconds}s over $customers customers through the gateway (1% malformed: rejected there)
TEXT
target/release/omni simulate --gateway http://127.0.0.1:8080 --rate "$rate" --duration "$seconds" \
  --customers "$customers" --malformed 0.01 2>"$logs/simulate.log" &
sim=$!
pids+=("$sim")
target/release/omni watch --duration "$seconds" --interval 2
wait "$sim" || { echo "the simulator failed; see $logs/simulate.log" >&2; exit 1; }
tail -n 1 "$logs/simulate.log"
# What follows only shows; a customer the simulator did not reach must not fail the demo.
set +e
echo "== one customer, as the website sees it (GET /v1/customers/c-000001):"
curl -s localhost:8081/v1/customers/c-000001 | python3 -c \
  'import json,sys; lines=json.dumps(json.load(sys.stdin), indent=2).splitlines(); print("\n".join(lines[:40])); print("   ... (%d more lines)" % max(0, len(lines) - 40))'

echo "== may we send them marketing, and where? (GET /v1/customers/c-000001/reachability)"
curl -s 'localhost:8081/v1/customers/c-000001/reachability?purpose=marketing' | python3 -c \
  'import json,sys; r=json.load(sys.stdin); print("   allowed, best first:", r.get("allowed")); [print("   ", c["channel"], c["status"], [x["code"] for x in c["reasons"]], c["until"] or "") for c in r.get("channels", []) if c["status"] != "allowed"]'
exit 0
