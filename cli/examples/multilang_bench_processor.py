#!/usr/bin/env python3
"""The record processor of the MultiLangDaemon benchmark (examples/multilang_bench.rs), the
same for the Java daemon and ours: amazon_kclpy's v3 API, every record's data decoded,
checkpoint() after every batch, and one line per event appended to $BENCH_EVENTS:
"initialize T", "first T" (the first record arrived), "batch COUNT T" (a batch processed and
checkpointed; COUNT records so far), "shutdown_requested T", "lease_lost T" (T: epoch seconds).
"""
import os
import time

from amazon_kclpy import kcl
from amazon_kclpy.v3 import processor


class Counter(processor.RecordProcessorBase):
    def __init__(self):
        self.count = 0
        self.bytes = 0
        self.out = open(os.environ["BENCH_EVENTS"], "a", buffering=1)

    def event(self, text):
        self.out.write("{} {}\n".format(text, time.time()))

    def initialize(self, initialize_input):
        self.event("initialize")

    def process_records(self, process_records_input):
        records = process_records_input.records
        if records and self.count == 0:
            self.event("first")
        for record in records:
            self.bytes += len(record.binary_data)
        self.count += len(records)
        process_records_input.checkpointer.checkpoint()
        self.event("batch {}".format(self.count))

    def lease_lost(self, lease_lost_input):
        self.event("lease_lost")

    def shard_ended(self, shard_ended_input):
        shard_ended_input.checkpointer.checkpoint()
        self.event("shard_ended")

    def shutdown_requested(self, shutdown_requested_input):
        shutdown_requested_input.checkpointer.checkpoint()
        self.event("shutdown_requested")


if __name__ == "__main__":
    kcl.KCLProcess(Counter()).run()
