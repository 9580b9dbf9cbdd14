#!/usr/bin/env bash
# Stops demo processes left behind (their pids are in target/demo/pids).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
pid_file=target/demo/pids
[[ -f "$pid_file" ]] || exit 0
while read -r pid; do
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
  fi
done <"$pid_file"
for _ in $(seq 1 100); do
  alive=0
  while read -r pid; do kill -0 "$pid" 2>/dev/null && alive=1; done <"$pid_file"
  ((alive)) || break
  sleep 0.1
done
rm -f "$pid_file"
