#!/usr/bin/env bash
# Producer throughput against a local sink: ours (kinesis-cat perf produce)
# against aiokpl 0.2.0 (the Python asyncio KPL-equivalent, aggregation on) and
# the tutorial boto3 put_record-per-record loop, all on one workload: 100-byte
# records over 1,000 random 16-character partition keys, sent to
# `fault-proxy --sink --shards 4` (no shard limits, so ours runs with
# --rate-limit-percent 100000 and aiokpl with the same 1000-fold limits).
# By default one record in 16 is sent with `send` and its receipt awaited and
# timed, the rest with `send_detached` (fire and forget, no receipt). Ours also
# with `send` for all and the untimed receipts dropped (--drop-receipts), with
# every receipt awaited (--receipt-sample 1), with each budget of
# MEM_MIB to check peak RSS against 2 x budget + MEM_CONSTANT_MIB, and with a
# single record (runtime, SDK client, binary). Prints a markdown table
# (MB = 10^6 bytes of user data) and the ratios.
#
#   scripts/bench-produce.sh                   # everything
#   ONLY=ours,mem scripts/bench-produce.sh     # ours | receipts | aiokpl | sdk | mem (comma list)
#   SCALE=0.1 scripts/bench-produce.sh         # a quick look
#
# Each run gets a sink of its own (so the sink's counters - PutRecords /
# PutRecord calls, entries - and its CPU time are that run's); the running
# sink is killed on exit by a trap. Nothing is pinned: the producers and the
# sink share the machine's cores, as they would in a real deployment on a
# small host. The 1-minute load average is printed with each row: the
# figures are only comparable at similar loads.
#
# Env: OURS_RECORDS (default 6000000), AIOKPL_RECORDS (100000), SDK_RECORDS
#      (1000000, bounded by SDK_SECONDS, default 10), MEM_RECORDS (default
#      OURS_RECORDS), MEM_MIB (budgets, "4 16 64"), MEM_CONSTANT_MIB (32),
#      RECORD_SIZE (100), KEYS (1000),
#      SCALE (multiplies every record count), SKIP_BUILD=1, SKIP_SETUP=1,
#      CARGO_BUILD_JOBS (default 1), CARGO_TARGET_DIR.
# Record counts aim at >= 5 s per run on a 2-core machine.
set -euo pipefail
# shellcheck source=scripts/bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"

PY="$REPO/.cache/venv/bin/python"
ONLY="${ONLY:-ours,receipts,aiokpl,sdk,mem}"
RECORD_SIZE="${RECORD_SIZE:-100}"
KEYS="${KEYS:-1000}"
MEM_MIB="${MEM_MIB:-4 16 64}"
# The stated constant of the memory bound: peak RSS <= 2 x budget + this.
MEM_CONSTANT_MIB="${MEM_CONSTANT_MIB:-32}"
SDK_SECONDS="${SDK_SECONDS:-10}"

OURS_RECORDS="$(scaled "${OURS_RECORDS:-6000000}")"
AIOKPL_RECORDS="$(scaled "${AIOKPL_RECORDS:-100000}")"
SDK_RECORDS="$(scaled "${SDK_RECORDS:-1000000}")"
MEM_RECORDS="${MEM_RECORDS:-$OURS_RECORDS}"

load() { cut -d' ' -f1 /proc/loadavg; }
log "load before: $(loadavg) on $(nproc) cores"

if [ -z "${SKIP_BUILD:-}" ]; then
  if ! (cd "$REPO" && cargo build --release -j "${CARGO_BUILD_JOBS:-1}" -p kinesis-cat -p fault-proxy >&2); then
    log "cargo build failed (SKIP_BUILD=1 runs the binaries already built)"
    exit 1
  fi
fi
need_bins "$CAT" "$PROXY"
if { want aiokpl || want sdk; } && [ -z "${SKIP_SETUP:-}" ]; then
  bash "$OFFICIAL/setup.sh"
fi

WORK="$(mktemp -d)"
trap 'stop_sink; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

# cpu_seconds PID: user + system CPU time of a live process.
cpu_seconds() {
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}

RESULTS="$WORK/results.jsonl"
failed=0

# run NAME CMD... : runs one benchmark against a fresh sink; keeps its last
# stdout line (JSON) plus the sink's counters, the load average at the start,
# the client's CPU seconds and the sink's.
run() {
  local name="$1"; shift
  start_sink
  local load0 out rc=0
  load0="$(load)"
  log "$name (load $load0): $*"
  out="$(AWS_ENDPOINT_URL_KINESIS="$ENDPOINT" AWS_REGION=us-east-1 \
    AWS_ACCESS_KEY_ID=testingAccessKey AWS_SECRET_ACCESS_KEY=x \
    /usr/bin/time -f '%U %S' -o "$WORK/time" "$@")" || rc=$?
  local sink_cpu
  sink_cpu="$(cpu_seconds "$SINK_PID")"
  stop_sink
  local stats
  stats="$(grep '^{' "$WORK/sink.err" | tail -n 1)"
  [ -n "$stats" ] || stats='{}'
  if [ "$rc" -ne 0 ] || ! tail -n 1 <<<"$out" | jq -e . >/dev/null 2>&1; then
    log "$name failed (exit $rc)"
    failed=1
    return
  fi
  tail -n 1 <<<"$out" | jq -c --arg name "$name" --arg load "$load0" \
    --arg sink_cpu "$sink_cpu" --arg client_cpu "$(awk '{ print $1 + $2 }' "$WORK/time")" \
    --argjson sink "$stats" \
    '. + {name: $name, load1: ($load | tonumber), sink_cpu_s: ($sink_cpu | tonumber),
          client_cpu_s: ($client_cpu | tonumber), sink: $sink}' >>"$RESULTS"
}

