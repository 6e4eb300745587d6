#!/usr/bin/env bash
# Compare flightcache with a plain pyarrow.flight server, using the same pyarrow client against
# both, side by side. Extra arguments go to compare_pyarrow.py (--size-mib, --cols, --repeat,
# --json). Builds flightcache in release mode and uses the pinned venv of scripts/venv.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
python="$(bash scripts/venv.sh)"
cargo build --release --quiet

pids=()
outputs=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -f "${outputs[@]}"
}
trap cleanup EXIT

# Start a server in the background; its first stdout line goes to file $1.
start() {
  local out="$1"
  shift
  "$@" > "$out" &
  pids+=($!)
  outputs+=("$out")
}

# The URL a server reported as `listening on URL` in file $1.
url_of() {
  for _ in $(seq 100); do
    if [ -s "$1" ]; then sed -n '1s/^listening on //p' "$1"; return; fi
    sleep 0.1
  done
  echo "error: a server did not report its address (see $1)" >&2
  return 1
}

ours="$(mktemp)"
reference="$(mktemp)"
start "$ours" "$root/target/release/flightcache" serve --port 0
start "$reference" "$python" "$root/benches/scripts/pyarrow_reference_server.py"
flightcache_url="$(url_of "$ours")"
reference_url="$(url_of "$reference")"
"$python" "$root/benches/scripts/compare_pyarrow.py" --flightcache "$flightcache_url" --reference "$reference_url" "$@"
