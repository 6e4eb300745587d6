#!/usr/bin/env bash
# Time two or more builds of flightcache against each other in one session: run
# `BUILD bench --json ARGS` for each build in the order given (repeat a build to alternate,
# e.g. A B B A), and print each run's medians. Builds are paths to flightcache binaries.
#
#   benches/scripts/ab_bench.sh "/tmp/old/flightcache /tmp/new/flightcache /tmp/new/flightcache /tmp/old/flightcache" \
#       --no-json --size 1GiB --repeat 9
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 'BUILD [BUILD ...]' [bench flags]" >&2
  exit 2
fi
builds="$1"
shift
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
i=0
for build in $builds; do
  i=$((i + 1))
  "$build" bench --json "$@" > "$out/$i.json"
  python3 - "$build" "$i" "$out/$i.json" <<'PY'
import json, sys
build, run, path = sys.argv[1:]
report = json.load(open(path))
medians = {m["operation"]: m["median_s"] for m in report["measurements"]}
wanted = ["flight_put", "flight_get", "raw_put", "raw_get", "json_put", "json_get"]
shown = " ".join(f"{op} {medians[op]:.4f}" for op in wanted if op in medians)
print(f"run {run} {build}: {shown}", flush=True)
PY
done
