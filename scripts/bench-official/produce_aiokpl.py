#!/usr/bin/env python3
"""Producer throughput of aiokpl (PyPI, pinned 0.2.0 by setup.sh): the Python asyncio
KPL-equivalent, on the same workload as `kinesis-cat perf produce`.

N records of B bytes over K random 16-character partition keys, aggregation on (at most
51,200 bytes per aggregated record, aiokpl's default and the KPL's), sent to the Kinesis
endpoint in AWS_ENDPOINT_URL_KINESIS (or --endpoint), normally `fault-proxy --sink`.

The clock runs from the first put_record to the moment every record's outcome is
resolved. Like `kinesis-cat perf produce`, one record in 16 has its put-to-outcome latency
timed and the others are fire and forget; every outcome is still counted (succeeded or
failed), through a counting subclass of aiokpl's Outcome installed in aiokpl.producer
(aiokpl has no completion callback, and awaiting each outcome would cost one event-loop
turn per record).

The per-shard rate limits are raised 1000-fold (as `--rate-limit-percent 100000` does for
ours): the sink has no shard limits.

The last line of stdout is a JSON report: impl, records, record_size, keys, aggregation,
seconds, user_records_per_sec, mb_per_sec, succeeded, failed, latency_ms_p50/p99/max,
peak_rss_mib, versions.
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

import aiobotocore
import anyio
import aiokpl
import aiokpl.producer
from aiokpl import Config, Producer
from aiokpl.outcome import Outcome

LATENCY_SAMPLE = 16
# Kinesis' shard limits, which aiokpl's token buckets enforce per predicted shard.
SHARD_RECORDS_PER_SEC = 1_000.0
SHARD_BYTES_PER_SEC = 1_048_576.0


class Tally:
    succeeded = 0
    failed = 0
    first_error: str | None = None
    latencies: list[float] = []


class CountingOutcome(Outcome):
    """aiokpl's Outcome that also counts results and times one record in LATENCY_SAMPLE."""

    __slots__ = ("sent_at",)

    def __init__(self) -> None:
        super().__init__()
        self.sent_at: float | None = None

    def set_value(self, value) -> None:  # type: ignore[override]
        super().set_value(value)
        if value.success:
            Tally.succeeded += 1
        else:
            Tally.failed += 1
            if Tally.first_error is None and value.attempts:
                last = value.attempts[-1]
                Tally.first_error = f"{last.error_code}: {last.error_message}"
        if self.sent_at is not None:
            Tally.latencies.append(time.perf_counter() - self.sent_at)

    def set_exception(self, exc: BaseException) -> None:
        super().set_exception(exc)
        Tally.failed += 1
        if Tally.first_error is None:
            Tally.first_error = repr(exc)


def peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    i = min(int(len(sorted_values) * p), len(sorted_values) - 1)
    return sorted_values[i] * 1e3


