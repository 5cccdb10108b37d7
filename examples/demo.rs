//! The demo (`scripts/demo.sh`): a producer and a fleet of consumer workers on one stream, with
//! a reshard and a worker replaced while records flow, and a check that nothing was lost.
//!
//! 1. creates a 4-shard stream; starts workers `a` and `b` of one application (leases and
//!    checkpoints in DynamoDB) and waits until they share the shards;
//! 2. produces records at a steady rate through the producer (aggregated, per-key order kept);
//! 3. a third of the way in, splits a shard (the children are read after their parent);
//! 4. two thirds of the way in, stops worker `a` gracefully (it checkpoints and hands its
//!    leases back) and starts worker `c`, which takes them over;
//! 5. waits until every stored record was processed, then prints a summary: produced,
//!    consumed, duplicates, lost, per-key order. Exits non-zero unless nothing was lost.
//!
//! Live progress goes to stderr (redrawn in place on a terminal, a line every two seconds
//! otherwise), the summary to stdout, so both can be redirected. Deletes its stream and lease
//! table at the end.
//!
//! ```text
//! scripts/demo.sh        # starts the emulators when no endpoint is configured
//! cargo run -p kinesis-examples --example demo -- [--records N] [--rate PER_SEC]
//! ```

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kcl::{
    Checkpointer, InitialPosition, ProcessRecordsInput, Scheduler, SchedulerHandle,
    ShardRecordProcessor,
};
use kinesis_examples::{BoxError, ensure_stream, flag};
use kpl::{MisroutedRecords, Producer, UserRecord};
use tokio::task::JoinHandle;

const KEYS: u64 = 200;

/// What the workers processed, shared by all of them.
#[derive(Default)]
struct Ledger {
    /// Times each record id was processed.
    times: HashMap<u64, u32>,
    /// Per key, the highest record id processed (ids grow per key in production order).
    last_per_key: HashMap<u64, u64>,
    /// First deliveries that came after a later record of the same key.
    order_inversions: u64,
}

impl Ledger {
    fn record(&mut self, id: u64) {
        let times = self.times.entry(id).or_default();
        *times += 1;
        if *times > 1 {
            return;
        }
        let last = self.last_per_key.entry(id % KEYS).or_insert(id);
        if id < *last {
            self.order_inversions += 1;
        }
        *last = (*last).max(id);
    }
}

struct DemoProcessor {
    ledger: Arc<Mutex<Ledger>>,
    processed: Arc<AtomicU64>,
}

impl ShardRecordProcessor for DemoProcessor {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        if let Ok(mut ledger) = self.ledger.lock() {
            for record in &input.records {
                let id = std::str::from_utf8(record.data())
                    .ok()
                    .and_then(|text| text.strip_prefix("record "))
                    .and_then(|id| id.parse().ok());
                if let Some(id) = id {
                    ledger.record(id);
                }
            }
        }
        self.processed
            .fetch_add(input.records.len() as u64, Ordering::Relaxed);
        if let Err(error) = checkpointer.checkpoint().await {
            eprintln!("\ncheckpoint failed (records since the last one are read again): {error}");
        }
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
        let _ = checkpointer.checkpoint_shard_end().await;
    }

    async fn shutdown_requested(&mut self, checkpointer: &mut Checkpointer) {
        let _ = checkpointer.checkpoint().await;
    }
}

struct Worker {
    name: &'static str,
    handle: SchedulerHandle,
    task: JoinHandle<Result<(), kcl::SchedulerError>>,
    processed: Arc<AtomicU64>,
    stopped: bool,
}

struct Demo {
    config: aws_config::SdkConfig,
    stream: String,
    application: String,
    ledger: Arc<Mutex<Ledger>>,
}

impl Demo {
    fn start_worker(&self, name: &'static str) -> Result<Worker, BoxError> {
        let processed = Arc::new(AtomicU64::new(0));
        let (ledger, counter) = (self.ledger.clone(), processed.clone());
        let scheduler = Scheduler::builder(
            self.application.as_str(),
            self.stream.as_str(),
            move |_: &str| DemoProcessor {
                ledger: ledger.clone(),
                processed: counter.clone(),
            },
        )
        .sdk_config(&self.config)
        .worker_id(name)
        .initial_position(InitialPosition::TrimHorizon)
        .failover_time(Duration::from_secs(3))
        .polling(
            kcl::retrieval::PollingConfig::default()
                .idle_time_between_reads(Duration::from_millis(200)),
        )
        .build()?;
        let handle = scheduler.handle();
        Ok(Worker {
            name,
            handle,
            task: tokio::spawn(scheduler.run()),
            processed,
            stopped: false,
        })
    }
}

