//! How fast a split shard's children start, and how soon the finished parent's lease is
//! cleaned up, against kinesis-mock and DynamoDB Local (`scripts/emulators.sh start`).
//!
//! Each repeat creates a stream of `--shards` shards and an application of `--workers`
//! workers, puts a record every 20 ms alternately into both halves of shard 0's hash range,
//! splits shard 0 while records flow, and measures:
//!
//! - `children start`: from the parent's last record delivered to each child's first record
//!   delivered (the time the Java KCL spends waiting for its next take cycle, 2 × failover by
//!   default, which this worker skips by taking the children as soon as the parent ends);
//! - `cleanup`: from the parent's SHARD_END checkpoint to its lease's deletion (the children
//!   must have checkpointed past TRIM_HORIZON first; `--cleanup-ms` sets the interval).
//!
//! ```text
//! cargo run --release -p kinesis-kcl --example reshard_latency -- [--repeats 5] [--workers 1]
//!     [--shards 1] [--failover-ms 10000] [--cleanup-ms 5000] [--idle-ms 200]
//! ```
//!
//! The take interval is the default, 2 × (failover + 25 ms). Prints a markdown table
//! (min / median / max) and a JSON line with every sample.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_tests::{
    create_stream, delete_stream, delete_table, dynamodb_client, kinesis_client, list_shards,
    unique_name,
};
use kcl::lease::LeaseTable;
use kcl::retrieval::PollingConfig;
use kcl::{Checkpointer, InitialPosition, ProcessRecordsInput, Scheduler, ShardRecordProcessor};

type Error = Box<dyn std::error::Error + Send + Sync>;
const WAIT_LIMIT: Duration = Duration::from_secs(120);

/// Per shard: first and last delivery, and when SHARD_END was checkpointed.
#[derive(Debug, Default, Clone)]
struct ShardTimes {
    first: Option<Instant>,
    last: Option<Instant>,
    ended: Option<Instant>,
}

type Times = Arc<Mutex<BTreeMap<String, ShardTimes>>>;

struct Timer {
    shard: String,
    times: Times,
}

impl ShardRecordProcessor for Timer {
    async fn process_records(
        &mut self,
        _input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        let now = Instant::now();
        if let Ok(mut times) = self.times.lock() {
            let entry = times.entry(self.shard.clone()).or_default();
            entry.first.get_or_insert(now);
            entry.last = Some(now);
        }
        let _ = checkpointer.checkpoint().await;
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
        if checkpointer.checkpoint_shard_end().await.is_ok()
            && let Ok(mut times) = self.times.lock()
        {
            times.entry(self.shard.clone()).or_default().ended = Some(Instant::now());
        }
    }
}

struct Options {
    repeats: usize,
    workers: usize,
    shards: i32,
    failover: Duration,
    cleanup: Duration,
    idle: Duration,
}

