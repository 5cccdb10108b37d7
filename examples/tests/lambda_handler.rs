//! The `lambda_handler` example's logic fed captured-style Lambda Kinesis events
//! (`kinesis-lambda/tests/data`: plain records, KPL aggregates, a corrupt aggregate): what it
//! processed, what it set aside, and the partial batch responses, across a retry.

// Each test binary uses a part of the example's module.
#[allow(dead_code)]
#[path = "../lambda_handler/handler.rs"]
mod handler;

use std::collections::HashSet;

use handler::{HandlerState, Sink, handle};
use kinesis_lambda::{CorruptRecord, ExactKinesisEvent, KinesisEvent, LambdaUserRecord};

const BASE: &str = "495903382714902566085596925383615710959215759891365888";

fn seq(offset: u32) -> String {
    format!("{BASE}{offset:02}")
}

fn event(name: &str) -> KinesisEvent {
    let path = format!(
        "{}/../kinesis-lambda/tests/data/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let event: ExactKinesisEvent =
        serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    event.0
}

/// Records what it processed as (sequence offset, sub-sequence, data); fails each record in
/// `fail_once` the first time it sees it, as a downstream hiccup would.
#[derive(Default)]
struct Recorder {
    processed: Vec<(String, Option<u64>, String)>,
    dead_letters: Vec<(String, String)>,
    fail_once: HashSet<String>,
}

impl Sink for Recorder {
    fn process(&mut self, record: &LambdaUserRecord) -> Result<(), String> {
        let data = String::from_utf8_lossy(record.data()).into_owned();
        if self.fail_once.remove(&data) {
            return Err(format!("downstream refused {data:?}"));
        }
        let offset = record.sequence_number()[BASE.len()..].to_owned();
        self.processed
            .push((offset, record.sub_sequence_number(), data));
        Ok(())
    }

    fn dead_letter(&mut self, corrupt: &CorruptRecord) {
        self.dead_letters.push((
            corrupt.sequence_number().to_owned(),
            corrupt.error().to_string(),
        ));
    }
}

fn row(offset: u32, sub: Option<u64>, data: &str) -> (String, Option<u64>, String) {
    (format!("{offset:02}"), sub, data.to_owned())
}

fn answer_json(answer: &kinesis_lambda::KinesisEventResponse) -> serde_json::Value {
    serde_json::to_value(answer).unwrap()
}

#[test]
fn plain_records_are_processed_and_the_batch_succeeds() {
    let mut sink = Recorder::default();
    let answer = handle(event("plain.json"), &mut HandlerState::default(), &mut sink).unwrap();
    assert_eq!(
        answer_json(&answer),
        serde_json::json!({"batchItemFailures": []})
    );
    assert_eq!(
        sink.processed,
        vec![
            row(1, None, r#"{"id":1,"msg":"hello"}"#),
            row(2, None, r#"{"id":2,"msg":"world"}"#),
            row(3, None, r#"{"id":3,"msg":"!"}"#),
        ]
    );
}

#[test]
fn a_failure_inside_an_aggregate_retries_from_it_and_the_retry_skips_what_was_done() {
    let mut state = HandlerState::default();
    let mut sink = Recorder {
        fail_once: HashSet::from(["second".to_owned()]),
        ..Recorder::default()
    };
    let answer = handle(event("aggregated.json"), &mut state, &mut sink).unwrap();
    assert_eq!(
        answer_json(&answer),
        serde_json::json!({"batchItemFailures": [{"itemIdentifier": seq(11)}]})
    );
    assert_eq!(
        sink.processed,
        vec![
            row(10, None, r#"{"id":10,"msg":"plain before"}"#),
            row(11, Some(0), "first")
        ]
    );

    // Lambda retries from the Kinesis record it was told: the aggregate 11, all of it.
    let mut retry = event("aggregated.json");
    retry
        .records
        .retain(|r| r.kinesis.sequence_number >= seq(11));
    let answer = handle(retry, &mut state, &mut sink).unwrap();
    assert_eq!(
        answer_json(&answer),
        serde_json::json!({"batchItemFailures": []})
    );
    assert_eq!(
        sink.processed,
        vec![
            row(10, None, r#"{"id":10,"msg":"plain before"}"#),
            row(11, Some(0), "first"),
            row(11, Some(1), "second"),
            row(11, Some(2), "third"),
            row(12, Some(0), "no ehk"),
            row(12, Some(1), "with ehk"),
            row(12, Some(2), "no ehk either"),
            row(13, None, r#"{"id":13,"msg":"plain after"}"#),
        ],
        "every user record exactly once"
    );
    assert_eq!(
        state.done("shardId-000000000001").map(ToString::to_string),
        Some(format!("shardId-000000000001/{}/0", seq(13)))
    );
}

#[test]
fn a_retry_in_a_new_execution_environment_repeats_the_finished_part_of_the_aggregate() {
    let mut sink = Recorder {
        fail_once: HashSet::from(["third".to_owned()]),
        ..Recorder::default()
    };
    let answer = handle(
        event("aggregated.json"),
        &mut HandlerState::default(),
        &mut sink,
    )
    .unwrap();
    assert_eq!(
        answer_json(&answer),
        serde_json::json!({"batchItemFailures": [{"itemIdentifier": seq(11)}]})
    );
    let mut retry = event("aggregated.json");
    retry.records.remove(0);
    // A cold start: the position is gone, so "first" and "second" come again (at-least-once).
    handle(retry, &mut HandlerState::default(), &mut sink).unwrap();
    let data: Vec<_> = sink.processed.iter().map(|(_, _, d)| d.as_str()).collect();
    assert_eq!(&data[1..6], ["first", "second", "first", "second", "third"]);
    assert_eq!(data.len(), 10);
}

#[test]
fn a_corrupt_aggregate_goes_to_the_dead_letters_and_the_rest_is_processed() {
    let data = event("corrupt.json");
    let flipped = String::from_utf8_lossy(&data.records[2].kinesis.data.0).into_owned();
    let mut sink = Recorder {
        fail_once: HashSet::from([r#"{"id":23,"msg":"last"}"#.to_owned()]),
        ..Recorder::default()
    };
    let mut state = HandlerState::default();
    let answer = handle(data, &mut state, &mut sink).unwrap();
    assert_eq!(
        answer_json(&answer),
        serde_json::json!({"batchItemFailures": [{"itemIdentifier": seq(23)}]})
    );
    assert_eq!(
        sink.dead_letters,
        vec![(
            seq(21),
            "sub-record 0 uses partition key index 0 but the table has 0 entries".to_owned()
        )]
    );
    // The record whose MD5 does not match is a plain record, handed over whole.
    assert_eq!(
        sink.processed,
        vec![
            row(20, Some(0), "first"),
            row(20, Some(1), "second"),
            row(20, Some(2), "third"),
            row(22, None, &flipped),
        ]
    );
    let mut retry = event("corrupt.json");
    retry.records.drain(..3);
    let answer = handle(retry, &mut state, &mut sink).unwrap();
    assert_eq!(
        answer_json(&answer),
        serde_json::json!({"batchItemFailures": []})
    );
    assert_eq!(
        sink.processed.last(),
        Some(&row(23, None, r#"{"id":23,"msg":"last"}"#))
    );
    assert_eq!(sink.dead_letters.len(), 1);
}

#[test]
fn an_event_that_is_not_from_kinesis_fails_the_invocation() {
    let mut bad = event("plain.json");
    bad.records[0].event_id = None;
    let error = handle(bad, &mut HandlerState::default(), &mut Recorder::default()).unwrap_err();
    assert!(error.to_string().contains("eventID"), "{error}");
}
