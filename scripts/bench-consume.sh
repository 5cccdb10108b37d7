#!/usr/bin/env bash
# Consumer benchmarks, printed as markdown tables:
#
# 1. `kinesis-cat perf consume`: the consumer's CPU cost per user record, reading
#    SHARDS x RECORDS_PER_SHARD records of RECORD_SIZE bytes over KEYS keys from
#    an in-process read sink (fault-proxy's Upstream::ReadSink on its own
#    thread), plain and KPL-aggregated, in four modes:
#      sdk                      bare aws-sdk-kinesis GetRecords loop (HTTP + JSON + base64)
#      polling                  kcl PollingSource per shard (+ deaggregation, prefetch)
#      scheduler, no checkpoint kcl Scheduler, leases in DynamoDB Local, no checkpoints
#      scheduler                the same, one checkpoint per batch (the real thing)
#    Every run is pinned to one core (taskset -c $CPU): the consumer's runtime
#    and the sink's thread share it, so "user rec/s" is a one-core figure with
#    the sink included; "consumer µs/rec" leaves the sink's thread CPU out
#    (process CPU from /proc/self/stat minus the sink thread's).
#    DynamoDB Local runs in its own (unpinned) JVM: its CPU is not counted.
# 2. `cargo run --release -p kinesis-kcl --example rebalance_bench`: 3 Scheduler workers
#    on a 12-shard kinesis-mock stream (failover 3 s): time to an even 4/4/4
#    split, failover after a worker's task is aborted, graceful hand-back.
#
#   scripts/bench-consume.sh                    # everything
#   ONLY=consume scripts/bench-consume.sh       # consume | rebalance (comma list)
#   SCALE=0.1 scripts/bench-consume.sh          # a quick look
#
# Env: SHARDS (4), RECORDS_PER_SHARD (1000000; AGG_RECORDS_PER_SHARD, default
#      4000000, for the aggregated workload, which reads faster), RECORD_SIZE (100), KEYS (1000),
#      CPU (1: the core to pin to), MODES (sdk,polling,scheduler-nocp,scheduler),
#      WORKLOADS (plain,aggregated), REPEATS (5), TAKE_INTERVAL (comma list of
#      half = failover / 2 | default = 2 x (failover + 25 ms) | milliseconds; default half),
#      SCALE (multiplies RECORDS_PER_SHARD), SKIP_BUILD=1, CARGO_BUILD_JOBS (1),
#      CARGO_TARGET_DIR.
# The 1-minute load average is printed with each row: figures are only
# comparable at similar loads.
set -euo pipefail
# shellcheck source=scripts/bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"

ONLY="${ONLY:-consume,rebalance}"
SHARDS="${SHARDS:-4}"
RECORD_SIZE="${RECORD_SIZE:-100}"
KEYS="${KEYS:-1000}"
CPU="${CPU:-1}"
MODES="${MODES:-sdk,polling,scheduler-nocp,scheduler}"
WORKLOADS="${WORKLOADS:-plain,aggregated}"
REPEATS="${REPEATS:-5}"
TAKE_INTERVAL="${TAKE_INTERVAL:-half}"
JOBS="${CARGO_BUILD_JOBS:-1}"

RECORDS_PER_SHARD="$(scaled "${RECORDS_PER_SHARD:-1000000}")"
AGG_RECORDS_PER_SHARD="$(scaled "${AGG_RECORDS_PER_SHARD:-4000000}")"

log "load before: $(loadavg) on $(nproc) cores"

if [ -z "${SKIP_BUILD:-}" ]; then
  (cd "$REPO" && cargo build --release -j "$JOBS" -p kinesis-cat >&2) ||
    { log "cargo build failed"; exit 1; }
  if want rebalance; then
    (cd "$REPO" && cargo build --release -j "$JOBS" -p kinesis-kcl --example rebalance_bench >&2) ||
      { log "cargo build of the example failed"; exit 1; }
  fi
fi
need_bins "$CAT"

