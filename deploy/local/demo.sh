#!/usr/bin/env bash
# `make demo`: the whole pipeline on the local broker. Starts identity-resolver's two stages, the
# five services (reading the resolved events, the four older ones with their handoff topics), the
# ingest-gateway and the customer-api, publishes simulated customers through the gateway over
# HTTP, shows a live view of a few customers through the customer-api, then one person across a
# cookie, a login and a store card, and a customer entering the Black Friday journey (published
# with `omni journeys publish`; its sends go through `omni journeys dispatch` to a local webhook
# sink that prints them). DEMO_RESOLUTION=0 runs without resolution (the services read the
# producers' events). DEMO_REGISTRY=1 starts the local schema registry and has every process write
# the Confluent wire format through it; a stock Python consumer then reads a profile.
# Ctrl-C stops everything; `make down` stops anything left (and the broker).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

rate="${DEMO_RATE:-50}"
seconds="${DEMO_SECONDS:-30}"
customers="${DEMO_CUSTOMERS:-200}"
resolution="${DEMO_RESOLUTION:-1}"
registry="${DEMO_REGISTRY:-0}"
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
# With resolution the identity stages come first (they are listed under identity_stages, each a
# subcommand of identity-resolver), and each stream processor also gets its handoff topic.
services="$(RESOLUTION="$resolution" python3 -c '
import json, os
registry = json.load(open("deploy/services.json"))
stages = registry["identity_stages"] if os.environ["RESOLUTION"] == "1" else []
for s in stages + registry["services"]:
    print(s["name"], s["admin_port"], s["http_port"] or "-", s.get("handoff") or "-")
')"
for port in $(awk '{print $2; if ($3 != "-") print $3}' <<<"$services"); do
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
  local binary="$name"
  # identity-claims, identity-customers: `identity-resolver claims|customers`.
  if [[ "$name" == identity-* ]]; then
    binary=identity-resolver
    set -- "${name#identity-}" "$@"
  fi
  "target/release/$binary" "$@" >"$logs/$name.log" 2>&1 &
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

if [[ "$registry" == 1 ]]; then
  bash deploy/local/registry.sh up
  # Every process below reads these: writers register their schemas and write the Confluent wire
  # format, readers learn the schema ids they meet.
  SCHEMA_REGISTRY_URL="$(bash deploy/local/registry.sh url)"
  export SCHEMA_REGISTRY_URL WIRE_FORMAT=confluent
  echo "== Confluent wire format through the schema registry at $SCHEMA_REGISTRY_URL"
fi
echo "== starting $(awk '{print $1}' <<<"$services" | paste -sd' ') (logs in $logs/)"
while read -r name _ http_port handoff; do
  # The stream processors' transactional ids: stable across demo runs, so a restart fences the last.
  if [[ "$http_port" != - ]]; then
    start "$name"
  elif [[ "$resolution" == 1 && "$name" != identity-* ]]; then
    # Reading the resolved events is a new input, so a consumer group of its own (docs/identity.md).
    handoff_args=()
    [[ "$handoff" != - ]] && handoff_args=(--handoff-topic "$handoff")
    start "$name" --instance-id demo --input-topic touchpoint.resolved.v1 "${handoff_args[@]}" \
      --group-id "$name-resolved"
  else
    start "$name" --instance-id demo
  fi
done <<<"$services"
while read -r name admin_port _; do
  wait_ready "$name" "$admin_port"
done <<<"$services"

# Journeys: the Black Friday flow, and its sender side: every decision to send goes through a
# local webhook sink (it prints what a provider would send), and comes back as message_sent.
echo "== publishing journeys/black-friday.toml and price-drop.toml; dispatching their decisions to a webhook sink (log: $logs/webhook-sink.log)"
target/release/omni journeys publish journeys/black-friday.toml journeys/price-drop.toml | sed 's/^/   /'
python3 deploy/local/webhook-sink.py 8090 >"$logs/webhook-sink.log" 2>&1 &
pids+=("$!")
echo "$!" >>"$pid_file"
webhooks=()
for channel in email sms whatsapp push; do webhooks+=(--webhook "$channel=http://127.0.0.1:8090/$channel"); done
target/release/omni journeys dispatch "${webhooks[@]}" >"$logs/dispatch.log" 2>&1 &
pids+=("$!")
echo "$!" >>"$pid_file"

cat <<TEXT
== the customer 360 page, live while the demo runs (this API has no keys: leave the key empty):
   http://127.0.0.1:8081/ui#customer=c-000001