fn options() -> Result<Options, Error> {
    let mut options = Options {
        repeats: 5,
        workers: 1,
        shards: 1,
        failover: Duration::from_secs(10),
        cleanup: Duration::from_secs(5),
        idle: Duration::from_millis(200),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value: u64 = args
            .next()
            .ok_or(format!("{flag} needs a value"))?
            .parse()?;
        match flag.as_str() {
            "--repeats" => options.repeats = usize::try_from(value)?,
            "--workers" => options.workers = usize::try_from(value)?,
            "--shards" => options.shards = i32::try_from(value)?,
            "--failover-ms" => options.failover = Duration::from_millis(value),
            "--cleanup-ms" => options.cleanup = Duration::from_millis(value),
            "--idle-ms" => options.idle = Duration::from_millis(value),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(options)
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) -> Result<(), Error> {
    let start = Instant::now();
    while !condition() {
        if start.elapsed() > WAIT_LIMIT {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// One repeat: (children start latencies, cleanup time).
async fn run_once(options: &Options) -> Result<(Vec<Duration>, Duration), Error> {
    let kinesis = kinesis_client().await;
    let dynamodb = dynamodb_client().await;
    let stream = unique_name("reshard-latency");
    let application = unique_name("reshard-latency-app");
    create_stream(&kinesis, &stream, options.shards).await;
    let parent = list_shards(&kinesis, &stream).await[0].clone();
    let range = parent.hash_key_range().ok_or("no range")?;
    let start: u128 = range.starting_hash_key().parse()?;
    let end: u128 = range.ending_hash_key().parse()?;
    let middle = start + (end - start) / 2;
    let times: Times = Arc::default();
    let mut handles = Vec::new();
    let mut tasks = Vec::new();
    for worker in 0..options.workers {
        let times = times.clone();
        let scheduler =
            Scheduler::builder(application.as_str(), stream.as_str(), move |shard: &str| {
                Timer {
                    shard: shard.to_owned(),
                    times: times.clone(),
                }
            })
            .clients(kinesis.clone(), dynamodb.clone())
            .worker_id(format!("w{worker}"))
            .initial_position(InitialPosition::TrimHorizon)
            .failover_time(options.failover)
            .polling(PollingConfig::default().idle_time_between_reads(options.idle))
            .parent_poll_interval(Duration::from_millis(100))
            .cleanup_interval(options.cleanup)
            .build()?;
        handles.push(scheduler.handle());
        tasks.push(tokio::spawn(scheduler.run()));
    }
    let producer = {
        let kinesis = kinesis.clone();
        let stream = stream.clone();
        tokio::spawn(async move {
            for i in 0u64.. {
                let key = if i % 2 == 0 { start + 1 } else { middle + 1 };
                let _ = kinesis
                    .put_record()
                    .stream_name(&stream)
                    .partition_key("k")
                    .explicit_hash_key(key.to_string())
                    .data(aws_sdk_kinesis::primitives::Blob::new(format!("r{i}")))
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let parent_id = parent.shard_id().to_owned();
    wait_until("the parent's records", || {
        times
            .lock()
            .ok()
            .and_then(|t| t.get(&parent_id).and_then(|s| s.first))
            .is_some()
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    kinesis
        .split_shard()
        .stream_name(&stream)
        .shard_to_split(&parent_id)
        .new_starting_hash_key((middle + 1).to_string())
        .send()
        .await?;
    let children: Vec<String> = loop {
        let children: Vec<String> = list_shards(&kinesis, &stream)
            .await
            .into_iter()
            .filter(|s| s.parent_shard_id() == Some(parent_id.as_str()))
            .map(|s| s.shard_id().to_owned())
            .collect();
        if children.len() == 2 {
            break children;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    wait_until("both children's records", || {
        times.lock().is_ok_and(|t| {
            children
                .iter()
                .all(|c| t.get(c).and_then(|s| s.first).is_some())
        })
    })
    .await?;
    let snapshot = times.lock().map(|t| t.clone()).map_err(|_| "poisoned")?;
    let parent_times = snapshot.get(&parent_id).ok_or("no parent times")?;
    let parent_last = parent_times.last.ok_or("no parent record")?;
    let latencies: Vec<Duration> = children
        .iter()
        .filter_map(|c| snapshot.get(c).and_then(|s| s.first))
        .map(|first| first.saturating_duration_since(parent_last))
        .collect();
    let ended = parent_times.ended.ok_or("no SHARD_END")?;
    let table = LeaseTable::new(dynamodb.clone(), application.as_str());
    loop {
        if table.get(&parent_id).await?.is_none() {
            break;
        }
        if ended.elapsed() > WAIT_LIMIT {
            return Err("the parent lease was never cleaned up".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cleanup = ended.elapsed();
    producer.abort();
    for handle in &handles {
        handle.graceful_shutdown().await;
    }
    for task in tasks {
        task.await??;
    }
    delete_stream(&kinesis, &stream).await;
    delete_table(&dynamodb, &application).await;
    Ok((latencies, cleanup))
}

fn summary(samples: &mut [Duration]) -> String {
    samples.sort();
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1_000.0);
    match samples {
        [] => "-".to_owned(),
        [only] => ms(*only),
        _ => format!(
            "median {} ({}-{})",
            ms(samples[samples.len() / 2]),
            ms(samples[0]),
            ms(samples[samples.len() - 1])
        ),
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let options = options()?;
    let mut latencies = Vec::new();
    let mut cleanups = Vec::new();
    for repeat in 0..options.repeats {
        let (children, cleanup) = run_once(&options).await?;
        eprintln!("repeat {repeat}: children start {children:?}, cleanup {cleanup:?}");
        latencies.extend(children);
        cleanups.push(cleanup);
    }
    println!(
        "| workers | failover | cleanup interval | parent's last record -> child's first record | SHARD_END -> parent lease deleted |"
    );
    println!("|---|---|---|--:|--:|");
    println!(
        "| {} | {:?} | {:?} | {} | {} |",
        options.workers,
        options.failover,
        options.cleanup,
        summary(&mut latencies.clone()),
        summary(&mut cleanups.clone())
    );
    println!(
        "{{\"children_start_ms\": {:?}, \"cleanup_ms\": {:?}}}",
        latencies
            .iter()
            .map(Duration::as_millis)
            .collect::<Vec<_>>(),
        cleanups.iter().map(Duration::as_millis).collect::<Vec<_>>()
    );
    Ok(())
}
