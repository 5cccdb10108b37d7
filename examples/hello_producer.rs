//! The classic tutorial producer, through the producer library: each record is a JSON body with
//! an id, the source, the message and a timestamp, sent with the source as partition key, and
//! each receipt's shard, sequence and sub-sequence number printed (records sent close together
//! share one aggregated Kinesis record, told apart by their sub-sequence numbers).
//!
//! ```text
//! cargo run -p kinesis-examples --example hello_producer -- MESSAGE
//! cargo run -p kinesis-examples --example hello_producer -- SOURCE COUNT DELAY_MS MESSAGE
//! ```
//!
//! The stream is `STREAM_NAME` (default `hello-stream`), created with 2 shards if missing; the
//! endpoints and credentials come from the standard AWS environment (`scripts/emulators.sh env`
//! for the local emulators).

use std::time::Duration;

use kinesis_examples::{BoxError, ensure_stream, now_millis, stream_name};
use kpl::{Producer, UserRecord};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (source, count, delay, message) = match args.as_slice() {
        [message] => ("hello".to_owned(), 1, 0, message.clone()),
        [source, count, delay, message] => (
            source.clone(),
            count.parse::<u64>().map_err(|_| "COUNT must be a number")?,
            delay
                .parse::<u64>()
                .map_err(|_| "DELAY_MS must be a number")?,
            message.clone(),
        ),
        _ => return Err("usage: hello_producer MESSAGE | SOURCE COUNT DELAY_MS MESSAGE".into()),
    };

    let config = aws_config::load_from_env().await;
    let stream = stream_name("hello-stream");
    ensure_stream(&aws_sdk_kinesis::Client::new(&config), &stream, 2).await?;
    let producer = Producer::builder(stream.as_str())
        .sdk_config(&config)
        .build()
        .await?;

    let mut receipts = Vec::new();
    for id in 0..count {
        let body = serde_json::json!({
            "id": id,
            "source": source,
            "message": message,
            "timestamp": now_millis(),
        });
        receipts.push((
            id,
            producer
                .send(UserRecord::new(source.as_str(), body.to_string()))
                .await?,
        ));
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
    }
    let mut failed = 0;
    for (id, receipt) in receipts {
        match receipt.await {
            Ok(stored) => println!(
                "record {id}: shard {}, sequence {}, sub-sequence {}",
                stored.shard_id,
                stored.sequence_number,
                stored.sub_sequence_number.unwrap_or(0)
            ),
            Err(failure) => {
                failed += 1;
                eprintln!("record {id} failed: {failure}");
            }
        }
    }
    producer.shutdown().await;
    if failed > 0 {
        return Err(format!("{failed} of {count} records failed").into());
    }
    Ok(())
}