== try it yourself while it runs:
   curl -s -XPOST localhost:8080/v1/events -H 'content-type: application/json' -d '{"event_id": "demo-1", "customer_id": "c-000001", "occurred_at": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "channel": "whatsapp", "type": "support_ticket_opened", "properties": {"ticket_id": "T-77", "topic": "delivery"}}'
   curl -s localhost:8081/v1/customers/c-000001
   curl -s 'localhost:8081/v1/customers/c-000001/reachability?purpose=marketing'
   curl -s localhost:8081/v1/customers/c-000001/loyalty
   curl -s localhost:8081/v1/customers/c-000001/journeys
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
if [[ "$resolution" == 1 ]]; then
  echo "== one person, three ids: a cookie on the web, a login with an email, a store card with the same email"
  at="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  run="$(date +%s)"
  curl -s -XPOST localhost:8080/v1/events -H 'content-type: application/json' -d '{"events": [
    {"event_id": "demo-'"$run"'-1", "customer_id": "anon-'"$run"'", "occurred_at": "'"$at"'", "channel": "web", "type": "page_viewed",
     "properties": {"url": "/shoes"}, "identifiers": [{"type": "anonymous_id", "value": "cookie-'"$run"'"}]},
    {"event_id": "demo-'"$run"'-2", "customer_id": "U-'"$run"'", "occurred_at": "'"$at"'", "channel": "web", "type": "identify",
     "properties": {}, "identifiers": [{"type": "anonymous_id", "value": "cookie-'"$run"'"}, {"type": "user_id", "value": "U-'"$run"'"},
                                       {"type": "email", "value": "ann-'"$run"'@example.com"}]},
    {"event_id": "demo-'"$run"'-3", "customer_id": "card-'"$run"'", "occurred_at": "'"$at"'", "channel": "store", "type": "order_placed",
     "properties": {"order_id": "o-'"$run"'", "value_minor": 4999, "currency": "EUR"},
     "identifiers": [{"type": "loyalty_card", "value": "'"$run"'"}, {"type": "email", "value": " Ann-'"$run"'@Example.com"}]}
  ]}' >/dev/null
  for _ in $(seq 1 50); do
    curl -fsS "localhost:8081/v1/customers/card-$run/identity" 2>/dev/null | grep -q "anon-$run" && break
    sleep 0.2
  done
  echo "   omni identity explain card-$run"
  target/release/omni identity explain "card-$run" | sed 's/^/   /'
  echo "   (GET /v1/customers/anon-$run answers U-$run's profile: one customer)"
fi
# Published more than the lookup grace (15 s) ago: a view of the Black Friday page enters it.
echo "== Black Friday: a customer views the offer page; journeys decides, the dispatcher sends"
run="$(date +%s)"
curl -s -XPOST localhost:8080/v1/events -H 'content-type: application/json' -d '{"event_id": "bf-'"$run"'", "customer_id": "bf-'"$run"'",
  "occurred_at": "'"$(date -u +%Y-%m-%dT%H:%M:%SZ)"'", "channel": "web", "type": "page_viewed", "properties": {"url": "/black-friday/tv"}}' >/dev/null
for _ in $(seq 1 50); do
  curl -fsS "localhost:8081/v1/customers/bf-$run/journeys" >/dev/null 2>&1 && break
  sleep 0.2
done
echo "   GET /v1/customers/bf-$run/journeys"
curl -s "localhost:8081/v1/customers/bf-$run/journeys" | python3 -c \
  'import json,sys; d=json.load(sys.stdin); [print("   ", e["journey_id"], "step", e["step"], "since", e["step_since"], "until", e["waiting_until"]) for e in d.get("entries", [])]'
for _ in $(seq 1 25); do grep -q "bf-$run" "$logs/webhook-sink.log" && break; sleep 0.2; done
grep "bf-$run" "$logs/webhook-sink.log" | sed 's/^/   webhook sink: /' || echo "   (no send yet: suppression may hold it, e.g. quiet hours; see journey.actions.v1 with omni tail)"

# A catalog trigger: the price drop reaches the customer who viewed the product, the lookup grace
# (15 s) after it was appended.
echo "== Price drop: pd-$run views sku-$run; then its price drops (POST /v1/catalog/events)"
curl -s -XPOST localhost:8080/v1/events -H 'content-type: application/json' -d '{"event_id": "pd-view-'"$run"'", "customer_id": "pd-'"$run"'",
  "occurred_at": "'"$(date -u +%Y-%m-%dT%H:%M:%SZ)"'", "channel": "web", "type": "product_viewed", "properties": {"product_id": "sku-'"$run"'"}}' >/dev/null
sleep 1
curl -s -XPOST localhost:8080/v1/catalog/events -H 'content-type: application/json' -d '{"event_id": "drop-'"$run"'", "product_id": "sku-'"$run"'",
  "occurred_at": "'"$(date -u +%Y-%m-%dT%H:%M:%SZ)"'", "type": "product_price_changed", "properties": {"old_minor": 4999, "new_minor": 3999, "currency": "EUR"}}' \
  | sed 's/^/   /'
echo
for _ in $(seq 1 150); do grep -q "pd-$run" "$logs/webhook-sink.log" && break; sleep 0.2; done
grep "pd-$run" "$logs/webhook-sink.log" | sed 's/^/   webhook sink: /' || echo "   (no send yet: suppression may hold it; see journey.actions.v1 with omni tail)"
if [[ "$registry" == 1 ]]; then
  echo "== a stock Confluent consumer (Python confluent-kafka) reads c-000001's profile through the registry:"
  echo "   target/py/bin/python3 deploy/local/read_profiles.py"
  target/py/bin/python3 deploy/local/read_profiles.py 2>&1 | cut -c1-300 | sed 's/^/   /'
fi
exit 0
