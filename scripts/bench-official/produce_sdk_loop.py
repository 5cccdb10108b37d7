#!/usr/bin/env python3
"""Producer throughput of the tutorial approach: boto3 `put_record`, one call per record,
in a loop, no aggregation, no batching; on the same workload as `kinesis-cat perf produce`.

Up to N records of B bytes over K random 16-character partition keys, sent to the Kinesis
endpoint in AWS_ENDPOINT_URL_KINESIS (or --endpoint), normally `fault-proxy --sink`. Stops
after N records or --max-seconds, whichever comes first, and reports the records it sent.
Every call is timed (the latency of a record is its put_record call).

The last line of stdout is a JSON report: impl, records, record_size, keys, aggregation,
seconds, user_records_per_sec, mb_per_sec, put_records_calls (0: it makes PutRecord
calls), put_record_calls, succeeded, failed, latency_ms_p50/p99/max, peak_rss_mib,
versions.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import string
import sys
import time

import boto3
import botocore
import botocore.config


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    i = min(int(len(sorted_values) * p), len(sorted_values) - 1)
    return sorted_values[i] * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", default=os.environ.get("AWS_ENDPOINT_URL_KINESIS"))
    p.add_argument("--stream", default="perf")
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--max-seconds", type=float, default=10.0,
                   help="stop after this long even if --records are not all sent (0: no limit)")
    p.add_argument("--record-size", type=int, default=100)
    p.add_argument("--keys", type=int, default=1_000)
    args = p.parse_args()
    if not args.endpoint:
        p.error("no endpoint: set AWS_ENDPOINT_URL_KINESIS or --endpoint")
    if args.records < 1 or args.keys < 1 or args.record_size < 1:
        p.error("--records, --keys and --record-size must be at least 1")

    rng = random.Random(1)
    alphabet = string.ascii_letters + string.digits
    keys = ["".join(rng.choices(alphabet, k=16)) for _ in range(args.keys)]
    pool = rng.randbytes(args.record_size * 64 + 1)
    slices = [pool[i * args.record_size : (i + 1) * args.record_size] for i in range(64)]

    client = boto3.client(
        "kinesis",
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        endpoint_url=args.endpoint,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testingAccessKey"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "x"),
        config=botocore.config.Config(retries={"mode": "standard"}),
    )
    # One call before the clock starts (endpoint resolution, connection set-up).
    client.put_record(StreamName=args.stream, Data=b"w", PartitionKey="warm-up")

    latencies: list[float] = []
    succeeded = failed = 0
    first_error = None
    limit = args.max_seconds if args.max_seconds > 0 else float("inf")
    put_record = client.put_record
    stream = args.stream
    randrange = rng.randrange
    nkeys = len(keys)
    now = time.perf_counter
    started = now()
    stop_at = started + limit
    sent = 0
    for i in range(args.records):
        t0 = now()
        if t0 >= stop_at:
            break
        try:
            put_record(StreamName=stream, Data=slices[i % 64], PartitionKey=keys[randrange(nkeys)])
            succeeded += 1
        except botocore.exceptions.ClientError as e:
            failed += 1
            first_error = first_error or str(e)
        latencies.append(now() - t0)
        sent += 1
    seconds = now() - started

    latencies.sort()
    report = {
        "impl": "boto3 put_record loop",
        "records": sent,
        "record_size": args.record_size,
        "keys": args.keys,
        "aggregation": False,
        "seconds": seconds,
        "user_records_per_sec": sent / seconds,
        "mb_per_sec": sent * args.record_size / 1e6 / seconds,
        "put_records_calls": 0,
        "put_record_calls": sent,
        "succeeded": succeeded,
        "failed": failed,
        "first_error": first_error,
        "latency_ms_p50": percentile(latencies, 0.50),
        "latency_ms_p99": percentile(latencies, 0.99),
        "latency_ms_max": percentile(latencies, 1.0),
        "peak_rss_mib": peak_rss_mib(),
        "python": sys.version.split()[0],
        "versions": {"boto3": boto3.__version__, "botocore": botocore.__version__},
    }
    print(
        f"boto3 loop: {sent} records of {args.record_size} B in {seconds:.1f} s: "
        f"{report['user_records_per_sec']:.0f} rec/s, {report['mb_per_sec']:.3f} MB/s, "
        f"p50 {report['latency_ms_p50']:.2f} ms p99 {report['latency_ms_p99']:.2f} ms, "
        f"peak RSS {report['peak_rss_mib']:.0f} MiB",
        file=sys.stderr,
    )
    print(json.dumps(report))
    if failed:
        sys.exit(f"boto3 loop: {failed} records failed (first: {first_error})")


if __name__ == "__main__":
    main()
