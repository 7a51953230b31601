#!/usr/bin/env bash
# Runs the load profiles of BENCHMARKS.md against a broker the bench starts itself, and
# the raw machine limits in the same session. Results: target/bench-results/*.json.
#
#   tests/bench/run-load.sh            all profiles
#   tests/bench/run-load.sh throughput only the named ones
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
OUT="$ROOT/target/bench-results"
mkdir -p "$OUT"
cargo build --release -q -p cirrus-broker -p cirrus-bench
BIN="$ROOT/target/release"
DATA="${CIRRUS_BENCH_DIR:-$ROOT/target/bench-data}"
rm -rf "$DATA"; mkdir -p "$DATA"
run() { # name, bench args...
  local name="$1"; shift
  echo "== $name"
  rm -rf "$DATA/$name"
  # Let the previous profile's dirty pages reach the disk first: writeback competing
  # with the WAL's fdatasync otherwise shows up as this profile's tail latency.
  sync; sleep 5
  "$BIN/cirrus-bench" --broker-bin "$BIN/cirrus" --broker-data-dir "$DATA/$name" --output "$OUT/$name.json" "$@" > /dev/null
  python3 - "$OUT/$name.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
pl, el = r.get("produce_latency") or {}, r.get("end_to_end_latency") or {}
print(f"  produce {r['produce_mb_per_s']:.1f} MB/s {r['produce_records_per_s']:.0f} rec/s, p50 {pl.get('p50_ms')} p99 {pl.get('p99_ms')} p99.9 {pl.get('p999_ms')} max {pl.get('max_ms')} ms")
print(f"  e2e p50 {el.get('p50_ms')} p99 {el.get('p99_ms')} ms; consumed {r['consumed_records']} records, errors {r['errors']}")
print(f"  broker {r.get('broker')}")
print(f"  object store {r.get('object_store')}")
print(f"  object sizes {r.get('object_sizes_bytes')}")
if r.get("catch_up"): print(f"  catch-up {r['catch_up']}")
PY
}
want() { [ $# -eq 0 ] || [[ " $* " == *" $1 "* ]]; }
PROFILES=("$@")
sel() { [ ${#PROFILES[@]} -eq 0 ] && return 0; for p in "${PROFILES[@]}"; do [ "$p" = "$1" ] && return 0; done; return 1; }

sel raw-limits && { echo "== raw-limits"; "$BIN/raw-limits" --dir "$DATA" --seconds 3 | tee "$OUT/raw-limits.txt" | tail -12; }
sel throughput && run throughput --profile throughput --duration 30s
if sel half-rate; then
  max=$(python3 -c "import json;print(int(json.load(open('$OUT/throughput.json'))['produce_records_per_s']/2))")
  run half-rate --profile custom --partitions 12 --record-size 1024 --rate "$max" --duration 30s --consumer-groups 1
fi
sel exceptions-burst && run exceptions-burst --profile exceptions-burst --rate 2000 --duration 20s --burst-duration 10s
sel object-s3 && run object-s3 --profile custom --partitions 12 --record-size 1024 --rate 5000 --duration 30s \
  --broker-arg=--durability=object --broker-arg=--object-store-latency=s3-standard
sel catch-up && run catch-up --profile catch-up --catch-up-mib 1024
# The same half rate with the bucket off the data disk (memory://, standing in for a
# remote S3): isolates the WAL path from page-cache writeback of local object files.
if sel half-rate-remote; then
  max=$(python3 -c "import json;print(int(json.load(open('$OUT/throughput.json'))['produce_records_per_s']/2))")
  run half-rate-remote --profile custom --partitions 12 --record-size 1024 --rate "$max" --duration 30s --consumer-groups 1 \
    --broker-arg=--object-store=memory://
fi
