#!/usr/bin/env bash
# `flightcache bench --pressure` with its budgeted server inside a cgroup v1 memory cgroup
# limited to 1.15 x budget + 64 MiB, as the memory-budget targets ask: the server must keep
# running (no OOM kill) while uploads offer 4x its budget. Needs root and the cgroup v1 memory
# controller at /sys/fs/cgroup/memory (a user's machine may not allow it: this is a benchmark
# script, never part of the tests).
#
#   BUDGET_MIB=1024 DURATION=25s benches/scripts/pressure_cgroup.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
budget_mib="${BUDGET_MIB:-1024}"
duration="${DURATION:-25s}"
controller=/sys/fs/cgroup/memory
if [ ! -w "$controller" ]; then
  echo "error: $controller is not writable: run as root on a machine with cgroup v1's memory controller" >&2
  exit 1
fi
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
bin="$root/target/release/flightcache"

cgroup="$controller/flightcache-pressure-$$"
mkdir "$cgroup"
cleanup() {
  # The bench kills its servers on exit; the cgroup can go once it is empty.
  for _ in $(seq 50); do rmdir "$cgroup" 2>/dev/null && return; sleep 0.1; done
  echo "warning: could not remove $cgroup" >&2
}
trap cleanup EXIT
limit=$(( (budget_mib * 115 / 100 + 64) * 1024 * 1024 ))
echo "$limit" > "$cgroup/memory.limit_in_bytes"
echo 0 > "$cgroup/memory.swappiness" 2>/dev/null || true

echo "cgroup $cgroup: memory.limit_in_bytes = $limit ($(( limit >> 20 )) MiB) for a budget of ${budget_mib} MiB"
"$bin" bench --pressure --budget "${budget_mib}MiB" --duration "$duration" --cgroup "$cgroup"
echo
echo "cgroup after the budgeted phase: max usage $(( $(cat "$cgroup/memory.max_usage_in_bytes") >> 20 )) MiB" \
  "of $(( limit >> 20 )) MiB, failcnt $(cat "$cgroup/memory.failcnt")," \
  "$(grep -E '^oom_kill ' "$cgroup/memory.oom_control" || echo 'oom_kill n/a')"
