#!/usr/bin/env bash
# The main job, for a fresh machine: start the local emulators (kinesis-mock, DynamoDB Local),
# produce 20,000 records with the producer library and consume them back with two consumer
# workers sharing the shards (examples/produce_consume.rs), then the same through the
# command line: kinesis-cat produce | kinesis-cat consume, and kinesis-cat agg on a sample.
# Stops the emulators however it ends.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

scripts/emulators.sh install
trap 'scripts/emulators.sh stop' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
scripts/emulators.sh start
eval "$(scripts/emulators.sh env)"

stream="demo-$(date +%s)"
echo "== producer and consumer libraries against kinesis-mock ($AWS_ENDPOINT_URL_KINESIS) and DynamoDB Local"
cargo run --quiet -p kinesis-examples --example produce_consume -- "$stream"

echo
echo "== the same through the command line: kinesis-cat produce, then kinesis-cat consume"
cargo build --quiet -p kinesis-cat
bin="${CARGO_TARGET_DIR:-$REPO/target}/debug/kinesis-cat"
seq 1 1000 | sed 's/^/cli line /' | "$bin" produce "$stream" --partition-key cli
"$bin" consume "$stream" --application "$stream-cli" --from trim-horizon --idle-exit 3 --idle-millis 200 \
  | grep -c "^cli line" | sed "s/^/lines sent by kinesis-cat produce and read back by kinesis-cat consume (of 1000): /"
"$bin" leases --application "$stream-cli"

echo
echo "== kinesis-cat agg encode | kinesis-cat agg decode on examples/data/sample.jsonl"
"$bin" agg encode <examples/data/sample.jsonl | tee /dev/stderr | "$bin" agg decode
