#!/usr/bin/env bash
# A Lambda function's cold start with the producer (kpl/examples/cold_start.rs): the time
# from Producer::builder() to the first record acknowledged (send, flush, stored), with the
# shard listing in build() ("eager", the default) and without it ("lazy",
# list_shards_at_build(false)), each run a new process on a current-thread runtime. Against
# kinesis-mock (the endpoint in AWS_ENDPOINT_URL_KINESIS: eval "$(scripts/emulators.sh env)")
# and against `fault-proxy --sink --shards 4` (a fast local sink). Prints each run and a
# markdown table of medians.
#
#   scripts/bench-lambda.sh            # RUNS=9 per endpoint and mode
#   SKIP_BUILD=1 RUNS=5 scripts/bench-lambda.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
BIN="$TARGET_DIR/release/examples/cold_start"
PROXY="$TARGET_DIR/release/fault-proxy"
RUNS="${RUNS:-9}"

if [ -z "${SKIP_BUILD:-}" ]; then
  (cd "$REPO" && cargo build --release -j "${CARGO_BUILD_JOBS:-1}" -p kpl --example cold_start -p fault-proxy --bin fault-proxy >&2)
fi
for bin in "$BIN" "$PROXY"; do
  [ -x "$bin" ] || { echo "bench-lambda: $bin is missing (build it, or unset SKIP_BUILD)" >&2; exit 1; }
done
: "${AWS_ACCESS_KEY_ID:=testingAccessKey}" "${AWS_SECRET_ACCESS_KEY:=testing-secret}" "${AWS_REGION:=us-east-1}"
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION

WORK="$(mktemp -d)"
SINK_PID=""
cleanup() {
  if [ -n "$SINK_PID" ]; then kill -TERM "$SINK_PID" 2>/dev/null || true; wait "$SINK_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$PROXY" --sink --shards 4 >"$WORK/sink.out" 2>"$WORK/sink.err" &
SINK_PID=$!
SINK=""
for _ in $(seq 100); do
  SINK="$(head -n 1 "$WORK/sink.out")"
  [ -n "$SINK" ] && break
  kill -0 "$SINK_PID" 2>/dev/null || break
  sleep 0.05
done
[ -n "$SINK" ] || { echo "bench-lambda: fault-proxy did not print its endpoint:" >&2; cat "$WORK/sink.err" >&2; exit 1; }

ENDPOINTS=("sink $SINK")
if [ -n "${AWS_ENDPOINT_URL_KINESIS:-}" ]; then
  STREAM="lambda-cold-start-$$-$(date +%s)"
  "$BIN" --endpoint "$AWS_ENDPOINT_URL_KINESIS" --stream "$STREAM" --create 4
  ENDPOINTS+=("kinesis-mock $AWS_ENDPOINT_URL_KINESIS")
else
  echo "bench-lambda: AWS_ENDPOINT_URL_KINESIS is not set: measuring the sink only" >&2
fi

field() { tr ' ' '\n' | sed -n "s/^$1=//p"; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "| endpoint | mode | build() ms | builder() to first ack ms | runtime + SDK config ms | threads after the ack |"
echo "|---|---|---|---|---|---|"
for entry in "${ENDPOINTS[@]}"; do
  name="${entry%% *}"; url="${entry#* }"
  stream="${STREAM:-sink-stream}"
  [ "$name" = sink ] && stream=sink-stream
  : >"$WORK/eager"; : >"$WORK/lazy"
  for _ in $(seq "$RUNS"); do
    # Alternate the modes so that a change of load hits both alike.
    "$BIN" --endpoint "$url" --stream "$stream" | tee -a "$WORK/eager" >&2
    "$BIN" --endpoint "$url" --stream "$stream" --lazy | tee -a "$WORK/lazy" >&2
  done
  for mode in eager lazy; do
    build="$(field build_ms <"$WORK/$mode" | median)"
    ack="$(field first_ack_ms <"$WORK/$mode" | median)"
    init="$(field init_ms <"$WORK/$mode" | median)"
    threads="$(field threads_after_ack <"$WORK/$mode" | sort -u | tr '\n' ' ')"
    echo "| $name | $mode | $build | $ack | $init | ${threads% } |"
  done
done
echo "bench-lambda: $RUNS runs per row, medians; load $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores" >&2
