#!/usr/bin/env bash
# Run every test flightcache has: formatting, clippy with warnings as errors, the Rust unit,
# integration, doc and bench-smoke tests, and the pyarrow interoperability tests against the
# built binary (in a pinned virtual environment this script creates). Fails loudly, never skips.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*" >&2; }
require() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "error: \`$1\` is missing; $2" >&2
    exit 1
  fi
}
require cargo "install Rust with rustup: https://rustup.rs"
require python3 "install Python 3.9+ with venv (Debian: apt-get install python3 python3-venv)"
cargo fmt --version >/dev/null 2>&1 || { echo "error: rustfmt is missing; run: rustup component add rustfmt" >&2; exit 1; }
cargo clippy --version >/dev/null 2>&1 || { echo "error: clippy is missing; run: rustup component add clippy" >&2; exit 1; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --locked --all-targets -- -D warnings

step "the library alone: no command line, progress bars, prompts, allocator, certificates or SQL engine"
cargo clippy --locked --lib --no-default-features -- -D warnings
cli_crates="$(cargo tree --locked --no-default-features -e normal --prefix none \
  | sed 's/ v.*//' | sort -u | grep -xE 'clap|indicatif|rpassword|rcgen|mimalloc|datafusion' || true)"
if [ -n "$cli_crates" ]; then
  echo "error: the library without default features compiles: $cli_crates" >&2
  exit 1
fi

step "cargo test (unit, integration, CLI, doc)"
cargo test --locked

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --quiet

step "criterion benches, one quick pass each"
cargo test --locked --bench hot_paths

step "pyarrow interoperability tests"
python="$(bash scripts/venv.sh)"
FLIGHTCACHE_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/flightcache" "$python" -m pytest python/tests -q -p no:cacheprovider
