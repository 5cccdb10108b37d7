#!/usr/bin/env python3
"""A record processor for the real Java KCL's MultiLangDaemon, used by the interop tests.

The daemon starts one of these per shard lease (``executableName`` in the properties file)
and talks to it on stdin/stdout through ``amazon_kclpy``. It writes everything Java delivers
and every lifecycle event as JSON lines to one file per worker, so a test can read exactly
what the Java KCL did:

    {"event": "initialize", "shard": ..., "sequence": "TRIM_HORIZON" | "<seq>", "sub": 0, ...}
    {"event": "record", "shard": ..., "sequence": ..., "sub": ..., "key": ..., "data": <base64>}
    {"event": "checkpoint", "shard": ..., "sequence": ... | null, "sub": ... | null, "error": null | "<name>"}
    {"event": "shard_ended" | "lease_lost" | "shutdown_requested", "shard": ...}

Every line also has "time" (seconds since the epoch, float), "worker" and "pid".

Environment (inherited from the daemon, set by the harness):
    KINESIS_RS_JAVA_EVENTS       the JSON-lines file to append to (required)
    KINESIS_RS_JAVA_WORKER       the worker's name, copied into every line
    KINESIS_RS_JAVA_CHECKPOINT   the checkpoint plan as JSON:
        {"mode": "every_batch"}                 checkpoint() after every batch (the default)
        {"mode": "never"}                       never checkpoint records
        {"mode": "at", "targets": {"<shard>": ["<seq>", <sub>], ...}}
            checkpoint after every batch until the batch that holds the shard's target
            record, checkpoint exactly at that record, then never again (shards without a
            target checkpoint after every batch)
        "shard_end": true|false (default true)  checkpoint() in shard_ended
        "shutdown": true|false (default false)  checkpoint() in shutdown_requested (only
                                                while this shard still checkpoints)
"""

import fcntl
import json
import os
import sys
import time

from amazon_kclpy import kcl
from amazon_kclpy.checkpoint_error import CheckpointError
from amazon_kclpy.v3 import processor


def _position(sequence, sub):
    return (int(sequence), int(sub or 0))


class EventLog:
    def __init__(self, path, worker):
        self._path = path
        self._worker = worker

    def write(self, event, **fields):
        fields.update(event=event, time=time.time(), worker=self._worker, pid=os.getpid())
        self.write_lines([fields])

    def write_lines(self, lines):
        """Appends whole lines under an exclusive lock: one child per shard shares the file."""
        text = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
        with open(self._path, "a", encoding="utf-8") as out:
            fcntl.flock(out, fcntl.LOCK_EX)
            out.write(text)
            out.flush()
            fcntl.flock(out, fcntl.LOCK_UN)


class RecordingProcessor(processor.RecordProcessorBase):
    def __init__(self, log, plan):
        self._log = log
        self._plan = plan
        self._mode = plan.get("mode", "every_batch")
        self._shard = None
        self._target = None
        # False once this shard made its last checkpoint (mode "at") or never checkpoints.
        self._checkpointing = self._mode != "never"

    def initialize(self, initialize_input):
        self._shard = initialize_input.shard_id
        targets = self._plan.get("targets", {}) if self._mode == "at" else {}
        target = targets.get(self._shard)
        if target is not None:
            self._target = _position(target[0], target[1])
        self._log.write(
            "initialize",
            shard=self._shard,
            sequence=initialize_input.sequence_number,
            sub=initialize_input.sub_sequence_number,
        )

    def _checkpoint(self, checkpointer, sequence=None, sub=None):
        error = None
        try:
            checkpointer.checkpoint(sequence, sub)
        except CheckpointError as e:
            error = e.value
        self._log.write("checkpoint", shard=self._shard, sequence=sequence, sub=sub, error=error)
        return error is None

    def process_records(self, process_records_input):
        now = time.time()
        lines = []
        target_in_batch = None
        for record in process_records_input.records:
            sub = record.sub_sequence_number
            lines.append(
                {
                    "event": "record",
                    "time": now,
                    "worker": self._log._worker,
                    "pid": os.getpid(),
                    "shard": self._shard,
                    "sequence": record.sequence_number,
                    "sub": sub,
                    "key": record.partition_key,
                    "data": record.data,
                }
            )
            if self._target is not None and _position(record.sequence_number, sub) == self._target:
                target_in_batch = (record.sequence_number, sub)
        if lines:
            self._log.write_lines(lines)
        if not self._checkpointing:
            return
        checkpointer = process_records_input.checkpointer
        if target_in_batch is not None:
            self._checkpoint(checkpointer, target_in_batch[0], target_in_batch[1])
            self._checkpointing = False
        elif self._target is not None and lines and _position(
            lines[-1]["sequence"], lines[-1]["sub"]
        ) > self._target:
            # Started past the target (it was checkpointed before): stay put.
            self._checkpointing = False
        else:
            self._checkpoint(checkpointer)

    def lease_lost(self, lease_lost_input):
        self._log.write("lease_lost", shard=self._shard)

    def shard_ended(self, shard_ended_input):
        self._log.write("shard_ended", shard=self._shard)
        if self._plan.get("shard_end", True):
            self._checkpoint(shard_ended_input.checkpointer)

    def shutdown_requested(self, shutdown_requested_input):
        self._log.write("shutdown_requested", shard=self._shard)
        if self._checkpointing and self._plan.get("shutdown", False):
            self._checkpoint(shutdown_requested_input.checkpointer)


def main():
    path = os.environ.get("KINESIS_RS_JAVA_EVENTS")
    if not path:
        sys.stderr.write("KINESIS_RS_JAVA_EVENTS is not set: the harness names the events file\n")
        sys.exit(2)
    plan = json.loads(os.environ.get("KINESIS_RS_JAVA_CHECKPOINT") or '{"mode": "every_batch"}')
    log = EventLog(path, os.environ.get("KINESIS_RS_JAVA_WORKER", ""))
    kcl.KCLProcess(RecordingProcessor(log, plan)).run()


if __name__ == "__main__":
    main()
