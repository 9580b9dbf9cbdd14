#!/usr/bin/env bash
# A rolling upgrade and a rollback across the changelog's dedupe-ids layout (docs/operations.md,
# "Upgrading across a changelog layout"), with a real build of the release before it as the old
# instance: what the old release does with records the new one wrote, against a real broker.
#
#   tests/upgrade/changelog-ids-layout.sh OLD_BIN_DIR NEW_BIN_DIR
#
# 1. The new release with CHANGELOG_IDS_LAYOUT=array (the upgrade's first restart) applies batch A,
#    holding customers compressed (IDLE_STATE=compressed: records kept in the layout it writes).
# 2. The old release restores that changelog and applies A again (every event a producer retry)
#    and batch B: every retry must be dropped as a duplicate by the dedupe windows it restored
#    (the seed's batch has no erasure, so no marker drops one), every B event applied.
# 3. The new release with the default layout (bytes) restores the old one's array records and
#    applies B again (all retries: dropped by those windows) and batch C.
# 4. The old release (a rollback) must refuse that changelog: exit non-zero, "written by a newer
#    release (state version 130" (0x80 | profile-updater's state version 2).
# Needs the broker (make kafka-up) and target/release/omni. Prints what each step saw; exit 0 if all held.
set -euo pipefail
old="$1"; new="$2"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
omni=target/release/omni
service=profile-updater
prefix="upgrade-$(date +%s%N)-"
"$omni" topics create --prefix "$prefix" --partitions 2 >/dev/null
events_topic="${prefix}touchpoint.events.v1"
batch=3000
publish() { # seed, start
  "$omni" simulate --topic "$events_topic" --events "$batch" --customers 300 --seed "$1" --duplicates 0 \
    --start "$2" --step-ms 10 --rate 0 >/dev/null 2>&1
}
port=$((20000 + RANDOM % 20000))
flags=(--input-topic "$events_topic" --dlq-topic "${prefix}touchpoint.events.dlq.v1"
  --changelog-topic "${prefix}$service.state.v1" --group-id "${prefix}group" --instance-id upgrade
  --admin-addr "127.0.0.1:$port")
for output in $(python3 -c "
import json, sys
for s in json.load(open('deploy/services.json'))['services']:
    if s['name'] == sys.argv[1]:
        for o in s['outputs']: print(o['flag'] + '=' + sys.argv[2] + o['topic'])
        if s.get('handoff'): print('--handoff-topic=' + sys.argv[2] + s['handoff'])
" "$service" "$prefix"); do flags+=("$output"); done
logs=$(mktemp -d)

outcome() { # name: the running service's count of input records with that outcome (0 before it listens)
  { curl -s "127.0.0.1:$port/metrics" || true; } | awk -v o="outcome=\"$1\"" 'index($0, "omnistream_records_processed_total{") == 1 && index($0, o) { s += $2 } END { print s + 0 }'
}

# Runs BIN (with env VAR=VALUE...) until it has processed N input records, then stops it; prints
# its outcomes.
run_until() {
  local label="$1" bin="$2" n="$3"; shift 3
  env "$@" "$bin/$service" "${flags[@]}" >"$logs/$label.log" 2>&1 &
  local pid=$! deadline=$((SECONDS + 180)) total=0
  trap 'kill -KILL "$pid" 2>/dev/null || true' EXIT
  while :; do
    total=$(( $(outcome applied) + $(outcome duplicate) + $(outcome erased) + $(outcome ignored) + $(outcome dead_lettered) ))
    ((total >= n)) && break
    if ((SECONDS > deadline)) || ! kill -0 "$pid" 2>/dev/null; then
      echo "upgrade-check: $label processed $total of $n; see $logs/$label.log" >&2; exit 1
    fi
    sleep 1
  done
  applied=$(outcome applied); duplicate=$(outcome duplicate); erased=$(outcome erased)
  kill -TERM "$pid"; wait "$pid" || { echo "upgrade-check: $label exited non-zero on SIGTERM; see $logs/$label.log" >&2; exit 1; }
  trap - EXIT
  echo "upgrade-check: $label: applied $applied, duplicate $duplicate, erased $erased"
}

publish 11 2026-11-01T00:00:00Z
run_until new-array "$new" "$batch" CHANGELOG_IDS_LAYOUT=array IDLE_STATE=compressed

publish 11 2026-11-01T00:00:00Z  # batch A again: all retries
publish 12 2026-11-02T00:00:00Z
run_until old-restores "$old" $((2 * batch))
if ((duplicate != batch || erased != 0 || applied != batch)); then
  echo "upgrade-check: the old release should drop the $batch retries as duplicates and apply the $batch new events" >&2; exit 1
fi

publish 12 2026-11-02T00:00:00Z  # batch B again: all retries
publish 13 2026-11-03T00:00:00Z
run_until new-bytes "$new" $((2 * batch)) IDLE_STATE=compressed
if ((duplicate != batch || erased != 0 || applied != batch)); then
  echo "upgrade-check: the new release should drop the $batch retries by the old one's windows and apply the $batch new events" >&2; exit 1
fi

"$old/$service" "${flags[@]}" >"$logs/old-rollback.log" 2>&1 &
pid=$!
deadline=$((SECONDS + 120))
while kill -0 "$pid" 2>/dev/null; do
  if ((SECONDS > deadline)); then
    kill -KILL "$pid"; echo "upgrade-check: the old release kept running on records in the new layout" >&2; exit 1
  fi
  sleep 1
done
status=0; wait "$pid" || status=$?
if ((status == 0)) || ! grep -q "written by a newer release (state version 130" "$logs/old-rollback.log"; then
  echo "upgrade-check: the old release should refuse the new layout; exit $status, see $logs/old-rollback.log" >&2; exit 1
fi
echo "upgrade-check: old-rollback: exit $status, \"$(grep -o 'written by a newer release[^"]*' "$logs/old-rollback.log" | head -1 | cut -c1-120)\""
echo "upgrade-check: held (logs in $logs)"
