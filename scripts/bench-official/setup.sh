#!/usr/bin/env bash
# Installs the official KPL aggregation libraries used as references by the
# benchmarks and compatibility tests in this folder. Idempotent: a second run
# that finds everything in place only checks and returns.
#
#   Python: venv at $REPO/.cache/venv with aws-kinesis-agg==1.2.3,
#           protobuf==6.33.5 (upb backend; 7.36.2 works too, with the same
#           output bytes) and six==1.17.0 (aws_kinesis_agg imports six but
#           does not declare it). scripts/test.sh creates the same venv with
#           the same pins and stamp file: keep the two in step, or each
#           script will reinstall its own protobuf over the other's.
#           Plus, in the same venv, the producers scripts/bench-produce.sh
#           compares ours with (PRODUCER_PINS below, fully pinned with their
#           dependencies): aiokpl 0.2.0 (asyncio KPL-equivalent over
#           aiobotocore) and boto3 (the put_record-per-record loop). These use
#           a second stamp file, so scripts/test.sh's stamp stays as it is.
#   Node:   scripts/bench-official/node_modules from package-lock.json
#           (aws-kinesis-agg 4.2.8).
#
# Env: PYTHON (default python3) picks the interpreter for a new venv.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="$REPO/.cache/venv"
PY_PINS=(aws-kinesis-agg==1.2.3 protobuf==6.33.5 six==1.17.0)
STAMP="$VENV/.kinesis-rs-requirements" # same stamp (and contents) as scripts/test.sh
# aiokpl 0.2.0 requires aiobotocore>=2.13, which pins botocore; boto3 is pinned
# to the botocore that aiobotocore 3.10.0 accepts. The rest are their
# dependencies as resolved on Python 3.11 (six comes from PY_PINS).
PRODUCER_PINS=(
  aiokpl==0.2.0 aiobotocore==3.10.0 botocore==1.43.117 boto3==1.43.117
  s3transfer==0.19.3 aiohttp==3.14.5 aiohappyeyeballs==2.7.1 aioitertools==0.13.0
  aiosignal==1.4.0 anyio==4.16.0 attrs==26.1.0 frozenlist==1.8.0 idna==3.20
  jmespath==1.1.0 multidict==7.2.1 propcache==0.5.4 python-dateutil==2.9.0.post0
  sortedcontainers==2.4.0 typing-extensions==4.16.0 urllib3==2.8.0 wrapt==2.5.2
  yarl==1.25.1
)
PRODUCER_STAMP="$VENV/.bench-produce-requirements"
NODE_PIN=4.2.8

# --- Python ---------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating venv $VENV" >&2
  mkdir -p "$REPO/.cache"
  "${PYTHON:-python3}" -m venv "$VENV"
fi
# pip freeze spells names as installed (aws_kinesis_agg vs aws-kinesis-agg):
# compare with - and _ folded and case ignored.
norm() { tr 'A-Z_' 'a-z-'; }
frozen="$("$VENV/bin/python" -m pip freeze --disable-pip-version-check 2>/dev/null | norm)"
# missing_pins PIN...: sets missing to the pins that pip freeze ($frozen) does not list.
missing_pins() {
  missing=()
  local pin
  for pin in "$@"; do
    grep -qxF "$(printf '%s' "$pin" | norm)" <<<"$frozen" || missing+=("$pin")
  done
}
missing_pins "${PY_PINS[@]}"
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: pip installing ${missing[*]}" >&2
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "${PY_PINS[@]}"
  frozen="$("$VENV/bin/python" -m pip freeze --disable-pip-version-check 2>/dev/null | norm)"
fi
[ "$(cat "$STAMP" 2>/dev/null || true)" = "${PY_PINS[*]}" ] || printf '%s' "${PY_PINS[*]}" >"$STAMP"
"$VENV/bin/python" -c 'import aws_kinesis_agg.aggregator, aws_kinesis_agg.deaggregator'

# The producers for scripts/bench-produce.sh. PY_PINS go on the same command
# line so that pip keeps them as they are.
missing_pins "${PRODUCER_PINS[@]}"
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: pip installing ${missing[*]}" >&2
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "${PRODUCER_PINS[@]}" "${PY_PINS[@]}"
fi
[ "$(cat "$PRODUCER_STAMP" 2>/dev/null || true)" = "${PRODUCER_PINS[*]}" ] ||
  printf '%s' "${PRODUCER_PINS[*]}" >"$PRODUCER_STAMP"
"$VENV/bin/python" -c 'import aiokpl, boto3'

# --- Node -----------------------------------------------------------------
cd "$HERE"
installed="$(node -p 'require("./node_modules/aws-kinesis-agg/package.json").version' 2>/dev/null || true)"
if [ "$installed" != "$NODE_PIN" ]; then
  echo "setup: npm ci in $HERE" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
fi
node -e 'require("aws-kinesis-agg")'
echo "setup: ok (venv $VENV; node_modules $HERE/node_modules)" >&2
