//! Leases at scale, ours beside the real Java KCL 2.5.8 (its MultiLangDaemon, through the
//! test harness `integration_tests::java_kcl`), with the same settings on this machine,
//! against kinesis-mock and DynamoDB Local (`scripts/emulators.sh start`).
//!
//! ```text
//! cargo run --release -p kinesis-kcl --example lease_scale -- children --impl ours|java [--repeats 3]
//! cargo run --release -p kinesis-kcl --example lease_scale -- idle --impl ours|java|coordinator [--leases 1000]
//! cargo run --release -p kinesis-kcl --example lease_scale -- fleet --impl ours|java [--workers 10] [--shards 200] [--repeats 3]
//!   common: [--failover-ms 10000] [--idle-ms N] [--measure-s 60]
//! ```
//!
//! - `children`: one worker on a one-shard stream with records flowing (4 every 100 ms);
//!   the newest open shard is split `--repeats` times; per split, the time from the parent's
//!   last record delivered to each child's first record delivered.
//! - `idle`: one worker over `--leases` shards (a stream of that many shards; `coordinator`
//!   is our `LeaseCoordinator` alone over a table of that many leases, no stream): time to
//!   hold them all, then over `--measure-s` seconds the DynamoDB writes that bump
//!   `leaseCounter` (renew, take, checkpoint: the sum of counters before and after) and the
//!   longest time any lease went without a renewal (the table scanned every second).
//! - `fleet`: `--workers` workers started together over `--shards` shards with a record per
//!   shard every `--idle-ms`: time to an even split (the table shows every worker holding its
//!   share, none unowned), then one worker dies (ours: its task aborted; Java: `kill -9`) and
//!   the time until its shards are owned by others and until each delivered a batch elsewhere.
//!
//! Timings are the Java KCL's defaults for both (failover 10 s, renew every failover / 3,
//! take every 2 x (failover + 25 ms)) unless given. Prints a markdown table (min / median /
//! max) and a JSON line with every sample.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use common::{json_samples, one_record_at_each, put_entries, shard_starts};
use integration_tests::java_kcl::{JavaEventKind, JavaWorker, LeaseRow, scan_leases};
use integration_tests::{
    create_stream, delete_stream, delete_table, dynamodb_client, kinesis_client, list_shards,
    unique_name, wait_for_stream_active,
};
use kcl::coordinator::{CoordinatorConfig, LeaseCoordinator};
use kcl::lease::{Checkpoint, Lease, LeaseTable};
use kcl::retrieval::PollingConfig;
use kcl::{
    Checkpointer, InitialPosition, ProcessRecordsInput, Scheduler, SchedulerHandle,
    ShardRecordProcessor,
};
use rand::Rng as _;

type Error = Box<dyn std::error::Error + Send + Sync>;

const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Impl {
    Ours,
    Java,
    /// Our `LeaseCoordinator` alone (idle only).
    Coordinator,
}

impl Impl {
    fn name(self) -> &'static str {
        match self {
            Self::Ours => "ours",
            Self::Java => "Java KCL 2.5.8",
            Self::Coordinator => "ours (LeaseCoordinator alone)",
        }
    }
}

#[derive(Debug, Clone)]
struct Settings {
    command: String,
    implementation: Impl,
    repeats: usize,
    failover: Duration,
    idle: Option<Duration>,
    leases: usize,
    workers: usize,
    shards: usize,
    measure: Duration,
}

