#!/usr/bin/env bash
# Instructions per event of each service's hot path without Kafka (issue 21): decode, validate,
# dedupe, apply, encode the outputs, the changelog and position records at each commit, counted by
# callgrind inside `ProcessorTest::when_batch` (target/release/omnistream-hot-path). They repeat
# exactly for the same binary and input, however noisy the machine: judge an optimization by them.
# librdkafka's share (consume, produce, transactions) is not in them; bench/drain-cost.sh counts
# a whole process draining a real topic.
#
#   bench/instructions.sh [events] [customers] [service...]
#
# HOT_PATH=FILE counts another build's probe (a copy of the binary before a change).
#
# IDLE_STATE=encoded counts the services' `--idle-state encoded` (customers held as their changelog
# records between transactions).
#
# valgrind hides the CPU's SHA extensions, so an HMAC-SHA256 (the erasure marker id) is counted
# in software here.
set -euo pipefail
events="${1:-100000}"; customers="${2:-10000}"; shift $(( $# > 2 ? 2 : $# ))
services=("$@")
(( ${#services[@]} )) || services=(event-counter profile-updater suppression channel-affinity loyalty-points)
cd "$(dirname "${BASH_SOURCE[0]}")/.."
probe="${HOT_PATH:-target/release/omnistream-hot-path}"
out=$(mktemp -d)
echo "| service | instructions per event | records written per event |"
echo "|---|---|---|"
for service in "${services[@]}"; do
  valgrind --tool=callgrind --callgrind-out-file="$out/$service.out" \
    --toggle-collect='*ProcessorTest*when_batch*' \
    "$probe" --service "$service" --events "$events" --customers "$customers" \
    >"$out/$service.stdout" 2>"$out/$service.stderr" \
    || { cat "$out/$service.stderr" >&2; exit 1; }
  collected=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$out/$service.stderr")
  written=$(sed -n 's/.* \([0-9]*\) records written.*/\1/p' "$out/$service.stdout")
  awk -v s="$service" -v c="$collected" -v w="$written" -v e="$events" \
    'BEGIN { printf "| %s | %.0f | %.2f |\n", s, c / e, w / e }'
done
echo "($events events over $customers customers, 1,000 per transaction, idle state ${IDLE_STATE:-decoded}; callgrind files in $out)"
