//! A Lambda function reading a Kinesis stream written by a KPL (or this project's producer):
//! takes KPL aggregates apart, processes every user record in order, sets corrupt aggregates
//! aside, and answers a failure with a partial batch response so that Lambda retries from the
//! right Kinesis record; on that retry the user records of the aggregate already finished are
//! skipped. The logic is in `lambda_handler/handler.rs`; this file wires it to `lambda_runtime`.
//!
//! Deploy with `FunctionResponseTypes: ["ReportBatchItemFailures"]` on the event source mapping
//! (without it Lambda ignores the answer). Outside Lambda (no `AWS_LAMBDA_RUNTIME_API`) it
//! handles one event read from a file and prints the answer:
//!
//! `cargo run -p kinesis-examples --example lambda_handler -- kinesis-lambda/tests/data/aggregated.json`

#[path = "lambda_handler/handler.rs"]
mod handler;

use handler::{HandlerState, Sink, handle};
use kinesis_lambda::{CorruptRecord, ExactKinesisEvent, LambdaUserRecord};
use lambda_runtime::Error;

/// Prints each user record as a line; a real function would store it.
struct PrintSink;

impl Sink for PrintSink {
    fn process(&mut self, record: &LambdaUserRecord) -> Result<(), String> {
        println!(
            "Record: {}, Partition Key: {}, Shard: {}, Sequence: {}, Sub-sequence: {:?}",
            String::from_utf8_lossy(record.data()),
            record.partition_key(),
            record.shard_id(),
            record.sequence_number(),
            record.sub_sequence_number(),
        );
        Ok(())
    }

    fn dead_letter(&mut self, corrupt: &CorruptRecord) {
        eprintln!(
            "dead letter: shard {} sequence {} ({} bytes): {}",
            corrupt.shard_id(),
            corrupt.sequence_number(),
            corrupt.data().len(),
            corrupt.error()
        );
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        return handler::serve(PrintSink).await;
    }
    let path = std::env::args()
        .nth(1)
        .ok_or("outside Lambda, pass a Kinesis event JSON file")?;
    let event: ExactKinesisEvent = serde_json::from_slice(&std::fs::read(&path)?)?;
    let shard = event.0.records.first().and_then(|r| r.event_id.clone());
    let shard = shard.and_then(|id| id.split_once(':').map(|(s, _)| s.to_owned()));
    let mut state = HandlerState::default();
    let answer = handle(event.0, &mut state, &mut PrintSink)?;
    println!("{}", serde_json::to_string(&answer)?);
    if let Some(done) = shard.as_deref().and_then(|shard| state.done(shard)) {
        eprintln!("finished up to {done}");
    }
    Ok(())
}