impl Settings {
    fn from_args() -> Result<Self, Error> {
        let mut args = std::env::args().skip(1);
        let command = args
            .next()
            .ok_or("usage: lease_scale children|idle|fleet --impl ours|java [...]")?;
        let mut settings = Self {
            command,
            implementation: Impl::Ours,
            repeats: 3,
            failover: Duration::from_secs(10),
            idle: None,
            leases: 1000,
            workers: 10,
            shards: 200,
            measure: Duration::from_secs(60),
        };
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--impl" => {
                    settings.implementation = match value()?.as_str() {
                        "ours" => Impl::Ours,
                        "java" => Impl::Java,
                        "coordinator" => Impl::Coordinator,
                        other => return Err(format!("unknown --impl {other:?}").into()),
                    }
                }
                "--repeats" => settings.repeats = value()?.parse()?,
                "--failover-ms" => settings.failover = Duration::from_millis(value()?.parse()?),
                "--idle-ms" => settings.idle = Some(Duration::from_millis(value()?.parse()?)),
                "--leases" => settings.leases = value()?.parse()?,
                "--workers" => settings.workers = value()?.parse()?,
                "--shards" => settings.shards = value()?.parse()?,
                "--measure-s" => settings.measure = Duration::from_secs(value()?.parse()?),
                other => return Err(format!("unknown argument {other:?}").into()),
            }
        }
        Ok(settings)
    }
}

/// Every batch delivered by our workers: (when, worker, shard, records).
type BatchLog = Arc<Mutex<Vec<(SystemTime, String, String, usize)>>>;

struct Logger {
    worker: String,
    shard: String,
    log: BatchLog,
}

impl ShardRecordProcessor for Logger {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        if let Ok(mut log) = self.log.lock() {
            log.push((
                SystemTime::now(),
                self.worker.clone(),
                self.shard.clone(),
                input.records.len(),
            ));
        }
        let _ = checkpointer.checkpoint().await;
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
        let _ = checkpointer.checkpoint_shard_end().await;
    }

    async fn shutdown_requested(&mut self, checkpointer: &mut Checkpointer) {
        let _ = checkpointer.checkpoint().await;
    }
}

struct OurWorker {
    name: String,
    handle: SchedulerHandle,
    task: tokio::task::JoinHandle<()>,
}

async fn start_ours(
    application: &str,
    stream: &str,
    name: &str,
    settings: &Settings,
    idle: Duration,
    initial: InitialPosition,
    log: &BatchLog,
) -> Result<OurWorker, Error> {
    let factory = {
        let (log, worker) = (log.clone(), name.to_owned());
        move |shard: &str| Logger {
            worker: worker.clone(),
            shard: shard.to_owned(),
            log: log.clone(),
        }
    };
    let scheduler = Scheduler::builder(application, stream, factory)
        .clients(kinesis_client().await, dynamodb_client().await)
        .worker_id(name)
        .initial_position(initial)
        .failover_time(settings.failover)
        .shard_sync_interval(Duration::from_secs(1))
        .parent_poll_interval(Duration::from_secs(2))
        .polling(PollingConfig::default().idle_time_between_reads(idle))
        .build()?;
    let handle = scheduler.handle();
    let worker = name.to_owned();
    let task = tokio::spawn(async move {
        if let Err(error) = scheduler.run().await {
            eprintln!("{worker}: {error}");
        }
    });
    Ok(OurWorker {
        name: name.to_owned(),
        handle,
        task,
    })
}

fn start_java(
    application: &str,
    stream: &str,
    name: &str,
    settings: &Settings,
    idle: Duration,
    light: bool,
) -> JavaWorker {
    let mut builder = JavaWorker::builder(application, stream)
        .worker_id(name)
        .failover_time(settings.failover)
        .idle_time_between_reads(idle)
        .shard_sync_interval(Duration::from_secs(1))
        .parent_poll_interval(Duration::from_secs(2))
        .shutdown_grace(Duration::from_secs(5))
        // Ten JVMs on a 2-core, shared machine: a small heap and the serial collector.
        .jvm_option("-Xmx320m")
        .jvm_option("-XX:+UseSerialGC");
    if light {
        builder = builder.light_processor();
    }
    builder.start()
}

/// The one worker of `settings.implementation`: "java-1" (`light`: its processor does no
/// work), or "rust-1" starting at `initial` and logging its batches to `log`.
async fn start_one(
    application: &str,
    stream: &str,
    settings: &Settings,
    idle: Duration,
    initial: InitialPosition,
    light: bool,
    log: &BatchLog,
) -> Result<(Option<JavaWorker>, Option<OurWorker>), Error> {
    Ok(match settings.implementation {
        Impl::Java => (
            Some(start_java(
                application,
                stream,
                "java-1",
                settings,
                idle,
                light,
            )),
            None,
        ),
        _ => (
            None,
            Some(start_ours(application, stream, "rust-1", settings, idle, initial, log).await?),
        ),
    })
}

