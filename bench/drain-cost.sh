#!/usr/bin/env bash
# Instructions a service spends per event draining a backlog, counted by callgrind (they repeat
# on a noisy machine where wall time does not): the whole process, Kafka client threads included.
#
#   bench/drain-cost.sh <binary dir> <service> [events]
#
# Creates fresh topics (`omni topics create --prefix`), publishes the same simulated events
# (fixed seed) to them, runs the service under valgrind until its group committed every input
# offset, stops it with SIGTERM and prints instructions per event. Run it for two builds (e.g. a
# worktree of the previous commit) to compare them. journeys runs the bench's drain journey
# (bench/journeys/drain.toml).
set -euo pipefail
bin="$1"; service="$2"; events="${3:-20000}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
prefix="cost-$service-$(date +%s%N)-"
omni=target/release/omni
"$omni" topics create --prefix "$prefix" --partitions 2 >/dev/null
lookups=()
if [[ "$service" == journeys ]]; then
  # The bench's drain journey, published a lookup grace (15 s) before the events so they see it.
  "$omni" journeys publish --topic "${prefix}journey.definitions.v1" bench/journeys/drain.toml >/dev/null
  lookups=(--definitions-topic "${prefix}journey.definitions.v1" --catalog-topic "${prefix}catalog.events.v1")
  sleep 16
fi
"$omni" simulate --topic "${prefix}touchpoint.events.v1" --events "$events" --customers 2000 --seed 7 --duplicates 0 \
  --start 2026-11-01T00:00:00Z --step-ms 10 --rate 1000000 2>/dev/null
port=$((20000 + RANDOM % 20000))
flags=(--input-topic "${prefix}touchpoint.events.v1" --dlq-topic "${prefix}touchpoint.events.dlq.v1"
  --changelog-topic "${prefix}$service.state.v1" --group-id "${prefix}group" --instance-id cost
  --admin-addr "127.0.0.1:$port" "${lookups[@]}")
for output in $(python3 -c "
import json, sys
for s in json.load(open('deploy/services.json'))['services']:
    if s['name'] == sys.argv[1]:
        for o in s['outputs']: print(o['flag'] + '=' + sys.argv[2] + o['topic'])
" "$service" "$prefix"); do flags+=("$output"); done
out=$(mktemp -d)
valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out" "$bin/$service" "${flags[@]}" \
  >"$out/service.log" 2>&1 &
pid=$!
deadline=$((SECONDS + 1800))
# Drained when the processed counter reaches the number of records published.
until [[ "$(curl -s "127.0.0.1:$port/metrics" | awk '/^omnistream_records_processed_total/ {s += $2} END {print s + 0}')" -ge "$events" ]]; do
  if ((SECONDS > deadline)) || ! kill -0 "$pid" 2>/dev/null; then
    echo "drain-cost: $service did not drain $events events; see $out/service.log" >&2; exit 1
  fi
  sleep 2
done
kill -TERM "$pid"; wait "$pid" || true
total=$(callgrind_annotate "$out/callgrind.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "$service $bin: $total instructions, $((total / events)) per event ($events events)"
