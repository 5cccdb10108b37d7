# shellcheck shell=bash
# Sourced (not run) by the scripts/bench*.sh: where the repository and its release binaries are,
# and the helpers every benchmark script had written again (ONLY= and SCALE=, messages, the
# missing-binary check, a local `fault-proxy --sink`). Messages start with the sourcing script's
# name (bench-agg, bench-produce...).

BENCH="$(basename "$0" .sh)"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"

# The binaries the benchmarks run, as `cargo build --release` leaves them.
CAT="$TARGET_DIR/release/kinesis-cat"
PROXY="$TARGET_DIR/release/fault-proxy"

# The official libraries and producers ours is compared with (bench-official/setup.sh).
OFFICIAL="$HERE/bench-official"

# Multiplies every record count (scaled); 0.1 gives a quick look.
SCALE="${SCALE:-1}"

# want NAME: NAME is in the comma list ONLY (set by the sourcing script).
want() { [[ ",$ONLY," == *",$1,"* ]]; }

# scaled N: N x SCALE, at least 1.
scaled() { awk -v n="$1" -v s="$SCALE" 'BEGIN { n = int(n * s); print (n < 1 ? 1 : n) }'; }

# log MESSAGE...: one line on stderr, after the script's name.
log() { echo "$BENCH: $*" >&2; }

# loadavg: the 1-, 5- and 15-minute load averages (figures are only comparable at similar loads).
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# need_bins BIN...: exits when one of them has not been built.
need_bins() {
  local bin
  for bin in "$@"; do
    [ -x "$bin" ] || { log "$bin is missing (build it, or unset SKIP_BUILD)"; exit 1; }
  done
}

# start_sink [ARG...]: a fresh `fault-proxy --sink --shards 4 ARG...` with its output in
# $WORK/sink.out and $WORK/sink.err; sets SINK_PID and ENDPOINT (the URL it prints first), or
# exits when it prints none. stop_sink ends it (call it from the EXIT trap too).
SINK_PID=""
start_sink() {
  # Emptied before the start: the background redirection may come after the first read.
  : >"$WORK/sink.out"
  "$PROXY" --sink --shards 4 "$@" >"$WORK/sink.out" 2>"$WORK/sink.err" &
  SINK_PID=$!
  ENDPOINT=""
  for _ in $(seq 100); do
    ENDPOINT="$(head -n 1 "$WORK/sink.out")"
    [ -n "$ENDPOINT" ] && break
    kill -0 "$SINK_PID" 2>/dev/null || break
    sleep 0.05
  done
  if [ -z "$ENDPOINT" ]; then
    log "fault-proxy did not print its endpoint:"
    cat "$WORK/sink.err" >&2
    exit 1
  fi
}
stop_sink() {
  if [ -n "$SINK_PID" ]; then
    kill -TERM "$SINK_PID" 2>/dev/null || true
    wait "$SINK_PID" 2>/dev/null || true
    SINK_PID=""
  fi
}
