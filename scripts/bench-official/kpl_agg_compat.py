#!/usr/bin/env python3
"""Compatibility bridge to the official Python KPL aggregation library.

Used by Rust tests to check that our aggregation format is wire-compatible with
`aws-kinesis-agg` 1.2.3 (PyPI, module `aws_kinesis_agg`). Run it with the venv
made by scripts/bench-official/setup.sh (`.cache/venv/bin/python`).

JSON lines in on stdin, JSON lines out on stdout (data always base64):

  encode [--max-size BYTES]   (default 51200, the KPL's AggregationMaxSize)
      in:  {"partition_key": str, "explicit_hash_key": str|null, "data": b64}
           = user records, aggregated in input order with
           RecordAggregator(max_size).add_user_record(pk, data, ehk)
      out: {"partition_key": str, "explicit_hash_key": str|null, "data": b64}
           = one line per Kinesis-level record, i.e. AggRecord.get_contents()
           of every aggregate the library reports full, then of the last
           partial one (clear_and_get()).

  decode
      in:  {"partition_key": str, "data": b64, "sequence_number": str (optional)}
           = Kinesis-level records, each deaggregated with
           iter_deaggregate_records() (Lambda event record shape)
      out: {"partition_key": str, "explicit_hash_key": str|null, "data": b64}
           = one line per user record, exactly as the library reports it
           (explicit_hash_key null when the library gives None or "").

Behaviour of the official library worth knowing (checked by hand with 1.2.3):

Aggregation (aggregator.py):
  * A single user record is NOT sent plain: every emitted record, including a
    1-record aggregate, is magic + protobuf + MD5 (the KPL sends 1-record
    containers plain). Empty input emits nothing.
  * The Kinesis-level partition key / explicit hash key are those of the FIRST
    user record of the aggregate; the EHK is None when the first record has
    none, even if later ones have one (so such an aggregate is routed by the
    first partition key's hash).
  * max_size counts the whole record: magic (4) + protobuf + MD5 (16) <=
    max_size. A user record that alone exceeds max_size raises ValueError
    (this script then exits with status 1 and the message on stderr).
  * Data-loss bug: that check leaves out the 20 bytes of magic + MD5, so a user
    record whose encoded size S has max_size - 20 < S <= max_size is accepted
    but never fits: the library emits an EMPTY aggregate (20 bytes, partition
    key "" and EHK None, written out here as-is) and silently drops the
    record (RecordAggregator ignores the second add_user_record's False).
    E.g. --max-size 40 with a 30-byte record under a 1-char key emits one
    20-byte aggregate per input record and no user data at all.
  * Size-accounting bug: with str keys (the documented, normal usage and what
    this script passes) the key tables are looked up with the UTF-8 *bytes*
    but filled with the *str*, so a partition key / EHK already in the table is
    never found and every user record is charged the key-table entry again.
    Aggregates therefore close early (e.g. ~50,050 instead of 51,200 bytes with
    16-byte keys and 100-byte records). The output is still valid; only the
    split points differ from an exact packer. (Passing bytes keys avoids it.)
  * Empty-string EHK: counted in the size but not stored (treated as absent).

Deaggregation (deaggregator.py):
  * EHK BUG: a sub-record without explicit_hash_key_index is reported with the
    EHK table's entry 0 whenever the aggregate's EHK table is non-empty (the
    code tests `ehks[mr.explicit_hash_key_index] is not None`, and an absent
    proto2 optional uint64 reads as 0). Only when the table is empty is the EHK
    None. This script reports exactly that, so a test must expect
    explicit_hash_key == ehk_table[0] for such records in mixed aggregates.
  * Not aggregated (passed through as one record with its own partition key
    and data, explicit_hash_key null): data shorter than magic + 17 bytes,
    wrong magic, MD5 mismatch, or a protobuf DecodeError (including missing
    required fields).
  * A key index past the end of a key table: the library prints "ERROR: ..."
    to stderr and silently drops that sub-record and all later ones of the
    same aggregate (earlier ones were already yielded); no pass-through.
"""

import argparse
import base64
import json
import sys

try:
    from aws_kinesis_agg.aggregator import RecordAggregator
    from aws_kinesis_agg.deaggregator import iter_deaggregate_records
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(
        "cannot import aws_kinesis_agg (%s); run scripts/bench-official/setup.sh "
        "and use .cache/venv/bin/python" % e
    )

KPL_MAX_AGG_SIZE = 51200


def _str(v):
    if isinstance(v, bytes):
        return v.decode("utf-8")
    return v


def _emit(out, pk, ehk, data):
    out.write(
        json.dumps(
            {
                "partition_key": _str(pk),
                "explicit_hash_key": _str(ehk) or None,
                "data": _str(data) if isinstance(data, str) else base64.b64encode(data).decode("ascii"),
            }
        )
    )
    out.write("\n")


def _lines(stream):
    for n, line in enumerate(stream, 1):
        line = line.strip()
        if not line:
            continue
        try:
            yield json.loads(line)
        except ValueError as e:
            sys.exit("stdin line %d: invalid JSON: %s" % (n, e))


def encode(max_size, inp, out):
    agg = RecordAggregator(max_size=max_size)
    for rec in _lines(inp):
        data = base64.b64decode(rec["data"], validate=True)
        try:
            full = agg.add_user_record(rec["partition_key"], data, rec.get("explicit_hash_key"))
        except ValueError as e:
            sys.exit("encode: %s" % e)
        if full is not None:
            _emit(out, *full.get_contents())
    last = agg.clear_and_get()
    if last is not None:
        _emit(out, *last.get_contents())


def decode(inp, out):
    for n, rec in enumerate(_lines(inp)):
        # Lambda event record shape: data stays base64, as the library expects.
        kinesis_record = {
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "sequenceNumber": rec.get("sequence_number") or str(n),
                "approximateArrivalTimestamp": 0,
                "partitionKey": rec["partition_key"],
                "data": rec["data"],
            }
        }
        for ur in iter_deaggregate_records(kinesis_record):
            k = ur["kinesis"]
            # aggregated sub-records: data is base64 bytes, EHK key present;
            # passed-through records: the input dict itself (base64 str, no EHK)
            _emit(out, k["partitionKey"], k.get("explicitHashKey"), base64.b64decode(k["data"]))


def main():
    ap = argparse.ArgumentParser(description="Bridge to the official Python KPL aggregation library (JSON lines).")
    sub = ap.add_subparsers(dest="mode", required=True)
    enc = sub.add_parser("encode", help="aggregate user records")
    enc.add_argument("--max-size", type=int, default=KPL_MAX_AGG_SIZE)
    sub.add_parser("decode", help="deaggregate Kinesis records")
    a = ap.parse_args()
    inp = (line.decode("utf-8") for line in sys.stdin.buffer)
    out = sys.stdout
    if a.mode == "encode":
        encode(a.max_size, inp, out)
    else:
        decode(inp, out)
    out.flush()


if __name__ == "__main__":
    main()
