//! The main job, end to end on whatever endpoints the AWS environment names (the demo script
//! starts kinesis-mock and DynamoDB Local): create a 4-shard stream, start two consumer
//! workers and let them split the shards through DynamoDB leases, send 20,000 records through
//! the producer (aggregated, batched, per-shard order kept, with receipts), and check that the
//! workers got every record once, in order per key.
//!
//! `scripts/demo.sh`, or with emulators running: `cargo run -p kinesis-examples --example produce_consume [STREAM]`

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::types::StreamStatus;
use kcl::{Checkpointer, InitialPosition, ProcessRecordsInput, Scheduler, ShardRecordProcessor};
use kpl::{Producer, UserRecord};

const RECORDS: usize = 20_000;
const KEYS: usize = 500;

/// Remembers, per partition key, the record numbers seen, in delivery order.
struct Collector {
    seen: Arc<Mutex<HashMap<String, Vec<usize>>>>,
}

impl ShardRecordProcessor for Collector {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        if let Ok(mut seen) = self.seen.lock() {
            for record in &input.records {
                let number = std::str::from_utf8(record.data())
                    .ok()
                    .and_then(|s| s.strip_prefix("event "))
                    .and_then(|n| n.parse().ok());
                if let Some(number) = number {
                    seen.entry(record.partition_key().to_owned())
                        .or_default()
                        .push(number);
                }
            }
        }
        if let Err(error) = checkpointer.checkpoint().await {
            eprintln!("checkpoint: {error}");
        }
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
        let _ = checkpointer.checkpoint_shard_end().await;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = aws_config::load_from_env().await;
    let stream = std::env::args()
        .nth(1)
        .unwrap_or_else(|| format!("demo-{}", uuid::Uuid::new_v4().simple()));
    let kinesis = aws_sdk_kinesis::Client::new(&config);
    kinesis
        .create_stream()
        .stream_name(&stream)
        .shard_count(4)
        .send()
        .await?;
    while kinesis
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await?
        .stream_description_summary()
        .map(|s| s.stream_status().clone())
        != Some(StreamStatus::Active)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("stream {stream}: 4 shards");

    let seen: Arc<Mutex<HashMap<String, Vec<usize>>>> = Arc::default();
    let application = format!("{stream}-app");
    let mut workers = Vec::new();
    for name in ["worker-a", "worker-b"] {
        let seen = seen.clone();
        let scheduler = Scheduler::builder(
            application.as_str(),
            stream.as_str(),
            move |_shard: &str| Collector { seen: seen.clone() },
        )
        .sdk_config(&config)
        .worker_id(name)
        .initial_position(InitialPosition::TrimHorizon)
        .failover_time(Duration::from_secs(3))
        .polling(
            kcl::retrieval::PollingConfig::default()
                .idle_time_between_reads(Duration::from_millis(200)),
        )
        .build()?;
        let handle = scheduler.handle();
        workers.push((name, handle, tokio::spawn(scheduler.run())));
    }
    // Workers that start together split the shards over a few take cycles: wait for it, so
    // both share the work (a worker alone would take every shard and drain it first).
    let split_deadline = Instant::now() + Duration::from_secs(30);
    while workers
        .iter()
        .map(|(_, handle, _)| handle.metrics().leases_held)
        .collect::<Vec<_>>()
        != [2, 2]
    {
        if Instant::now() > split_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let started = Instant::now();
    // Records of one key are stored in the order sent; checked below.
    let producer = Producer::builder(stream.as_str())
        .sdk_config(&config)
        .ordered(true)
        .build()
        .await?;
    let mut receipts = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        receipts.push(
            producer
                .send(UserRecord::new(
                    format!("user-{}", i % KEYS),
                    format!("event {i}"),
                ))
                .await?,
        );
    }
    let mut shards: HashMap<Arc<str>, usize> = HashMap::new();
    for receipt in receipts {
        *shards.entry(receipt.await?.shard_id).or_default() += 1;
    }
    producer.shutdown().await;
    let metrics = producer.metrics();
    println!(
        "produced {RECORDS} records in {:.2?}: {} Kinesis records in {} PutRecords calls ({:.0} user records per Kinesis record); per shard {:?}",
        started.elapsed(),
        metrics.kinesis_records_put,
        metrics.put_records_calls,
        metrics.user_records_per_kinesis_record,
        shards
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let delivered: usize = seen
            .lock()
            .map(|s| s.values().map(Vec::len).sum())
            .unwrap_or(0);
        if delivered >= RECORDS {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("only {delivered} of {RECORDS} records consumed").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (name, handle, task) in workers {
        let metrics = handle.metrics();
        handle.graceful_shutdown().await;
        task.await??;
        println!(
            "{name}: processed {} records from {} shard(s), then handed its leases back",
            metrics.records_processed, metrics.leases_held
        );
    }
    let seen = seen.lock().map_err(|_| "poisoned")?;
    let total: usize = seen.values().map(Vec::len).sum();
    let in_order = seen
        .values()
        .all(|numbers| numbers.windows(2).all(|w| w[0] < w[1]));
    println!(
        "consumed {total} of {RECORDS} records, each once: {}, in order per key: {in_order}",
        total == RECORDS
    );
    if total != RECORDS || !in_order {
        return Err("the records read back differ from the records sent".into());
    }
    Ok(())
}