/// Samples per measure, in the order first seen.
#[derive(Debug, Default)]
struct Samples(Vec<(String, Vec<Option<f64>>)>);

impl Samples {
    fn add(&mut self, name: &str, value: Option<f64>) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some((_, values)) => values.push(value),
            None => self.0.push((name.to_owned(), vec![value])),
        }
    }

    fn print(&self, implementation: Impl, context: &str) {
        println!("| impl | measure | n | failed | min | median | max |");
        println!("|---|---|---:|---:|---:|---:|---:|");
        for (name, values) in &self.0 {
            let failed = values.iter().filter(|v| v.is_none()).count();
            let mut ok: Vec<f64> = values.iter().flatten().copied().collect();
            ok.sort_by(f64::total_cmp);
            let median = match ok.len() {
                0 => f64::NAN,
                n if n % 2 == 1 => ok[n / 2],
                n => (ok[n / 2 - 1] + ok[n / 2]) / 2.0,
            };
            let fmt = |v: Option<&f64>| v.map_or_else(|| "-".to_owned(), |v| format_value(*v));
            println!(
                "| {} | {name} | {} | {failed} | {} | {} | {} |",
                implementation.name(),
                ok.len(),
                fmt(ok.first()),
                if ok.is_empty() {
                    "-".to_owned()
                } else {
                    format_value(median)
                },
                fmt(ok.last()),
            );
        }
        println!(
            "{{\"impl\":\"{}\",{context},\"samples\":{}}}",
            implementation.name(),
            json_samples(
                self.0
                    .iter()
                    .map(|(name, values)| (name.as_str(), &values[..]))
            )
        );
    }
}

fn format_value(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Puts `per_tick` records with random partition keys every `every` until aborted.
async fn produce_random(stream: String, per_tick: usize, every: Duration) {
    let kinesis = kinesis_client().await;
    let mut tick = tokio::time::interval(every);
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        let entries: Vec<PutRecordsRequestEntry> = (0..per_tick)
            .filter_map(|_| {
                n += 1;
                PutRecordsRequestEntry::builder()
                    .partition_key(format!("k{}", rand::rng().random::<u64>()))
                    .data(Blob::new(format!("r{n}").into_bytes()))
                    .build()
                    .ok()
            })
            .collect();
        put_entries(&kinesis, &stream, entries).await;
    }
}

/// Puts one record on every open shard (at the start of its hash range) every `every`.
async fn produce_per_shard(stream: String, every: Duration) {
    let kinesis = kinesis_client().await;
    let starts = shard_starts(&kinesis, &stream).await;
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        for chunk in starts.chunks(500) {
            put_entries(&kinesis, &stream, one_record_at_each(chunk)).await;
        }
    }
}

// ---------------------------------------------------------------- children

/// Deliveries by shard: (first, last) wall-clock time, from either implementation.
fn delivery_span(
    implementation: Impl,
    java: Option<&JavaWorker>,
    log: &BatchLog,
) -> BTreeMap<String, (SystemTime, SystemTime)> {
    let mut spans: BTreeMap<String, (SystemTime, SystemTime)> = BTreeMap::new();
    let mut add = |shard: &str, at: SystemTime| {
        let span = spans.entry(shard.to_owned()).or_insert((at, at));
        span.0 = span.0.min(at);
        span.1 = span.1.max(at);
    };
    if implementation == Impl::Java {
        if let Some(java) = java {
            for record in java.records() {
                add(&record.shard, record.time);
            }
        }
    } else if let Ok(log) = log.lock() {
        for (at, _, shard, records) in log.iter() {
            if *records > 0 {
                add(shard, *at);
            }
        }
    }
    spans
}