PRODUCE=(perf produce --stream perf --record-size "$RECORD_SIZE" --keys "$KEYS"
  --rate-limit-percent 100000)
if want ours; then
  run ours "$CAT" "${PRODUCE[@]}" --records "$OURS_RECORDS"
fi
if want receipts; then
  run "ours, receipts dropped" "$CAT" "${PRODUCE[@]}" --records "$OURS_RECORDS" \
    --drop-receipts
  run "ours, every receipt awaited" "$CAT" "${PRODUCE[@]}" --records "$OURS_RECORDS" \
    --receipt-sample 1
fi
if want aiokpl; then
  run aiokpl "$PY" "$OFFICIAL/produce_aiokpl.py" --stream perf --records "$AIOKPL_RECORDS" \
    --record-size "$RECORD_SIZE" --keys "$KEYS" --max-aggregate 51200
fi
if want sdk; then
  run sdk "$PY" "$OFFICIAL/produce_sdk_loop.py" --stream perf --records "$SDK_RECORDS" \
    --max-seconds "$SDK_SECONDS" --record-size "$RECORD_SIZE" --keys "$KEYS"
fi
if want mem; then
  for mib in $MEM_MIB; do
    run "ours, --max-outstanding-mib $mib" "$CAT" "${PRODUCE[@]}" --records "$MEM_RECORDS" \
      --max-outstanding-mib "$mib"
  done
  run "ours, 1 record (baseline)" "$CAT" "${PRODUCE[@]}" --records 1
fi

[ -s "$RESULTS" ] || { log "no results"; exit 1; }
jq -rs --argjson constant "$MEM_CONSTANT_MIB" '
  def f(d): if . == null then "-" else (. * pow(10; d) | round / pow(10; d) | tostring) end;
  def ncalls: (.sink.requests.PutRecords // 0) + (.sink.requests.PutRecord // 0);
  def calls: if (.sink.requests.PutRecords // 0) > 0
    then "\(.sink.requests.PutRecords) PutRecords"
    else "\(.sink.requests.PutRecord // 0) PutRecord" end;
  "| impl | records | s | user rec/s | MB/s | calls (sink) | Kinesis records/call | p50 / p99 ms | peak RSS MiB | client CPU µs/rec | sink CPU s | load |",
  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  (.[] | "| \(.name) | \(.records) | \(.seconds | f(1)) | \(.user_records_per_sec | round) | \(.mb_per_sec | f(2)) | \(calls) | \(if ncalls > 0 then (.sink.entries_received / ncalls) | f(1) else "-" end) | \(.latency_ms_p50 | f(1)) / \(.latency_ms_p99 | f(1)) | \(.peak_rss_mib | f(1)) | \(.client_cpu_s / .records * 1e6 | f(2)) | \(.sink_cpu_s | f(2)) | \(.load1) |"),
  "",
  ( (map(select(.name == "ours"))[0]) as $o
    | (map(select(.name == "aiokpl"))[0]) as $a
    | (map(select(.name == "sdk"))[0]) as $s
    | (if $o and $a then "ours / aiokpl: \($o.user_records_per_sec / $a.user_records_per_sec | f(1))x records/s; aiokpl uses \(($a.client_cpu_s / $a.records) / ($o.client_cpu_s / $o.records) | f(0))x the CPU per record; peak RSS ours / aiokpl \($o.peak_rss_mib / $a.peak_rss_mib | f(2))x" else empty end),
      (if $o and $s then "ours / sdk loop: \($o.user_records_per_sec / $s.user_records_per_sec | f(0))x records/s" else empty end) ),
  ( (map(select(.name | startswith("ours, 1 record")))[0].peak_rss_mib // 0) as $base
    | map(select(.name | startswith("ours, --max-outstanding-mib")))[]
    | "\(.name): peak RSS \(.peak_rss_mib | f(1)) MiB; 2 x limit + \($constant) MiB = \(2 * .max_outstanding_mib + $constant) MiB: \(if .peak_rss_mib <= 2 * .max_outstanding_mib + $constant then "within" else "OVER, by \(.peak_rss_mib - 2 * .max_outstanding_mib - $constant | f(1)) MiB" end) (a producer that sent one record peaks at \($base | f(1)) MiB)" )
' "$RESULTS"
log "load after: $(loadavg)"
exit "$failed"
