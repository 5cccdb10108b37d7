"""Writes the Lambda Kinesis event files of this folder (run: python3 make_events.py).

The events have the shape Lambda delivers (Records[].kinesis with base64 data, eventID =
shardId:sequenceNumber). The aggregates are the official Python aws-kinesis-agg vectors
(*.bin, copied from the shared KPL aggregation vectors); `crafted_empty_pk_table.bin` has a good
magic and MD5 but a sub-record pointing into an empty key table; the digest-mismatch record
is `py_single.bin` with its last byte flipped.
"""
import base64
import json

ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/lambda-events"
BASE = 49590338271490256608559692538361571095921575989136588800


def blob(name):
    with open(name, "rb") as f:
        return f.read()


def record(shard, offset, key, data, arrival):
    seq = str(BASE + offset)
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": key,
            "sequenceNumber": seq,
            "data": base64.b64encode(data).decode(),
            "approximateArrivalTimestamp": arrival,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard}:{seq}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/lambda-role",
        "awsRegion": "us-east-1",
        "eventSourceARN": ARN,
    }


def write(name, records):
    with open(name, "w") as f:
        json.dump({"Records": records}, f, indent=2)
        f.write("\n")


write("plain.json", [
    record("shardId-000000000000", 1, "1", b'{"id":1,"msg":"hello"}', 1545084650.987),
    record("shardId-000000000000", 2, "2", b'{"id":2,"msg":"world"}', 1545084651.001),
    record("shardId-000000000000", 3, "3", b'{"id":3,"msg":"!"}', 1545084651.5),
])

write("aggregated.json", [
    record("shardId-000000000001", 10, "p", b'{"id":10,"msg":"plain before"}', 1700000000.25),
    record("shardId-000000000001", 11, "alpha", blob("py_shared_pk.bin"), 1700000000.5),
    record("shardId-000000000001", 12, "m1", blob("py_mixed_ehk.bin"), 1700000001.0),
    record("shardId-000000000001", 13, "q", b'{"id":13,"msg":"plain after"}', 1700000002.0),
])

flipped = bytearray(blob("py_single.bin"))
flipped[-1] ^= 0xFF
write("corrupt.json", [
    record("shardId-000000000002", 20, "alpha", blob("py_shared_pk.bin"), 1700000100.0),
    record("shardId-000000000002", 21, "crafted", blob("crafted_empty_pk_table.bin"), 1700000101.0),
    record("shardId-000000000002", 22, "single", bytes(flipped), 1700000102.0),
    record("shardId-000000000002", 23, "z", b'{"id":23,"msg":"last"}', 1700000103.0),
])
