//! A property of the retry contract: whatever the event (plain records and KPL aggregates
//! mixed) and wherever processing fails, answering with `retry_from` and skipping with the
//! position of the last record finished processes every user record exactly once, in order,
//! when Lambda retries as it does (from the named Kinesis record, the rest of the batch again).

use aggregation_proto::{Aggregator, AggregatorConfig, UserRecord};
use base64::Engine as _;
use kinesis_lambda::{BatchItem, EventDeaggregator, KinesisEvent, Position, retry_from};
use proptest::prelude::*;

const SHARD: &str = "shardId-000000000004";

/// A Lambda event of `shape` (per Kinesis record: 0 = plain, n = an aggregate of n) whose
/// user records are numbered in order; and how many user records it holds.
fn event(shape: &[usize]) -> (serde_json::Value, usize) {
    let mut records = Vec::new();
    let mut next = 0usize;
    for (i, &count) in shape.iter().enumerate() {
        let data = if count == 0 {
            next += 1;
            (next - 1).to_string().into_bytes()
        } else {
            let mut aggregator = Aggregator::new(AggregatorConfig::default());
            for _ in 0..count {
                aggregator
                    .try_add(&UserRecord::new(format!("k{}", next % 3), next.to_string()))
                    .expect("fits");
                next += 1;
            }
            aggregator.finish().expect("not empty").data.to_vec()
        };
        let sequence_number = format!("4959{:040}", 1000 + i);
        records.push(serde_json::json!({
            "eventID": format!("{SHARD}:{sequence_number}"),
            "eventSource": "aws:kinesis",
            "kinesis": {
                "partitionKey": "pk",
                "sequenceNumber": sequence_number,
                "data": base64::engine::general_purpose::STANDARD.encode(data),
                "approximateArrivalTimestamp": 1_700_000_000.0 + i as f64,
            },
        }));
    }
    (serde_json::json!({ "Records": records }), next)
}

proptest! {
    #[test]
    fn every_user_record_is_processed_once_across_retries(
        shape in prop::collection::vec(0usize..6, 1..12),
        failures in prop::collection::vec(0usize..40, 0..6),
    ) {
        let (json, total) = event(&shape);
        let mut records = json["Records"].as_array().cloned().unwrap_or_default();
        let mut failures = failures.into_iter();
        // The user record (by number) at which the next invocation fails, counted from the
        // first it processes.
        let mut fail_after = failures.next();
        let mut done: Option<Position> = None;
        let mut processed = Vec::new();
        for _invocation in 0..100 {
            let event: KinesisEvent =
                serde_json::from_value(serde_json::json!({ "Records": records.clone() })).unwrap();
            let mut batch = EventDeaggregator::new().deaggregate(event).unwrap();
            batch.skip_processed(done.as_ref());
            let mut answer = None;
            for (n, item) in batch.items().iter().enumerate() {
                let BatchItem::Record(record) = item else { unreachable!("no corrupt records") };
                if fail_after == Some(n) {
                    fail_after = failures.next();
                    answer = Some(retry_from(record));
                    break;
                }
                processed.push(String::from_utf8(record.data().to_vec()).unwrap().parse::<usize>().unwrap());
                done = Some(record.position());
            }
            let Some(answer) = answer else { break };
            // Lambda: retry from the named record, everything after it again.
            let from = answer.batch_item_failures[0].item_identifier.clone().unwrap();
            let at = records
                .iter()
                .position(|r| r["kinesis"]["sequenceNumber"] == from.as_str())
                .unwrap();
            records.drain(..at);
        }
        prop_assert_eq!(processed, (0..total).collect::<Vec<_>>());
    }
}