# Both parts need the emulators (scheduler mode: DynamoDB Local; rebalance: both).
"$REPO/scripts/emulators.sh" start >&2
eval "$("$REPO/scripts/emulators.sh" env)"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM
failed=0

if want consume; then
  RESULTS="$WORK/consume.jsonl"
  : >"$RESULTS"
  IFS=, read -r -a workloads <<<"$WORKLOADS"
  IFS=, read -r -a modes <<<"$MODES"
  for workload in "${workloads[@]}"; do
    extra=(--records-per-shard "$RECORDS_PER_SHARD")
    [ "$workload" = aggregated ] && extra=(--aggregated --records-per-shard "$AGG_RECORDS_PER_SHARD")
    for mode in "${modes[@]}"; do
      args=(perf consume --shards "$SHARDS" --record-size "$RECORD_SIZE" --keys "$KEYS" "${extra[@]}")
      case "$mode" in
        scheduler-nocp) args+=(--mode scheduler --no-checkpoint) ;;
        *) args+=(--mode "$mode") ;;
      esac
      if out="$(taskset -c "$CPU" "$CAT" "${args[@]}" 2>"$WORK/err")" &&
        tail -n 1 <<<"$out" | jq -e . >/dev/null 2>&1; then
        tail -n 1 <<<"$out" | jq -c --arg workload "$workload" --arg name "$mode" \
          '. + {workload: $workload, name: $name}' >>"$RESULTS"
        tail -n 1 "$WORK/err" >&2
      else
        log "$workload / $mode failed:"
        cat "$WORK/err" >&2
        failed=1
      fi
    done
  done
  if [ -s "$RESULTS" ]; then
    echo "### perf consume: $SHARDS shards of $RECORD_SIZE-byte records over $KEYS keys ($RECORDS_PER_SHARD per shard plain, $AGG_RECORDS_PER_SHARD aggregated), pinned to CPU $CPU"
    echo
    jq -rs '
      def f(d): if . == null then "-" else (. * pow(10; d) | round / pow(10; d) | tostring) end;
      def mode_name: if .name == "scheduler-nocp" then "scheduler, no checkpoint" else .name end;
      "| workload | mode | user records | s | user rec/s (1 core, sink incl.) | MB/s | Kinesis records | GetRecords | batches | checkpoints | process µs/rec | sink µs/rec | consumer µs/rec | consumer rec per CPU-s | peak RSS MiB (sink data incl.) | load |",
      "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
      (.[] | "| \(.workload) | \(mode_name) | \(.user_records) | \(.seconds | f(2)) | \(.user_records_per_sec | round) | \(.mb_per_sec | f(1)) | \(.kinesis_records) | \(.get_records_calls) | \(.batches) | \(.checkpoints) | \(.process_cpu_us_per_record | f(3)) | \(.sink_cpu_us_per_record | f(3)) | \(.consumer_cpu_us_per_record | f(3)) | \(.consumer_records_per_cpu_sec | round) | \(.peak_rss_mib | f(0)) | \(.load1) |")
    ' "$RESULTS" || failed=1
    echo
  fi
fi

if want rebalance; then
  IFS=, read -r -a takes <<<"$TAKE_INTERVAL"
  for take in "${takes[@]}"; do
    echo "### rebalance_bench: 12 shards, 3 workers, failover 3 s, take interval $take, $REPEATS repeats"
    echo
    if (cd "$REPO" && cargo run -q --release -j "$JOBS" -p kinesis-kcl --example rebalance_bench -- \
      --repeats "$REPEATS" --take-interval "$take") >"$WORK/rebalance.out" 2>"$WORK/rebalance.err"; then
      grep '^|' "$WORK/rebalance.out"
      echo
      grep -m1 'shards,' "$WORK/rebalance.err" >&2 || true
    else
      log "rebalance_bench ($take) failed:"
      cat "$WORK/rebalance.err" >&2
      failed=1
    fi
  done
fi

log "load after: $(loadavg)"
exit "$failed"
