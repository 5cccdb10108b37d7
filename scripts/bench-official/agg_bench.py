#!/usr/bin/env python3
"""Throughput benchmark of the official Python KPL aggregation library.

Measures `aws-kinesis-agg` 1.2.3 (PyPI, module `aws_kinesis_agg`) as the
reference point for our own aggregator/deaggregator (`kinesis-cat perf agg`).
Run it inside the venv made by scripts/bench-official/setup.sh:

    .cache/venv/bin/python scripts/bench-official/agg_bench.py \
        --record-size 100 --keys 1000 --records 500000 [--runs 5]

The workload is built in memory before any timing: N distinct random
16-character ASCII partition keys, and per record fresh random data bytes of
the given size and a key picked uniformly at random.

Timed phases (each run; the median of --runs runs is reported):
  (a) aggregate: feed every user record to RecordAggregator(max_size=51200)
      (the KPL default AggregationMaxSize; the library's own default is 1 MiB)
      and collect every finished aggregate as the (partition key, explicit hash
      key, bytes) triple that AggRecord.get_contents() returns, i.e. including
      protobuf serialisation and the MD5 trailer; the last partial aggregate
      is flushed with clear_and_get().
  (b) deaggregate: iter_deaggregate_records(aggregates, data_format='Boto3'),
      the library's cheapest entry point (raw bytes in, so no base64 decoding
      of the input; the library still base64-encodes every user record's data
      on output, which it always does). Every yielded user record is counted
      and the count is checked.
Outside the timing, the first run's output is checked record by record
against the input (partition key and data).

The last stdout line is a JSON object with the figures; MB = 10^6 bytes of
user data (records * record_size).
"""

import argparse
import base64
import gc
import json
import os
import random
import statistics
import string
import sys
import time

try:
    from aws_kinesis_agg.aggregator import RecordAggregator
    from aws_kinesis_agg.deaggregator import iter_deaggregate_records
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(
        "cannot import aws_kinesis_agg (%s); run scripts/bench-official/setup.sh "
        "and use .cache/venv/bin/python" % e
    )

IMPL = "python aws-kinesis-agg 1.2.3"
KPL_MAX_AGG_SIZE = 51200
KEY_ALPHABET = string.ascii_letters + string.digits


def build_workload(record_size, n_keys, n_records, seed):
    rng = random.Random(seed)
    keys = set()
    while len(keys) < n_keys:
        keys.add("".join(rng.choices(KEY_ALPHABET, k=16)))
    keys = sorted(keys)
    rng.shuffle(keys)
    pks = rng.choices(keys, k=n_records)
    # os.urandom per record: every record has its own random bytes
    return [(pk, os.urandom(record_size)) for pk in pks]


def aggregate(records):
    agg = RecordAggregator(max_size=KPL_MAX_AGG_SIZE)
    out = []
    append = out.append
    add = agg.add_user_record
    for pk, data in records:
        full = add(pk, data)
        if full is not None:
            append(full.get_contents())
    last = agg.clear_and_get()
    if last is not None:
        append(last.get_contents())
    return out


def to_boto3_records(aggregates):
    # Shape of a boto3 GetRecords record; built outside the timing.
    return [
        {
            "SequenceNumber": str(i),
            "PartitionKey": pk,
            "ApproximateArrivalTimestamp": 0,
            "Data": data,
        }
        for i, (pk, _ehk, data) in enumerate(aggregates)
    ]


def deaggregate(kinesis_records):
    n = 0
    for _ in iter_deaggregate_records(kinesis_records, data_format="Boto3"):
        n += 1
    return n


def verify(records, kinesis_records):
    got = iter_deaggregate_records(kinesis_records, data_format="Boto3")
    n = 0
    for (pk, data), ur in zip(records, got):
        k = ur["kinesis"]
        if k["partitionKey"] != pk or base64.b64decode(k["data"]) != data:
            sys.exit("verification failed at user record %d" % n)
        n += 1
    if n != len(records):
        sys.exit("verification failed: %d of %d records" % (n, len(records)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--record-size", type=int, required=True)
    ap.add_argument("--keys", type=int, required=True)
    ap.add_argument("--records", type=int, required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if min(a.record_size, a.keys, a.records, a.runs) < 1:
        ap.error("all arguments must be >= 1")

    records = build_workload(a.record_size, a.keys, a.records, a.seed)

    agg_times, deagg_times = [], []
    n_aggs = agg_bytes = max_agg = 0
    for run in range(a.runs):
        gc.collect()
        t0 = time.perf_counter()
        aggregates = aggregate(records)
        t1 = time.perf_counter()
        agg_times.append(t1 - t0)

        kinesis_records = to_boto3_records(aggregates)
        del aggregates
        if run == 0:
            verify(records, kinesis_records)
            n_aggs = len(kinesis_records)
            agg_bytes = sum(len(r["Data"]) for r in kinesis_records)
            max_agg = max(len(r["Data"]) for r in kinesis_records)
        gc.collect()
        t0 = time.perf_counter()
        n = deaggregate(kinesis_records)
        t1 = time.perf_counter()
        deagg_times.append(t1 - t0)
        if n != a.records:
            sys.exit("deaggregated %d user records, expected %d" % (n, a.records))
        del kinesis_records
        print(
            "run %d: aggregate %.3fs, deaggregate %.3fs" % (run + 1, agg_times[-1], deagg_times[-1]),
            file=sys.stderr,
        )

    ta = statistics.median(agg_times)
    td = statistics.median(deagg_times)
    user_mb = a.records * a.record_size / 1e6
    print(
        "# %d aggregates, %d bytes total, %.1f user records and %.0f bytes per aggregate on average, largest %d bytes"
        % (n_aggs, agg_bytes, a.records / n_aggs, agg_bytes / n_aggs, max_agg)
    )
    print(
        json.dumps(
            {
                "impl": IMPL,
                "record_size": a.record_size,
                "keys": a.keys,
                "records": a.records,
                "aggregate_records_per_sec": round(a.records / ta, 1),
                "deaggregate_records_per_sec": round(a.records / td, 1),
                "aggregate_mb_per_sec": round(user_mb / ta, 3),
                "deaggregate_mb_per_sec": round(user_mb / td, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
