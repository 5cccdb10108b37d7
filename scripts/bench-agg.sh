#!/usr/bin/env bash
# Aggregation / deaggregation throughput: ours (kinesis-cat perf agg) against
# the official KPL aggregation libraries (Python aws-kinesis-agg 1.2.3, Node
# aws-kinesis-agg 4.2.8), all pinned to one core, for 100 B, 1 KiB and 10 KiB
# user records over 1,000 partition keys, 51,200-byte aggregates (the KPL
# default). Prints a markdown table (MB = 10^6 bytes of user data).
#
#   scripts/bench-agg.sh                 # everything
#   ONLY=ours scripts/bench-agg.sh       # ours | python | node (comma list)
#
# Env: BENCH_CPU (core to pin to, default 1), RUNS (median of, default 5),
#      SCALE (multiplies every record count, e.g. 0.1 for a quick look),
#      SKIP_BUILD=1 (use the existing binary), CARGO_TARGET_DIR.
# Record counts aim at >= ~2 s per timed phase for each implementation.
set -euo pipefail
# shellcheck source=scripts/bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"

CPU="${BENCH_CPU:-1}"
RUNS="${RUNS:-5}"
ONLY="${ONLY:-ours,python,node}"
KEYS=1000
SIZES=(100 1024 10240)

# records per workload, per implementation (index = position in SIZES)
OURS_RECORDS=(10000000 1000000 100000)
PY_RECORDS=(1000000 500000 100000)
NODE_RECORDS=(3000000 600000 100000)

PIN=()
if command -v taskset >/dev/null 2>&1; then
  PIN=(taskset -c "$CPU")
else
  log "taskset not found; running unpinned"
fi

log "load before: $(loadavg) on $(nproc) cores; pinned to core $CPU"

if want python || want node; then
  bash "$OFFICIAL/setup.sh"
fi

ours_ok=1
if want ours; then
  if [ -z "${SKIP_BUILD:-}" ]; then
    (cd "$REPO" && cargo build --release -p kinesis-cat >&2) || ours_ok=0
  fi
  if [ "$ours_ok" = 1 ] && ! "$CAT" perf agg --help >/dev/null 2>&1; then
    log "$CAT has no working 'perf agg' subcommand; skipping ours"
    ours_ok=0
  fi
fi

RESULTS="$(mktemp)"
trap 'rm -f "$RESULTS"' EXIT
failed=0

# run NAME CMD... : runs one benchmark, keeps its last stdout line (JSON)
run() {
  local name="$1"; shift
  local out
  log "$name: ${*}"
  if out="$("${PIN[@]}" "$@")"; then
    tail -n 1 <<<"$out" >>"$RESULTS"
  else
    log "$name failed"
    failed=1
  fi
}

for i in "${!SIZES[@]}"; do
  size="${SIZES[$i]}"
  if want ours && [ "$ours_ok" = 1 ]; then
    run "ours $size B" "$CAT" perf agg --record-size "$size" --keys "$KEYS" \
      --records "$(scaled "${OURS_RECORDS[$i]}")" --runs "$RUNS"
  fi
  if want python; then
    run "python $size B" "$REPO/.cache/venv/bin/python" "$OFFICIAL/agg_bench.py" \
      --record-size "$size" --keys "$KEYS" --records "$(scaled "${PY_RECORDS[$i]}")" --runs "$RUNS"
  fi
  if want node; then
    run "node $size B" node --expose-gc "$OFFICIAL/agg_bench.js" \
      --record-size "$size" --keys "$KEYS" --records "$(scaled "${NODE_RECORDS[$i]}")" --runs "$RUNS"
  fi
done

log "load after: $(loadavg)"

PY="$REPO/.cache/venv/bin/python"
[ -x "$PY" ] || PY=python3
"$PY" - "$RESULTS" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def size(n):
    return "%d KiB" % (n // 1024) if n % 1024 == 0 else "%d B" % n
print("| impl | record size | aggregate rec/s | deaggregate rec/s | aggregate MB/s | deaggregate MB/s |")
print("| --- | --- | ---: | ---: | ---: | ---: |")
for r in sorted(rows, key=lambda r: r["record_size"]):
    print("| %s | %s | %s | %s | %s | %s |" % (
        r["impl"], size(r["record_size"]),
        format(round(r["aggregate_records_per_sec"]), ","),
        format(round(r["deaggregate_records_per_sec"]), ","),
        "%.1f" % r["aggregate_mb_per_sec"], "%.1f" % r["deaggregate_mb_per_sec"]))
ours = [r for r in sorted(rows, key=lambda r: r["record_size"]) if "md5_mb_per_sec" in r]
if ours:
    print()
    print("The limit, measured in the same run (each row of ours beside the MD5 of one 51,200-byte "
          "aggregate timed in that row's process: both directions hash every byte once):")
    print()
    print("| record size | MD5 limit MB/s | aggregate / limit | deaggregate / limit |")
    print("| --- | ---: | ---: | ---: |")
    for r in ours:
        limit = r["md5_mb_per_sec"]
        print("| %s | %.0f | %.0f %% | %.0f %% |" % (size(r["record_size"]), limit,
              100 * r["aggregate_mb_per_sec"] / limit, 100 * r["deaggregate_mb_per_sec"] / limit))
EOF

if want ours && [ "$ours_ok" = 0 ]; then
  log "ours was not measured (build failed or no 'perf agg')"
  exit 1
fi
exit "$failed"