async fn children(settings: &Settings) -> Result<(), Error> {
    let kinesis = kinesis_client().await;
    let stream = unique_name("scale-children");
    let application = unique_name("scale-children-app");
    create_stream(&kinesis, &stream, 1).await;
    let producer = tokio::spawn(produce_random(
        stream.clone(),
        4,
        Duration::from_millis(100),
    ));
    let idle = settings.idle.unwrap_or(Duration::from_millis(500));
    let log = BatchLog::default();
    let (java, ours) = start_one(
        &application,
        &stream,
        settings,
        idle,
        InitialPosition::TrimHorizon,
        false,
        &log,
    )
    .await?;
    let started = Instant::now();
    while delivery_span(settings.implementation, java.as_ref(), &log).is_empty() {
        if started.elapsed() > Duration::from_secs(120) {
            return Err("no record delivered within 120 s".into());
        }
        tokio::time::sleep(POLL).await;
    }
    eprintln!(
        "{}: first record after {:.1?}",
        settings.implementation.name(),
        started.elapsed()
    );
    let mut samples = Samples::default();
    for repeat in 1..=settings.repeats {
        // Split the newest open shard in the middle of its range.
        let shards = list_shards(&kinesis, &stream).await;
        let open: Vec<_> = shards
            .iter()
            .filter(|s| {
                s.sequence_number_range()
                    .is_some_and(|r| r.ending_sequence_number().is_none())
            })
            .collect();
        let parent = open
            .iter()
            .max_by_key(|s| s.shard_id().to_owned())
            .ok_or("no open shard")?;
        let range = parent.hash_key_range().ok_or("no hash range")?;
        let start: u128 = range.starting_hash_key().parse()?;
        let end: u128 = range.ending_hash_key().parse()?;
        // Let the worker be in its steady state (leases taken, reading at the tip), then a
        // random point of its take cycle: splits one cycle apart would all land at one phase.
        let take = 2 * (settings.failover + Duration::from_millis(25));
        let phase = rand::rng().random_range(0..take.as_millis() as u64);
        tokio::time::sleep(Duration::from_secs(3) + Duration::from_millis(phase)).await;
        kinesis
            .split_shard()
            .stream_name(&stream)
            .shard_to_split(parent.shard_id())
            .new_starting_hash_key((start + (end - start) / 2).to_string())
            .send()
            .await?;
        wait_for_stream_active(&kinesis, &stream).await;
        let children: Vec<String> = list_shards(&kinesis, &stream)
            .await
            .iter()
            .filter(|s| s.parent_shard_id() == Some(parent.shard_id()))
            .map(|s| s.shard_id().to_owned())
            .collect();
        let split = Instant::now();
        let mut result = None;
        while split.elapsed() < Duration::from_secs(180) {
            let spans = delivery_span(settings.implementation, java.as_ref(), &log);
            if children.iter().all(|c| spans.contains_key(c)) {
                result = Some(spans);
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        let Some(spans) = result else {
            eprintln!("repeat {repeat}: children {children:?} not read within 180 s");
            samples.add(
                "parent's last record -> first child's first record (s)",
                None,
            );
            samples.add("parent's last record -> both children reading (s)", None);
            continue;
        };
        let parent_last = spans
            .get(parent.shard_id())
            .map(|s| s.1)
            .ok_or("parent never read")?;
        let firsts: Vec<f64> = children
            .iter()
            .map(|c| {
                spans[c]
                    .0
                    .duration_since(parent_last)
                    .map_or_else(|e| -e.duration().as_secs_f64(), |d| d.as_secs_f64())
            })
            .collect();
        let first = firsts.iter().copied().fold(f64::INFINITY, f64::min);
        let both = firsts.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        eprintln!(
            "repeat {repeat}: split {} -> {children:?}: first child after {first:.2} s, both after {both:.2} s",
            parent.shard_id()
        );
        samples.add(
            "parent's last record -> first child's first record (s)",
            Some(first),
        );
        samples.add(
            "parent's last record -> both children reading (s)",
            Some(both),
        );
    }
    producer.abort();
    if let Some(mut java) = java {
        java.stop().await;
    }
    if let Some(ours) = ours {
        ours.handle.graceful_shutdown().await;
        let _ = ours.task.await;
    }
    samples.print(
        settings.implementation,
        &format!(
            "\"bench\":\"children\",\"failover_s\":{},\"idle_s\":{},\"load\":\"{}\"",
            settings.failover.as_secs_f64(),
            idle.as_secs_f64(),
            load()
        ),
    );
    delete_stream(&kinesis, &stream).await;
    delete_table(&dynamodb_client().await, &application).await;
    Ok(())
}

// ---------------------------------------------------------------- idle

fn counter_sum(rows: &[LeaseRow]) -> u64 {
    rows.iter().map(|r| r.counter).sum()
}

/// Scans the table every second for `measure` and returns (writes that bumped leaseCounter,
/// longest time a lease went without a bump, p99 of that per lease, leases owned at the end).
async fn measure_idle(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    measure: Duration,
) -> (u64, f64, f64, usize) {
    let begin_rows = scan_leases(dynamodb, table).await;
    let begin = Instant::now();
    let mut last_change: BTreeMap<String, (u64, Instant)> = begin_rows
        .iter()
        .map(|r| (r.key.clone(), (r.counter, begin)))
        .collect();
    let mut longest: BTreeMap<String, f64> = BTreeMap::new();
    let mut rows = begin_rows.clone();
    while begin.elapsed() < measure {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rows = scan_leases(dynamodb, table).await;
        let now = Instant::now();
        for row in &rows {
            let entry = last_change
                .entry(row.key.clone())
                .or_insert((row.counter, now));
            if row.counter != entry.0 {
                *entry = (row.counter, now);
            }
            let gap = now.duration_since(entry.1).as_secs_f64();
            let worst = longest.entry(row.key.clone()).or_insert(0.0);
            *worst = worst.max(gap);
        }
    }
    let elapsed = begin.elapsed().as_secs_f64();
    let writes = counter_sum(&rows).saturating_sub(counter_sum(&begin_rows));
    let per_minute = (writes as f64 * 60.0 / elapsed).round() as u64;
    let mut gaps: Vec<f64> = longest.values().copied().collect();
    gaps.sort_by(f64::total_cmp);
    let max = gaps.last().copied().unwrap_or(f64::NAN);
    let p99 = gaps
        .get((gaps.len() * 99 / 100).min(gaps.len().saturating_sub(1)))
        .copied()
        .unwrap_or(f64::NAN);
    let owned = rows.iter().filter(|r| r.owner.is_some()).count();
    (per_minute, max, p99, owned)
}

async fn idle(settings: &Settings) -> Result<(), Error> {
    let kinesis = kinesis_client().await;
    let dynamodb = dynamodb_client().await;
    let application = unique_name("scale-idle-app");
    let idle = settings.idle.unwrap_or(Duration::from_secs(30));
    let stream = unique_name("scale-idle");
    let mut java = None;
    let mut ours = None;
    let mut coordinator = None;
    let started;
    if settings.implementation == Impl::Coordinator {
        // A table of N leases and no stream: the coordinator's cost alone.
        let table = LeaseTable::new(dynamodb.clone(), application.as_str());
        table.create_if_missing().await?;
        for i in 0..settings.leases {
            table
                .create_lease(&Lease::new(
                    format!("shardId-{i:012}"),
                    Checkpoint::TrimHorizon,
                ))
                .await?;
        }
        let config = CoordinatorConfig::builder()
            .failover_time(settings.failover)
            .max_concurrent_requests(NonZeroUsize::new(20).ok_or("zero")?)
            .build()?;
        let c = LeaseCoordinator::new(table, "rust-1", config)?;
        started = Instant::now();
        c.start()?;
        coordinator = Some(c);
    } else {
        create_stream(&kinesis, &stream, i32::try_from(settings.leases)?).await;
        started = Instant::now();
        (java, ours) = start_one(
            &application,
            &stream,
            settings,
            idle,
            InitialPosition::Latest,
            true,
            &BatchLog::default(),
        )
        .await?;
    }
    // Until the worker holds every lease.
    let held_all = loop {
        let rows = scan_leases(&dynamodb, &application).await;
        let owned = rows.iter().filter(|r| r.owner.is_some()).count();
        if owned >= settings.leases {
            break Some(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(600) {
            eprintln!(
                "only {owned} of {} leases held after 600 s",
                settings.leases
            );
            break None;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    eprintln!(
        "{}: all leases held after {held_all:.1?}",
        settings.implementation.name()
    );
    // Then until every processor has started (Java: one process per lease), and a little more.
    if let Some(java) = java.as_mut() {
        let leases = settings.leases;
        java.wait_for(
            "every processor initialized",
            Duration::from_secs(600),
            |events| {
                let started: BTreeSet<&str> = events
                    .iter()
                    .filter(|e| matches!(e.kind, JavaEventKind::Initialize { .. }))
                    .map(|e| e.shard.as_str())
                    .collect();
                (started.len() >= leases).then_some(())
            },
        )
        .await;
        eprintln!("processors started after {:.1?}", started.elapsed());
    }
    tokio::time::sleep(Duration::from_secs(15)).await;
    let rss_before = java.as_ref().map(group_rss_mib);
    let (writes, max_gap, p99_gap, owned) =
        measure_idle(&dynamodb, &application, settings.measure).await;
    eprintln!(
        "{}: {writes} counter-bumping writes/min, longest gap without renewal {max_gap:.1} s \
         (p99 {p99_gap:.1} s), {owned} owned, JVM+children RSS {rss_before:?} MiB, load {}",
        settings.implementation.name(),
        load()
    );
    let mut samples = Samples::default();
    samples.add(
        &format!("time to hold all {} leases (s)", settings.leases),
        held_all.map(|d| d.as_secs_f64()),
    );
    samples.add(
        "DynamoDB writes per minute (leaseCounter bumps)",
        Some(writes as f64),
    );
    samples.add("longest time a lease went unrenewed (s)", Some(max_gap));
    samples.add("p99 per lease of that (s)", Some(p99_gap));
    if let Some((jvm, children)) = rss_before {
        samples.add("RSS of the JVM (MiB)", Some(jvm));
        samples.add("RSS of its processor children (MiB)", Some(children));
    } else {
        samples.add("RSS of the worker process (MiB)", Some(self_rss_mib()));
    }
    if let Some(mut java) = java {
        java.kill();
    }
    if let Some(ours) = ours {
        ours.task.abort();
    }
    if let Some(c) = coordinator {
        c.abort();
    }
    samples.print(
        settings.implementation,
        &format!(
            "\"bench\":\"idle\",\"leases\":{},\"failover_s\":{},\"idle_s\":{},\"load\":\"{}\"",
            settings.leases,
            settings.failover.as_secs_f64(),
            idle.as_secs_f64(),
            load()
        ),
    );
    delete_table(&dynamodb, &application).await;
    if settings.implementation != Impl::Coordinator {
        delete_stream(&kinesis, &stream).await;
    }
    Ok(())
}

/// RSS in MiB of this process (our worker; the bench's own bookkeeping is small).
fn self_rss_mib() -> f64 {
    vm_rss_kib("/proc/self/status").map_or(f64::NAN, |kib| kib as f64 / 1024.0)
}

/// The resident set size in KiB (`VmRSS`) from a `/proc/<pid>/status` file.
fn vm_rss_kib(status: impl AsRef<std::path::Path>) -> Option<u64> {
    std::fs::read_to_string(status)
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

/// RSS in MiB of a Java worker's JVM and of the rest of its process group.
fn group_rss_mib(java: &JavaWorker) -> (f64, f64) {
    let Some(pid) = java.pid() else {
        return (0.0, 0.0);
    };
    let (mut jvm, mut rest) = (0u64, 0u64);
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Ok(proc_pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid pgrp ...: the fields after the command's closing paren.
            let Some(after) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
                continue;
            };
            let pgrp: Option<u32> = after.split_whitespace().nth(2).and_then(|p| p.parse().ok());
            if pgrp != Some(pid) {
                continue;
            }
            let rss_kib = vm_rss_kib(entry.path().join("status")).unwrap_or(0);
            if proc_pid == pid {
                jvm += rss_kib;
            } else {
                rest += rss_kib;
            }
        }
    }
    (jvm as f64 / 1024.0, rest as f64 / 1024.0)
}

// ---------------------------------------------------------------- fleet

/// Shards per owner (`-` for unowned).
fn owners(rows: &[LeaseRow]) -> BTreeMap<String, BTreeSet<String>> {
    let mut owners: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for row in rows {
        owners
            .entry(row.owner.clone().unwrap_or_else(|| "-".into()))
            .or_default()
            .insert(row.key.clone());
    }
    owners
}

fn even(owners: &BTreeMap<String, BTreeSet<String>>, live: &[String], shards: usize) -> bool {
    let low = shards / live.len();
    let high = shards.div_ceil(live.len());
    !owners.contains_key("-")
        && owners.values().map(BTreeSet::len).sum::<usize>() == shards
        && owners.len() == live.len()
        && live.iter().all(|w| {
            owners
                .get(w)
                .is_some_and(|held| (low..=high).contains(&held.len()))
        })
}

/// First batch per shard after `since`, on a worker other than `gone`.
fn batches_after(
    implementation: Impl,
    java: &[JavaWorker],
    log: &BatchLog,
    since: SystemTime,
    gone: &str,
) -> BTreeMap<String, SystemTime> {
    let mut first: BTreeMap<String, SystemTime> = BTreeMap::new();
    let mut add = |shard: &str, at: SystemTime, worker: &str| {
        if at > since && worker != gone {
            let entry = first.entry(shard.to_owned()).or_insert(at);
            *entry = (*entry).min(at);
        }
    };
    if implementation == Impl::Java {
        for worker in java {
            if worker.worker_id() == gone {
                continue;
            }
            for event in worker.events() {
                if event.kind == JavaEventKind::Batch {
                    add(&event.shard, event.time, &event.worker);
                }
            }
        }
    } else if let Ok(log) = log.lock() {
        for (at, worker, shard, records) in log.iter() {
            if *records > 0 {
                add(shard, *at, worker);
            }
        }
    }
    first
}

async fn fleet(settings: &Settings) -> Result<(), Error> {
    let kinesis = kinesis_client().await;
    let dynamodb = dynamodb_client().await;
    let stream = unique_name("scale-fleet");
    create_stream(&kinesis, &stream, i32::try_from(settings.shards)?).await;
    let idle = settings.idle.unwrap_or(Duration::from_secs(2));
    let producer = tokio::spawn(produce_per_shard(stream.clone(), idle));
    let names: Vec<String> = (1..=settings.workers).map(|i| format!("w{i:02}")).collect();
    let mut samples = Samples::default();
    eprintln!(
        "{}: {} workers over {} shards, failover {:?}, idle between reads {idle:?}, {} repeats, load {}",
        settings.implementation.name(),
        settings.workers,
        settings.shards,
        settings.failover,
        settings.repeats,
        load()
    );
    let split_limit = Duration::from_secs(900);
    let failover_limit = Duration::from_secs(180);
    for repeat in 1..=settings.repeats {
        let application = unique_name("scale-fleet-app");
        let log = BatchLog::default();
        let started = Instant::now();
        let mut java: Vec<JavaWorker> = Vec::new();
        let mut ours: Vec<OurWorker> = Vec::new();
        for name in &names {
            if settings.implementation == Impl::Java {
                java.push(start_java(
                    &application,
                    &stream,
                    name,
                    settings,
                    idle,
                    true,
                ));
            } else {
                ours.push(
                    start_ours(
                        &application,
                        &stream,
                        name,
                        settings,
                        idle,
                        InitialPosition::Latest,
                        &log,
                    )
                    .await?,
                );
            }
        }
        let mut split = None;
        let mut peak_rss = 0.0_f64;
        let mut our_rss = 0.0_f64;
        while started.elapsed() < split_limit {
            let rows = scan_leases(&dynamodb, &application).await;
            if rows.len() >= settings.shards && even(&owners(&rows), &names, settings.shards) {
                split = Some(started.elapsed());
                break;
            }
            if settings.implementation == Impl::Java {
                let rss: f64 = java
                    .iter()
                    .map(|w| {
                        let (a, b) = group_rss_mib(w);
                        a + b
                    })
                    .sum();
                peak_rss = peak_rss.max(rss);
            } else {
                our_rss = our_rss.max(self_rss_mib());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let counts: Vec<usize> = owners(&scan_leases(&dynamodb, &application).await)
            .values()
            .map(BTreeSet::len)
            .collect();
        eprintln!(
            "repeat {repeat}: even split after {split:.1?} (leases per owner {counts:?}), peak RSS {:.0} MiB",
            peak_rss.max(our_rss)
        );
        samples.add("start -> even split (s)", split.map(|d| d.as_secs_f64()));
        if settings.implementation == Impl::Java {
            samples.add(
                "peak RSS of the JVMs and their processors (MiB)",
                Some(peak_rss),
            );
        } else {
            samples.add(
                "peak RSS of the process of all workers (MiB)",
                Some(our_rss),
            );
        }
        if split.is_some() {
            // A random point of the take cycle.
            let take = 2 * (settings.failover + Duration::from_millis(25));
            let wait = rand::rng().random_range(0..take.as_millis() as u64);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            let victim = names[names.len() - 1].clone();
            let victims_shards = owners(&scan_leases(&dynamodb, &application).await)
                .remove(&victim)
                .unwrap_or_default();
            let died = Instant::now();
            let died_at = SystemTime::now();
            if settings.implementation == Impl::Java {
                if let Some(worker) = java.iter_mut().find(|w| w.worker_id() == victim) {
                    worker.kill();
                }
            } else if let Some(worker) = ours.iter().find(|w| w.name == victim) {
                worker.task.abort();
            }
            let mut taken = None;
            let mut processing = None;
            while died.elapsed() < failover_limit && processing.is_none() {
                if taken.is_none() {
                    let rows = scan_leases(&dynamodb, &application).await;
                    let stuck = rows.iter().any(|r| {
                        victims_shards.contains(&r.key)
                            && r.owner.as_deref().is_none_or(|o| o == victim)
                    });
                    if !stuck {
                        taken = Some(died.elapsed());
                    }
                }
                let first = batches_after(settings.implementation, &java, &log, died_at, &victim);
                if victims_shards.iter().all(|s| first.contains_key(s)) {
                    processing = victims_shards
                        .iter()
                        .filter_map(|s| first.get(s))
                        .max()
                        .and_then(|at| at.duration_since(died_at).ok());
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            eprintln!(
                "repeat {repeat}: {} shards of {victim}: taken after {taken:.1?}, processing after {processing:.1?}",
                victims_shards.len()
            );
            samples.add(
                "death -> its shards owned by others (s)",
                taken.map(|d| d.as_secs_f64()),
            );
            samples.add(
                "death -> its shards processing again (s)",
                processing.map(|d| d.as_secs_f64()),
            );
        }
        for mut worker in java {
            worker.kill();
        }
        for worker in ours {
            worker.task.abort();
        }
        delete_table(&dynamodb, &application).await;
    }
    producer.abort();
    delete_stream(&kinesis, &stream).await;
    samples.print(
        settings.implementation,
        &format!(
            "\"bench\":\"fleet\",\"workers\":{},\"shards\":{},\"failover_s\":{},\"idle_s\":{},\"load\":\"{}\"",
            settings.workers,
            settings.shards,
            settings.failover.as_secs_f64(),
            idle.as_secs_f64(),
            load()
        ),
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let settings = Settings::from_args()?;
    match settings.command.as_str() {
        "children" => children(&settings).await,
        "idle" => idle(&settings).await,
        "fleet" => fleet(&settings).await,
        other => Err(format!("unknown bench {other:?}: children, idle or fleet").into()),
    }
}
