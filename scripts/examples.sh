#!/usr/bin/env bash
# Runs every example in examples/ against the endpoints in the environment (scripts/test.sh
# starts the emulators and calls this) and checks what each prints. Fails on the first example
# that does not do what its documentation says.
#
#   eval "$(scripts/emulators.sh env)"; scripts/examples.sh
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
: "${AWS_ENDPOINT_URL_KINESIS:?start the emulators first: eval \"\$(scripts/emulators.sh env)\"}"

cargo build --quiet -p kinesis-examples --examples
bin="${CARGO_TARGET_DIR:-$REPO/target}/debug/examples"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fail() {
  echo "examples: $*" >&2
  exit 1
}
run() {
  local name="$1"
  shift
  local started=$SECONDS
  "$bin/$name" "$@" >"$work/$name.out" 2>"$work/$name.err" || {
    cat "$work/$name.err" >&2
    fail "$name exited with an error"
  }
  echo "  $name: ok ($((SECONDS - started)) s)"
}

echo "examples against $AWS_ENDPOINT_URL_KINESIS"
run aggregate_roundtrip

export STREAM_NAME="examples-$(date +%s)-$$"
export APPLICATION_NAME="$STREAM_NAME-app"
run hello_producer "the first message"
run hello_producer sensor-1 20 5 "a reading"
[[ "$(grep -c "^record .*: shard shardId-" "$work/hello_producer.out")" == 20 ]] ||
  fail "hello_producer printed no receipt for some of its 20 records"

run hello_consumer --idle-exit 2
[[ "$(grep -c '^Record: .*"source":"sensor-1".*, Partition Key: sensor-1, Shard: shardId-' "$work/hello_consumer.out")" == 20 ]] ||
  fail "hello_consumer did not print the 20 records of sensor-1"
grep -q '"message":"the first message"' "$work/hello_consumer.out" || fail "hello_consumer missed the first message"

# The worker, stopped the way an operator stops it: SIGINT once it has processed everything.
export APPLICATION_NAME="$STREAM_NAME-worker"
"$bin/worker" --every 1 >"$work/worker.out" 2>"$work/worker.err" &
worker=$!
checkpointed() { # records checkpointed so far, summed over the shards' latest lines
  awk '/ in all$/ { n[$1] = $(NF - 2) } END { s = 0; for (k in n) s += n[k]; print s }' "$work/worker.out"
}
for _ in $(seq 1 600); do
  [[ "$(checkpointed)" == 21 ]] && break
  sleep 0.1
done
kill -INT "$worker"
wait "$worker" || {
  cat "$work/worker.err" >&2
  fail "worker did not exit cleanly on SIGINT"
}
grep -q "shut down gracefully after 21 records" "$work/worker.out" || {
  cat "$work/worker.out" >&2
  fail "worker did not process and checkpoint the 21 records before exiting"
}
echo "  worker: ok (SIGINT, graceful)"

unset STREAM_NAME APPLICATION_NAME
run json_events
grep -q "orders read: 200 of 200, read twice: 0, dead letters: 2" "$work/json_events.out" ||
  fail "json_events: $(tail -1 "$work/json_events.out")"

run lambda_handler kinesis-lambda/tests/data/aggregated.json
[[ "$(tail -1 "$work/lambda_handler.out")" == '{"batchItemFailures":[]}' ]] ||
  fail "lambda_handler: $(tail -1 "$work/lambda_handler.out")"
run lambda_handler kinesis-lambda/tests/data/corrupt.json
grep -q "^dead letter: " "$work/lambda_handler.err" || fail "lambda_handler set no corrupt aggregate aside"

run demo --records 6000 --rate 1500
grep -q "lost:        0" "$work/demo.out" || fail "demo: $(cat "$work/demo.out")"
