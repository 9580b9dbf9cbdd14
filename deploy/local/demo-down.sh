#!/usr/bin/env bash
# Stops demo processes left behind (their pids are in target/demo/pids): SIGTERM, then SIGKILL
# after 15 s. A pid is only signalled while it still runs one of this workspace's binaries (pids
# are reused after a reboot).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
pid_file=target/demo/pids
[[ -f "$pid_file" ]] || exit 0
ours() { grep -qa "target/release/" "/proc/$1/cmdline" 2>/dev/null; }
pids=()
while read -r pid; do
  if ours "$pid"; then pids+=("$pid"); fi
done <"$pid_file"
if ((${#pids[@]})); then
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 1 150); do
    alive=()
    for pid in "${pids[@]}"; do ours "$pid" && alive+=("$pid"); done
    ((${#alive[@]})) || break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    if ours "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
fi
rm -f "$pid_file"
