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
# shellcheck source=scripts/bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"

BIN="$TARGET_DIR/release/examples/cold_start"
RUNS="${RUNS:-9}"

if [ -z "${SKIP_BUILD:-}" ]; then
  (cd "$REPO" && cargo build --release -j "${CARGO_BUILD_JOBS:-1}" -p kpl --example cold_start -p fault-proxy --bin fault-proxy >&2)
fi
need_bins "$BIN" "$PROXY"
: "${AWS_ACCESS_KEY_ID:=testingAccessKey}" "${AWS_SECRET_ACCESS_KEY:=testing-secret}" "${AWS_REGION:=us-east-1}"
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION

WORK="$(mktemp -d)"
trap 'stop_sink; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

start_sink
ENDPOINTS=("sink $ENDPOINT")
if [ -n "${AWS_ENDPOINT_URL_KINESIS:-}" ]; then
  STREAM="lambda-cold-start-$$-$(date +%s)"
  "$BIN" --endpoint "$AWS_ENDPOINT_URL_KINESIS" --stream "$STREAM" --create 4
  ENDPOINTS+=("kinesis-mock $AWS_ENDPOINT_URL_KINESIS")
else
  log "AWS_ENDPOINT_URL_KINESIS is not set: measuring the sink only"
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
log "$RUNS runs per row, medians; load $(loadavg) on $(nproc) cores"
