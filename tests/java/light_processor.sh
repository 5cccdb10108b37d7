#!/bin/sh
# A minimal MultiLangDaemon record processor for the scale benchmarks (scripts/bench-leases.sh),
# where one Python process per shard would not fit (1,000 leases: 12 MB each): POSIX sh,
# about 1.7 MB per shard. It answers every action, checkpoints after every batch and at shard
# end, and appends one JSON line per initialize and per batch to $KINESIS_RS_JAVA_EVENTS
# (the harness's format: {"event": "initialize" | "batch", "shard", "time", "worker", "pid"}).
#
# Every message from the daemon starts with its action: {"action":"processRecords",...}.
shard=""
now() { date +%s.%N; }
log() { # <event>
  printf '{"event":"%s","shard":"%s","time":%s,"worker":"%s","pid":%s}\n' \
    "$1" "$shard" "$(now)" "$KINESIS_RS_JAVA_WORKER" "$$" >>"$KINESIS_RS_JAVA_EVENTS"
}
status() { # <action>
  printf '\n{"action":"status","responseFor":"%s"}\n' "$1"
}
checkpoint() {
  printf '\n{"action":"checkpoint","sequenceNumber":null,"subSequenceNumber":null}\n'
  # The daemon's answer: {"action":"checkpoint",...,"error":...}; nothing to do with it here.
  read -r _reply
}
while read -r line; do
  action=${line#*\"action\":\"}
  action=${action%%\"*}
  case "$action" in
    initialize)
      shard=${line#*\"shardId\":\"}
      shard=${shard%%\"*}
      log initialize
      ;;
    processRecords)
      log batch
      checkpoint
      ;;
    shardEnded)
      checkpoint
      ;;
  esac
  [ -n "$action" ] && status "$action"
done