async def run(args: argparse.Namespace) -> dict:
    rng = random.Random(1)
    alphabet = string.ascii_letters + string.digits
    keys = ["".join(rng.choices(alphabet, k=16)) for _ in range(args.keys)]
    pool = rng.randbytes(args.record_size * 64 + 1)
    slices = [pool[i * args.record_size : (i + 1) * args.record_size] for i in range(64)]

    factor = args.rate_limit_percent / 100.0
    config = Config(
        region=os.environ.get("AWS_REGION", "us-east-1"),
        aggregation_enabled=True,
        aggregation_max_size=args.max_aggregate,
        rate_limit_records_per_sec_per_shard=SHARD_RECORDS_PER_SEC * factor,
        rate_limit_bytes_per_sec_per_shard=SHARD_BYTES_PER_SEC * factor,
        max_outstanding_records=args.max_outstanding_records,
        endpoint_url=args.endpoint,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testingAccessKey"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "x"),
    )
    # Producer.put_record builds `Outcome()` from this module global.
    aiokpl.producer.Outcome = CountingOutcome  # type: ignore[misc]

    n = args.records
    randrange = rng.randrange
    nkeys = len(keys)
    async with Producer(config) as producer:
        # Build the per-stream pipeline (ListShards) before the clock starts, as ours
        # does in build(): one record, not counted.
        warm = await producer.put_record(stream=args.stream, partition_key="warm-up", data=b"w")
        await producer.flush()
        await warm.wait()
        Tally.succeeded = Tally.failed = 0

        put = producer.put_record
        stream = args.stream
        started = time.perf_counter()
        for i in range(n):
            data = slices[i % 64]
            key = keys[randrange(nkeys)]
            if i % LATENCY_SAMPLE == 0:
                sent = time.perf_counter()
                outcome = await put(stream=stream, partition_key=key, data=data)
                outcome.sent_at = sent
            else:
                await put(stream=stream, partition_key=key, data=data)
        # flush() hands everything buffered to the sender but does not wait for the
        # outcomes: wait for them all, with a bound.
        await producer.flush()
        deadline = time.perf_counter() + args.drain_timeout
        while Tally.succeeded + Tally.failed < n:
            if time.perf_counter() > deadline:
                raise SystemExit(
                    f"aiokpl: only {Tally.succeeded + Tally.failed} of {n} outcomes resolved "
                    f"{args.drain_timeout} s after the last put (outstanding "
                    f"{producer.outstanding_records})"
                )
            await anyio.sleep(0.001)
        seconds = time.perf_counter() - started

    lat = sorted(Tally.latencies)
    return {
        "impl": "aiokpl",
        "records": n,
        "record_size": args.record_size,
        "keys": args.keys,
        "aggregation": True,
        "max_aggregate_bytes": args.max_aggregate,
        "seconds": seconds,
        "user_records_per_sec": n / seconds,
        "mb_per_sec": n * args.record_size / 1e6 / seconds,
        "succeeded": Tally.succeeded,
        "failed": Tally.failed,
        "first_error": Tally.first_error,
        "latency_ms_p50": percentile(lat, 0.50),
        "latency_ms_p99": percentile(lat, 0.99),
        "latency_ms_max": percentile(lat, 1.0),
        "peak_rss_mib": peak_rss_mib(),
        "max_outstanding_records": args.max_outstanding_records,
        "python": sys.version.split()[0],
        "versions": {"aiokpl": aiokpl.__version__, "aiobotocore": aiobotocore.__version__},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", default=os.environ.get("AWS_ENDPOINT_URL_KINESIS"))
    p.add_argument("--stream", default="perf")
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--record-size", type=int, default=100)
    p.add_argument("--keys", type=int, default=1_000)
    p.add_argument("--max-aggregate", type=int, default=51_200)
    p.add_argument("--max-outstanding-records", type=int, default=100_000,
                   help="aiokpl's backpressure bound (its default)")
    p.add_argument("--rate-limit-percent", type=float, default=100_000,
                   help="per-shard rate limits as a percentage of the shard limits")
    p.add_argument("--drain-timeout", type=float, default=120.0,
                   help="seconds to wait for outcomes after the last put")
    args = p.parse_args()
    if not args.endpoint:
        p.error("no endpoint: set AWS_ENDPOINT_URL_KINESIS or --endpoint")
    if args.records < 1 or args.keys < 1 or args.record_size < 1:
        p.error("--records, --keys and --record-size must be at least 1")

    report = anyio.run(run, args)
    print(
        f"aiokpl: {report['records']} records of {report['record_size']} B: "
        f"{report['user_records_per_sec']:.0f} rec/s, {report['mb_per_sec']:.2f} MB/s, "
        f"p50 {report['latency_ms_p50']:.1f} ms p99 {report['latency_ms_p99']:.1f} ms, "
        f"peak RSS {report['peak_rss_mib']:.0f} MiB",
        file=sys.stderr,
    )
    print(json.dumps(report))
    if report["failed"]:
        sys.exit(f"aiokpl: {report['failed']} records failed (first: {report['first_error']})")


if __name__ == "__main__":
    main()
