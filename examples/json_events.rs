//! Typed events end to end: serialized with serde by the producer, deserialized by the
//! consumer's processor. An event that does not parse is put on a dead-letter list (here in
//! memory; in production another stream or a queue) with where it was read, instead of
//! stopping the shard: a processor that fails on a bad record and is retried from its last
//! checkpoint would fail on it again, forever (a "poison pill").
//!
//! ```text
//! cargo run -p kinesis-examples --example json_events
//! ```
//!
//! Creates a 2-shard stream (`STREAM_NAME`, default a new unique name), sends 200 orders and
//! two bad records, reads them back with one worker, prints the dead letters, and fails unless
//! every order arrived once and exactly the two bad records were set aside.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kcl::{
    Checkpointer, InitialPosition, InitializeInput, ProcessRecordsInput, Scheduler,
    ShardRecordProcessor,
};
use kinesis_examples::{BoxError, ensure_stream};
use kpl::{Producer, UserRecord};
use serde::{Deserialize, Serialize};

const ORDERS: u64 = 200;

/// The event type both sides share.
#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: u64,
    customer: String,
    amount_cents: u64,
}

/// A record set aside, with what it takes to find and replay it.
#[derive(Debug)]
struct DeadLetter {
    shard_id: String,
    sequence_number: String,
    sub_sequence_number: u64,
    error: String,
    data: Vec<u8>,
}

#[derive(Default)]
struct Seen {
    orders: BTreeSet<u64>,
    duplicates: u64,
    dead_letters: Vec<DeadLetter>,
}

struct OrderProcessor {
    shard_id: String,
    seen: Arc<Mutex<Seen>>,
}

impl ShardRecordProcessor for OrderProcessor {
    async fn initialize(&mut self, input: InitializeInput) {
        self.shard_id = input.shard_id;
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        if let Ok(mut seen) = self.seen.lock() {
            for record in &input.records {
                match serde_json::from_slice::<Order>(record.data()) {
                    Ok(order) => {
                        if !seen.orders.insert(order.id) {
                            seen.duplicates += 1;
                        }
                    }
                    Err(error) => seen.dead_letters.push(DeadLetter {
                        shard_id: self.shard_id.clone(),
                        sequence_number: record.sequence_number().unwrap_or_default().to_owned(),
                        sub_sequence_number: record.sub_sequence_number().unwrap_or(0),
                        error: error.to_string(),
                        data: record.data().to_vec(),
                    }),
                }
            }
        }
        // The bad records are set aside, so the batch is done: checkpoint past them.
        if let Err(error) = checkpointer.checkpoint().await {
            eprintln!("{}: checkpoint failed: {error}", self.shard_id);
        }
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
        let _ = checkpointer.checkpoint_shard_end().await;
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let config = aws_config::load_from_env().await;
    let stream = std::env::var("STREAM_NAME")
        .unwrap_or_else(|_| format!("json-events-{}", uuid::Uuid::new_v4().simple()));
    ensure_stream(&aws_sdk_kinesis::Client::new(&config), &stream, 2).await?;

    let producer = Producer::builder(stream.as_str())
        .sdk_config(&config)
        .build()
        .await?;
    let mut receipts = Vec::new();
    for id in 0..ORDERS {
        let order = Order {
            id,
            customer: format!("customer-{}", id % 17),
            amount_cents: 100 + id * 7,
        };
        let data = serde_json::to_vec(&order)?;
        receipts.push(
            producer
                .send(UserRecord::new(order.customer.as_str(), data))
                .await?,
        );
    }
    // Two poison pills: not JSON at all, and JSON of the wrong shape.
    receipts.push(
        producer
            .send(UserRecord::new("customer-1", "not json {"))
            .await?,
    );
    receipts.push(
        producer
            .send(UserRecord::new("customer-2", r#"{"id":"seven"}"#))
            .await?,
    );
    for receipt in receipts {
        receipt.await?;
    }
    producer.shutdown().await;
    println!("sent {ORDERS} orders and 2 bad records to {stream}");

    let seen = Arc::new(Mutex::new(Seen::default()));
    let factory_seen = seen.clone();
    let scheduler = Scheduler::builder(format!("{stream}-app"), stream.as_str(), move |_: &str| {
        OrderProcessor {
            shard_id: String::new(),
            seen: factory_seen.clone(),
        }
    })
    .sdk_config(&config)
    .initial_position(InitialPosition::TrimHorizon)
    .build()?;
    let handle = scheduler.handle();
    let worker = tokio::spawn(scheduler.run());

    let deadline = Instant::now() + Duration::from_secs(60);
    let done = |seen: &Seen| seen.orders.len() as u64 == ORDERS && seen.dead_letters.len() >= 2;
    while !seen.lock().map(|s| done(&s)).unwrap_or(false) {
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    handle.graceful_shutdown().await;
    worker.await??;

    let seen = seen.lock().map_err(|_| "a processor panicked")?;
    for letter in &seen.dead_letters {
        println!(
            "dead letter: shard {}, sequence {}/{}: {} ({:?})",
            letter.shard_id,
            letter.sequence_number,
            letter.sub_sequence_number,
            letter.error,
            String::from_utf8_lossy(&letter.data)
        );
    }
    println!(
        "orders read: {} of {ORDERS}, read twice: {}, dead letters: {}",
        seen.orders.len(),
        seen.duplicates,
        seen.dead_letters.len()
    );
    if seen.orders.len() as u64 != ORDERS || seen.dead_letters.len() != 2 {
        return Err("the events read back differ from the events sent".into());
    }
    Ok(())
}
