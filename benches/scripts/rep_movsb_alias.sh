#!/usr/bin/env bash
# glibc's `rep movsb` copies against the vector loops flightcache switches to on AMD CPUs
# (bin/flightcache/memcpy.rs): 16 KiB copies by the destination's offset past the source within
# a page, first as glibc chooses, then with the tunable flightcache sets. Needs a C compiler.
#
#   benches/scripts/rep_movsb_alias.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
cc -O2 -o "$out/rep_movsb_alias" "$root/benches/scripts/rep_movsb_alias.c"
grep -m1 '^vendor_id' /proc/cpuinfo || true
grep -m1 '^model name' /proc/cpuinfo || true
ldd --version 2>/dev/null | head -1 || true
echo "-- as glibc chooses (GLIBC_TUNABLES unset)"
env -u GLIBC_TUNABLES "$out/rep_movsb_alias"
echo "-- GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=1099511627776 (what docs/operations.md advises on AMD CPUs)"
GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=1099511627776 "$out/rep_movsb_alias"
