#!/usr/bin/env bash
# The main job, for a fresh machine:
#   1. starts the local emulators (kinesis-mock, DynamoDB Local) unless AWS_ENDPOINT_URL_KINESIS
#      and AWS_ENDPOINT_URL_DYNAMODB already name endpoints (then it uses those);
#   2. examples/demo.rs: a 4-shard stream, a producer, two consumer workers of one application;
#      a shard split and a worker replaced while records flow; live progress on stderr, then a
#      summary (produced, consumed, duplicates, lost) on stdout;
#   3. the same stream model through the command line: kinesis-cat produce | consume, and
#      kinesis-cat agg on a sample.
# Stops the emulators it started however it ends. Stdout and stderr can be redirected to files.
#
#   scripts/demo.sh [--records N] [--rate PER_SEC]     (arguments go to the demo example)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

if [[ -z "${AWS_ENDPOINT_URL_KINESIS:-}" || -z "${AWS_ENDPOINT_URL_DYNAMODB:-}" ]]; then
  scripts/emulators.sh install
  if ! scripts/emulators.sh status >/dev/null 2>&1; then
    trap 'scripts/emulators.sh stop' EXIT
  fi
  trap 'exit 130' INT
  trap 'exit 143' TERM
  scripts/emulators.sh start
  eval "$(scripts/emulators.sh env)"
fi
echo "Kinesis: $AWS_ENDPOINT_URL_KINESIS, DynamoDB: $AWS_ENDPOINT_URL_DYNAMODB"

echo "== building (the first build of the AWS SDK takes a few minutes)"
cargo build --quiet -p kinesis-examples --example demo --example hello_producer
cargo build --quiet -p kinesis-cat
target="${CARGO_TARGET_DIR:-$REPO/target}/debug"

echo
echo "== producer and consumer libraries: 4 shards, 2 workers, a split and a worker replaced"
"$target/examples/demo" "$@"

echo
echo "== the command line: kinesis-cat produce, then kinesis-cat consume"
bin="$target/kinesis-cat"
stream="demo-cli-$(date +%s)-$$"
# hello_producer creates the stream (2 shards) and sends it one record.
STREAM_NAME="$stream" "$target/examples/hello_producer" "hello from the demo" >/dev/null
seq 1 1000 | sed 's/^/cli line /' | "$bin" produce "$stream" --partition-key cli
"$bin" consume "$stream" --application "$stream-app" --from trim-horizon --idle-exit 3 --idle-millis 200 |
  grep -c "^cli line" | sed "s/^/lines sent by kinesis-cat produce and read back by kinesis-cat consume (of 1000): /"
"$bin" leases --application "$stream-app"

echo
echo "== kinesis-cat agg encode | kinesis-cat agg decode on examples/data/sample.jsonl"
encoded="$(mktemp)"
"$bin" agg encode <examples/data/sample.jsonl >"$encoded"
echo "$(wc -l <examples/data/sample.jsonl) records -> one aggregate of $(wc -c <"$encoded") bytes (base64); decoded:"
"$bin" agg decode <"$encoded"
rm -f "$encoded"