/// Counters the producer side keeps for the progress line and the summary.
#[derive(Default)]
struct Produced {
    sent: AtomicU64,
    stored: AtomicU64,
    failed: AtomicU64,
    possibly_duplicated: AtomicU64,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let records: u64 = flag(&args, "--records")?.unwrap_or(30_000);
    let rate: u64 = flag(&args, "--rate")?.unwrap_or(1_500).max(1);
    let config = aws_config::load_from_env().await;
    let kinesis = aws_sdk_kinesis::Client::new(&config);
    let stream = format!("demo-{}", uuid::Uuid::new_v4().simple());
    ensure_stream(&kinesis, &stream, 4).await?;
    let demo = Demo {
        config: config.clone(),
        application: format!("{stream}-app"),
        stream: stream.clone(),
        ledger: Arc::default(),
    };
    eprintln!(
        "stream {stream}: 4 shards; application {}",
        demo.application
    );

    let mut workers = vec![demo.start_worker("a")?, demo.start_worker("b")?];
    wait_for_split(&workers).await;

    let producer = Producer::builder(stream.as_str())
        .sdk_config(&config)
        .ordered(true)
        // Our consumer filters each sub-record by its shard's range, so after the split only
        // the records of an aggregate that landed on the wrong child need sending again.
        .misrouted_records(MisroutedRecords::ResendOutOfRange)
        .build()
        .await?;
    let produced = Arc::new(Produced::default());
    let started = Instant::now();
    let mut sending = tokio::spawn(produce(producer.clone(), records, rate, produced.clone()));

    let mut split_done = false;
    let mut replaced = false;
    let mut progress = Progress::new();
    let deadline = Duration::from_secs(30) + Duration::from_secs(records / rate) * 3;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let sent = produced.sent.load(Ordering::Relaxed);
        if !split_done && sent >= records / 3 {
            split_done = true;
            let (parent, children) = split_first_shard(&kinesis, &stream).await?;
            progress.event(format!("split {parent} into {children}"));
        }
        if !replaced && sent >= records * 2 / 3 {
            replaced = true;
            let a = &mut workers[0];
            let held = a.handle.metrics().leases_held;
            a.handle.graceful_shutdown().await;
            a.stopped = true;
            progress.event(format!(
                "worker a stopped gracefully (handed back {held} leases); starting worker c"
            ));
            workers.push(demo.start_worker("c")?);
        }
        progress.draw(&produced, &workers, &demo.ledger);
        let processed_all = sending.is_finished() && {
            let stored = produced.stored.load(Ordering::Relaxed);
            demo.ledger.lock().map_or(0, |l| l.times.len() as u64) >= stored
        };
        if processed_all || started.elapsed() > deadline {
            break;
        }
    }
    if !sending.is_finished() {
        sending.abort();
    }
    let _ = (&mut sending).await;
    producer.shutdown().await;
    progress.finish(&produced, &workers, &demo.ledger);

    for worker in &mut workers {
        if !worker.stopped {
            worker.handle.graceful_shutdown().await;
            worker.stopped = true;
        }
    }
    for worker in workers {
        worker.task.await??;
    }
    let summary = summarize(&produced, &demo.ledger, started.elapsed());
    cleanup(&config, &stream, &demo.application).await;
    summary
}

