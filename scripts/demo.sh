#!/usr/bin/env bash
# The main job, for a fresh machine: start the local emulators, produce aggregated records to
# Kinesis and consume them back (examples/emulator_roundtrip.rs), then show `kinesis-cat agg`
# on a sample. Stops the emulators however it ends.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

scripts/emulators.sh install
trap 'scripts/emulators.sh stop' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
scripts/emulators.sh start
eval "$(scripts/emulators.sh env)"

echo "== produce to and consume from kinesis-mock at $AWS_ENDPOINT_URL_KINESIS"
cargo run --quiet -p kinesis-examples --example emulator_roundtrip

echo
echo "== kinesis-cat agg encode | kinesis-cat agg decode on examples/data/sample.jsonl"
cargo build --quiet -p kinesis-cat
bin="${CARGO_TARGET_DIR:-$REPO/target}/debug/kinesis-cat"
"$bin" agg encode <examples/data/sample.jsonl | tee /dev/stderr | "$bin" agg decode
