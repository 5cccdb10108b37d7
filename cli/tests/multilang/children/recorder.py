#!/usr/bin/env python3
"""A record processor speaking the MultiLangDaemon protocol directly (no client library), so
the tests control every byte: it appends each message it gets, and each checkpoint reply, to
$EVENTS as JSON lines, checkpoints after every batch, and misbehaves as $FAULT says:

  crash           exits in the middle of its first batch (once per working directory)
  garbage         writes free text, blank lines, broken JSON and unknown actions around its answers
  hang            never answers its first batch (once per working directory)
  bad_checkpoint  first asks for three invalid checkpoints, then a valid one
  slow            takes $SLOW seconds over each batch
"""
import base64
import json
import os
import sys
import time

EVENTS = os.environ["EVENTS"]
FAULT = os.environ.get("FAULT", "")
SLOW = float(os.environ.get("SLOW", "0"))


def event(**fields):
    fields["pid"] = os.getpid()
    fields["t"] = time.time()
    with open(EVENTS, "a") as out:
        out.write(json.dumps(fields) + "\n")


def send(message):
    if FAULT == "garbage":
        sys.stdout.write("some free text\n\n{broken json\n" + json.dumps({"action": "surprise"}) + "\n")
    sys.stdout.write("\n" + json.dumps(message) + "\n")
    sys.stdout.flush()


def once(marker):
    """True the first time in this working directory."""
    if os.path.exists(marker):
        return False
    open(marker, "w").close()
    return True


def checkpoint(shard, sequence_number=None, sub_sequence_number=None):
    send({"action": "checkpoint", "sequenceNumber": sequence_number, "subSequenceNumber": sub_sequence_number})
    reply = json.loads(sys.stdin.readline())
    event(shard=shard, action="checkpointReply", reply=reply)
    return reply


def main():
    shard = None
    for line in sys.stdin:
        message = json.loads(line)
        action = message["action"]
        if action == "initialize":
            shard = message["shardId"]
            event(shard=shard, action=action, message=message)
        elif action == "processRecords":
            records = message["records"]
            event(
                shard=shard,
                action=action,
                keys=[r["partitionKey"] for r in records],
                data=[base64.b64decode(r["data"]).decode() for r in records],
                last=[records[-1]["sequenceNumber"], records[-1]["subSequenceNumber"]] if records else None,
                millisBehindLatest=message["millisBehindLatest"],
            )
            if FAULT == "crash" and once("crashed"):
                sys.stdout.write("half a li")
                sys.stdout.flush()
                event(shard=shard, action="crash")
                os._exit(3)
            if FAULT == "hang" and once("hung"):
                event(shard=shard, action="hang")
                time.sleep(3600)
            if FAULT == "bad_checkpoint" and once("bad_checkpoints"):
                checkpoint(shard, "not-a-number", None)
                checkpoint(shard, "9" * 60, 0)
                checkpoint(shard, records[-1]["sequenceNumber"], -1)
            if SLOW:
                time.sleep(SLOW)
            checkpoint(shard)
        elif action in ("shardEnded", "shutdownRequested"):
            event(shard=shard, action=action)
            checkpoint(shard)
        else:
            event(shard=shard, action=action)
        send({"action": "status", "responseFor": action})
    event(shard=shard, action="eof")


if __name__ == "__main__":
    main()