/// Waits (at most 30 s) until the two workers hold two shards each, so both share the work
/// from the first record on.
async fn wait_for_split(workers: &[Worker]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && workers.iter().any(|w| w.handle.metrics().leases_held != 2) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `records` records at `rate` per second, then counts their receipts.
async fn produce(producer: Producer, records: u64, rate: u64, produced: Arc<Produced>) {
    let (receipts_tx, mut receipts_rx) = tokio::sync::mpsc::unbounded_channel::<kpl::Receipt>();
    let counter = produced.clone();
    let counting = tokio::spawn(async move {
        while let Some(receipt) = receipts_rx.recv().await {
            match receipt.await {
                Ok(stored) => {
                    counter.stored.fetch_add(1, Ordering::Relaxed);
                    if stored.possibly_duplicated {
                        counter.possibly_duplicated.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(_) => {
                    counter.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    let tick = Duration::from_millis(20);
    let per_tick = (rate * tick.as_millis() as u64 / 1000).max(1);
    let mut ticks = tokio::time::interval(tick);
    let mut id = 0;
    while id < records {
        ticks.tick().await;
        for _ in 0..per_tick.min(records - id) {
            let record = UserRecord::new(format!("key-{}", id % KEYS), format!("record {id}"));
            match producer.send(record).await {
                Ok(receipt) => {
                    let _ = receipts_tx.send(receipt);
                }
                Err(_) => {
                    produced.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            id += 1;
            produced.sent.store(id, Ordering::Relaxed);
        }
    }
    drop(receipts_tx);
    let _ = counting.await;
}

/// Splits the stream's first open shard at the middle of its range.
async fn split_first_shard(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<(String, String), BoxError> {
    let shards = kinesis.list_shards().stream_name(stream).send().await?;
    let parent = shards
        .shards()
        .iter()
        .find(|s| {
            s.sequence_number_range()
                .is_some_and(|r| r.ending_sequence_number().is_none())
        })
        .ok_or("no open shard to split")?;
    let range = parent
        .hash_key_range()
        .ok_or("shard without a hash range")?;
    let start: u128 = range.starting_hash_key().parse()?;
    let end: u128 = range.ending_hash_key().parse()?;
    kinesis
        .split_shard()
        .stream_name(stream)
        .shard_to_split(parent.shard_id())
        .new_starting_hash_key((start + (end - start) / 2 + 1).to_string())
        .send()
        .await?;
    Ok((parent.shard_id().to_owned(), "two children".to_owned()))
}

/// The live progress on stderr.
struct Progress {
    terminal: bool,
    last_line: Instant,
    drawn: bool,
}

impl Progress {
    fn new() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
            last_line: Instant::now(),
            drawn: false,
        }
    }

    fn event(&mut self, what: String) {
        self.clear();
        eprintln!("-- {what}");
    }

    fn clear(&mut self) {
        if self.terminal && self.drawn {
            eprint!("\r\x1b[2K");
            self.drawn = false;
        }
    }

    fn line(produced: &Produced, workers: &[Worker], ledger: &Mutex<Ledger>) -> String {
        let consumed = ledger.lock().map_or(0, |l| l.times.len());
        let mut line = format!(
            "produced {} (stored {}) | consumed {consumed} |",
            produced.sent.load(Ordering::Relaxed),
            produced.stored.load(Ordering::Relaxed),
        );
        for worker in workers.iter().filter(|w| !w.stopped) {
            let metrics = worker.handle.metrics();
            // Per shard held: its number and how far behind the tip it is.
            let lag: Vec<String> = metrics
                .millis_behind_latest
                .iter()
                .map(|(shard, ms)| {
                    let number = shard.trim_start_matches("shardId-").trim_start_matches('0');
                    format!("#{} {ms} ms", if number.is_empty() { "0" } else { number })
                })
                .collect();
            line.push_str(&format!(
                " {}: {} rec, lag [{}] |",
                worker.name,
                worker.processed.load(Ordering::Relaxed),
                lag.join(", ")
            ));
        }
        line
    }

    fn draw(&mut self, produced: &Produced, workers: &[Worker], ledger: &Mutex<Ledger>) {
        let line = Self::line(produced, workers, ledger);
        if self.terminal {
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
            self.drawn = true;
        } else if self.last_line.elapsed() >= Duration::from_secs(2) {
            eprintln!("{line}");
            self.last_line = Instant::now();
        }
    }

    fn finish(&mut self, produced: &Produced, workers: &[Worker], ledger: &Mutex<Ledger>) {
        self.clear();
        eprintln!("{}", Self::line(produced, workers, ledger));
    }
}

fn summarize(produced: &Produced, ledger: &Mutex<Ledger>, took: Duration) -> Result<(), BoxError> {
    let ledger = ledger.lock().map_err(|_| "a processor panicked")?;
    let stored = produced.stored.load(Ordering::Relaxed);
    let failed = produced.failed.load(Ordering::Relaxed);
    let consumed = ledger.times.len() as u64;
    let duplicates: u64 = ledger.times.values().map(|&t| u64::from(t - 1)).sum();
    let lost = stored.saturating_sub(consumed);
    println!("demo summary ({:.1} s)", took.as_secs_f64());
    println!(
        "  produced:    {} records ({stored} stored, {failed} failed)",
        produced.sent.load(Ordering::Relaxed)
    );
    println!(
        "  consumed:    {consumed} distinct records by 3 workers, across a split and a worker replaced"
    );
    println!(
        "  duplicates:  {duplicates} (records processed twice; {} receipts said possibly duplicated)",
        produced.possibly_duplicated.load(Ordering::Relaxed)
    );
    println!("  lost:        {lost}");
    println!(
        "  order:       {} per-key inversions",
        ledger.order_inversions
    );
    if lost > 0 || failed > 0 {
        return Err(format!("{lost} stored records were never processed, {failed} failed").into());
    }
    Ok(())
}

/// Deletes the demo's stream and lease table (best effort: the emulators are stopped anyway).
async fn cleanup(config: &aws_config::SdkConfig, stream: &str, table: &str) {
    let kinesis = aws_sdk_kinesis::Client::new(config);
    let _ = kinesis
        .delete_stream()
        .stream_name(stream)
        .enforce_consumer_deletion(true)
        .send()
        .await;
    let dynamodb = aws_sdk_dynamodb::Client::new(config);
    let _ = dynamodb.delete_table().table_name(table).send().await;
}
