#!/usr/bin/env bash
# Memory of real use, measured: a `flightcache serve` process, a Parquet file of SIZE_MIB
# (default 2048) random float64 in 64 columns, then `flightcache push` and `flightcache get -o`
# under /usr/bin/time (peak RSS), and the server's RSS idle, holding the table and after `drop`.
# Needs GNU time (Debian: apt-get install time) and about 3x SIZE_MIB of free disk in $TMPDIR.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
size_mib="${SIZE_MIB:-2048}"
if [ ! -x /usr/bin/time ]; then
  echo "error: GNU time is missing; install it (Debian: apt-get install time)" >&2
  exit 1
fi
python="$(bash "$root/scripts/venv.sh")"
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
bin="$root/target/release/flightcache"
work="$(mktemp -d)"
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

"$python" - "$work/table.parquet" "$size_mib" <<'PY'
import sys
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
path, size_mib, cols = sys.argv[1], int(sys.argv[2]), 64
rows_per_chunk = (128 << 20) // (8 * cols)
schema = pa.schema([(f"c{i}", pa.float64()) for i in range(cols)])
rng = np.random.default_rng(1)
with pq.ParquetWriter(path, schema, compression="snappy") as writer:
    for _ in range(max(1, size_mib // 128)):
        writer.write_table(pa.table({f"c{i}": rng.random(rows_per_chunk) for i in range(cols)}, schema=schema))
PY

"$bin" serve --port 0 > "$work/server.out" &
server_pid=$!
for _ in $(seq 100); do [ -s "$work/server.out" ] && break; sleep 0.1; done
export FLIGHTCACHE_SERVER="$(sed -n '1s/^listening on //p' "$work/server.out")"
rss_mib() { awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$server_pid/status"; }
peak_mib() { awk '/Maximum resident/ { printf "%.0f", $6 / 1024 }' "$1"; }

idle="$(rss_mib)"
/usr/bin/time -v "$bin" push "$work/table.parquet" --key table 2> "$work/push.time"
sleep 1; holding="$(rss_mib)"
/usr/bin/time -v "$bin" get table -o "$work/out.parquet" 2> "$work/get.time"
"$bin" drop table
# serve keeps freed table memory 10 s for reuse (--keep-freed, checked every 0.5 s) and
# its allocator returns freed memory after 1 s: read RSS well after both.
sleep 12; dropped="$(rss_mib)"

echo
echo "table: ${size_mib} MiB of float64 in 64 columns ($(du -m "$work/table.parquet" | cut -f1) MiB Parquet file)"
echo "flightcache push:          peak RSS $(peak_mib "$work/push.time") MiB"
echo "flightcache get -o:        peak RSS $(peak_mib "$work/get.time") MiB"
echo "server RSS: idle ${idle} MiB, holding the table ${holding} MiB, after drop ${dropped} MiB"
