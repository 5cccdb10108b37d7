//! Captured-style Lambda Kinesis events (tests/data, written by make_events.py from the official
//! Python aggregator's vectors): every user record, its place, and the partial-failure answers.

use std::time::{Duration, SystemTime};

use aggregation_proto::{DeaggregationError, HashRange};
use kinesis_lambda::{
    BatchItem, CorruptAggregates, EventDeaggregator, EventError, ExactKinesisEvent, KinesisEvent,
    Position, all_processed, retry_from,
};

const BASE: &str = "495903382714902566085596925383615710959215759891365888";

fn event(name: &str) -> KinesisEvent {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let exact: ExactKinesisEvent =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    exact.0
}

/// The event as `aws_lambda_events` alone reads it.
fn lossy_event(name: &str) -> KinesisEvent {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn seq(offset: u32) -> String {
    format!("{BASE}{offset:02}")
}

/// (shard, sequence, sub-sequence, partition key, explicit hash key, data) of an item.
type Row = (String, String, Option<u64>, String, Option<String>, String);

/// Each item as a [`Row`]; a corrupt one with its error's text as data.
fn summary(items: &[BatchItem]) -> Vec<Row> {
    items
        .iter()
        .map(|item| match item {
            BatchItem::Record(r) => (
                r.shard_id().to_owned(),
                r.sequence_number().to_owned(),
                r.sub_sequence_number(),
                r.partition_key().to_owned(),
                r.explicit_hash_key().map(str::to_owned),
                String::from_utf8_lossy(r.data()).into_owned(),
            ),
            BatchItem::Corrupt(c) => (
                c.shard_id().to_owned(),
                c.sequence_number().to_owned(),
                None,
                c.partition_key().to_owned(),
                None,
                format!("CORRUPT: {}", c.error()),
            ),
        })
        .collect()
}

fn row(shard: u32, offset: u32, sub: Option<u64>, key: &str, ehk: Option<&str>, data: &str) -> Row {
    (
        format!("shardId-00000000000{shard}"),
        seq(offset),
        sub,
        key.to_owned(),
        ehk.map(str::to_owned),
        data.to_owned(),
    )
}

#[test]
fn plain_records_come_through_with_arrival_time_and_source() {
    let batch = EventDeaggregator::new()
        .deaggregate(event("plain.json"))
        .unwrap();
    assert_eq!(
        summary(batch.items()),
        vec![
            row(0, 1, None, "1", None, r#"{"id":1,"msg":"hello"}"#),
            row(0, 2, None, "2", None, r#"{"id":2,"msg":"world"}"#),
            row(0, 3, None, "3", None, r#"{"id":3,"msg":"!"}"#),
        ]
    );
    let first = batch.records().next().unwrap();
    assert_eq!(
        first.approximate_arrival_timestamp(),
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_545_084_650_987)
    );
    assert!(!first.is_aggregated());
    let source = first.event_source();
    assert_eq!(source.event_source.as_deref(), Some("aws:kinesis"));
    assert_eq!(
        source.event_source_arn.as_deref(),
        Some("arn:aws:kinesis:us-east-1:123456789012:stream/lambda-events")
    );
    assert_eq!(source.aws_region.as_deref(), Some("us-east-1"));
    assert_eq!(source.event_id, format!("shardId-000000000000:{}", seq(1)));
    let stats = batch.stats();
    assert_eq!(
        (stats.kinesis_records, stats.user_records, stats.aggregates),
        (3, 3, 0)
    );
}

#[test]
fn kpl_aggregates_give_every_user_record_with_sub_sequence_numbers() {
    let batch = EventDeaggregator::new()
        .deaggregate(event("aggregated.json"))
        .unwrap();
    let ehk = "85070591730234615865843651857942052864";
    assert_eq!(
        summary(batch.items()),
        vec![
            row(1, 10, None, "p", None, r#"{"id":10,"msg":"plain before"}"#),
            row(1, 11, Some(0), "alpha", None, "first"),
            row(1, 11, Some(1), "beta", None, "second"),
            row(1, 11, Some(2), "alpha", None, "third"),
            row(1, 12, Some(0), "m1", None, "no ehk"),
            row(1, 12, Some(1), "m2", Some(ehk), "with ehk"),
            row(1, 12, Some(2), "m3", None, "no ehk either"),
            row(1, 13, None, "q", None, r#"{"id":13,"msg":"plain after"}"#),
        ]
    );
    // Sub-records carry their Kinesis record's arrival time.
    let arrivals: Vec<_> = batch
        .records()
        .map(|r| r.approximate_arrival_timestamp())
        .collect();
    assert_eq!(
        arrivals[1],
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_500)
    );
    assert_eq!(arrivals[3], arrivals[1]);
    let stats = batch.stats();
    assert_eq!(
        (stats.kinesis_records, stats.user_records, stats.aggregates),
        (4, 8, 2)
    );
}

#[test]
fn a_corrupt_aggregate_is_reported_in_place_and_a_bad_digest_is_a_plain_record() {
    let data = event("corrupt.json");
    let flipped = data.records[2].kinesis.data.0.clone();
    let batch = EventDeaggregator::new().deaggregate(data).unwrap();
    let items = batch.items();
    assert_eq!(items.len(), 6);
    assert_eq!(
        summary(&items[..3]),
        vec![
            row(2, 20, Some(0), "alpha", None, "first"),
            row(2, 20, Some(1), "beta", None, "second"),
            row(2, 20, Some(2), "alpha", None, "third"),
        ]
    );
    let BatchItem::Corrupt(corrupt) = &items[3] else {
        panic!("expected the corrupt aggregate, got {:?}", items[3]);
    };
    assert_eq!(corrupt.sequence_number(), seq(21));
    assert!(matches!(
        corrupt.error(),
        DeaggregationError::PartitionKeyIndexOutOfRange {
            sub_record: 0,
            index: 0,
            table_len: 0
        }
    ));
    assert_eq!(
        serde_json::to_value(corrupt.retry_from_here()).unwrap(),
        serde_json::json!({"batchItemFailures": [{"itemIdentifier": seq(21)}]})
    );
    let BatchItem::Record(bad_digest) = &items[4] else {
        panic!("expected the record with a bad digest, got {:?}", items[4]);
    };
    assert_eq!(bad_digest.data(), &flipped[..]);
    assert_eq!(bad_digest.sub_sequence_number(), None);
    assert_eq!(
        summary(&items[5..]),
        vec![row(2, 23, None, "z", None, r#"{"id":23,"msg":"last"}"#)]
    );
    let stats = batch.stats();
    assert_eq!(
        (stats.corrupt, stats.digest_mismatches, stats.aggregates),
        (1, 1, 1)
    );
}

#[test]
fn pass_through_hands_a_corrupt_aggregate_over_whole() {
    let data = event("corrupt.json");
    let whole = data.records[1].kinesis.data.0.clone();
    let batch = EventDeaggregator::new()
        .corrupt_aggregates(CorruptAggregates::PassThrough)
        .deaggregate(data)
        .unwrap();
    assert_eq!(batch.corrupt().count(), 0);
    let passed = &batch.records().nth(3).unwrap();
    assert_eq!(passed.sequence_number(), seq(21));
    assert_eq!(passed.data(), &whole[..]);
    assert_eq!(batch.stats().corrupt_passed_through, 1);
}

#[test]
fn the_first_failed_user_record_names_its_kinesis_record_and_the_retry_skips_what_was_done() {
    let batch = EventDeaggregator::new()
        .deaggregate(event("aggregated.json"))
        .unwrap();
    let records: Vec<_> = batch.records().collect();
    // Processing fails at "second" (sub-record 1 of the aggregate 11): "first" was done.
    let failed = records[2];
    assert_eq!(
        (failed.sequence_number(), failed.sub_sequence_number()),
        (&*seq(11), Some(1))
    );
    let answer = retry_from(failed);
    assert_eq!(
        serde_json::to_string(&answer).unwrap(),
        format!(
            r#"{{"batchItemFailures":[{{"itemIdentifier":"{}"}}]}}"#,
            seq(11)
        )
    );
    let done = records[1].position();

    // Lambda retries from the Kinesis record 11: the whole aggregate comes again.
    let mut retry = event("aggregated.json");
    retry.records.remove(0);
    let mut batch = EventDeaggregator::new().deaggregate(retry).unwrap();
    assert_eq!(batch.skip_processed(Some(&done)), 1);
    let first = batch.records().next().unwrap();
    assert_eq!(
        (first.sequence_number(), first.sub_sequence_number()),
        (&*seq(11), Some(1))
    );
    assert_eq!(first.data(), b"second");
    assert_eq!(batch.records().count(), 6);
    assert_eq!(batch.stats().skipped, 1);

    // Through its text form, as a handler would store it.
    let stored: Position = done.to_string().parse().unwrap();
    assert_eq!(stored, done);
    assert_eq!(
        serde_json::to_value(all_processed()).unwrap(),
        serde_json::json!({"batchItemFailures": []})
    );
}

#[test]
fn a_position_of_another_shard_or_none_skips_nothing() {
    let mut batch = EventDeaggregator::new()
        .deaggregate(event("aggregated.json"))
        .unwrap();
    assert_eq!(batch.skip_processed(None), 0);
    let elsewhere = Position::new("shardId-000000000009", seq(99), 9);
    assert_eq!(batch.skip_processed(Some(&elsewhere)), 0);
    let everything = Position::new("shardId-000000000001", seq(13), 0);
    assert_eq!(batch.skip_processed(Some(&everything)), 8);
    assert!(batch.items().is_empty());
}

#[test]
fn the_hash_range_filter_drops_sub_records_only() {
    let ehk: u128 = 85_070_591_730_234_615_865_843_651_857_942_052_864;
    let only_m2 = HashRange::new(ehk, ehk).unwrap();
    let batch = EventDeaggregator::new()
        .hash_range(only_m2)
        .deaggregate(event("aggregated.json"))
        .unwrap();
    let keys: Vec<_> = batch
        .records()
        .map(|r| r.partition_key().to_owned())
        .collect();
    assert_eq!(keys, ["p", "m2", "q"]);
    assert_eq!(batch.stats().filtered, 5);
}

#[test]
fn records_without_shard_or_sequence_number_refuse_the_event() {
    let mut bad_id = event("plain.json");
    bad_id.records[1].event_id = Some("no-colon".into());
    assert_eq!(
        EventDeaggregator::new().deaggregate(bad_id),
        Err(EventError::InvalidEventId {
            index: 1,
            event_id: "no-colon".into()
        })
    );
    let mut no_id = event("plain.json");
    no_id.records[0].event_id = None;
    assert!(matches!(
        EventDeaggregator::new().deaggregate(no_id),
        Err(EventError::InvalidEventId { index: 0, .. })
    ));
    let mut bad_seq = event("plain.json");
    bad_seq.records[2].kinesis.sequence_number = "12ab".into();
    let error = EventDeaggregator::new().deaggregate(bad_seq).unwrap_err();
    assert_eq!(
        error,
        EventError::InvalidSequenceNumber {
            index: 2,
            sequence_number: "12ab".into()
        }
    );
    assert!(error.to_string().contains("decimal digits"));
}

#[test]
fn arrival_times_are_exact_to_the_millisecond() {
    let expected = |millis| SystemTime::UNIX_EPOCH + Duration::from_millis(millis);
    let batch = EventDeaggregator::new()
        .deaggregate(event("aggregated.json"))
        .unwrap();
    let arrivals: Vec<_> = batch
        .records()
        .map(|r| r.approximate_arrival_timestamp())
        .collect();
    assert_eq!(arrivals[0], expected(1_700_000_000_250));
    assert_eq!(arrivals[7], expected(1_700_000_002_000));
    // What aws_lambda_events 1.2.1 alone makes of 1700000000.25 and 1700000000.5: 25 and 5 ms
    // (if an update fixes this, ExactKinesisEvent can go).
    let lossy = EventDeaggregator::new()
        .deaggregate(lossy_event("aggregated.json"))
        .unwrap();
    let lossy: Vec<_> = lossy
        .records()
        .map(|r| r.approximate_arrival_timestamp())
        .collect();
    assert_eq!(lossy[0], expected(1_700_000_000_025));
    assert_eq!(lossy[1], expected(1_700_000_000_005));
}
