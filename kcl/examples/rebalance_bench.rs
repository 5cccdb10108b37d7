//! How fast the [`Scheduler`]'s leases move: 3 workers on a 12-shard stream, against
//! kinesis-mock and DynamoDB Local (`scripts/emulators.sh start`).
//!
//! Each repeat starts two fresh fleets (a new application, so a new lease table) of 3 workers
//! while a background producer puts one record per shard every 100 ms, and measures:
//!
//! - `split`: from spawning the 3 workers until the table shows 4/4/4 with no unowned lease
//!   **and** each worker's `handle.metrics().leases_held` is 4 (both fleets count);
//! - `failover`: fleet 1 aborts one worker's task (no renewals, no release), then the time
//!   until the table shows its 4 shards owned by the others (`failover taken`) and until each
//!   of them has delivered a batch on another worker (`failover processing`);
//! - `graceful`: fleet 2 calls `graceful_shutdown` on one worker: how long that call takes,
//!   then until its shards are owned by others and processing there.
//!
//! Before the abort and the graceful shutdown the bench waits a random part of a take
//! interval: the workers' take cycles run in step (they started together) and the split is
//! seen just after one, so without it every event would land at the same point of the cycle.
//!
//! ```text
//! cargo run -j1 --release -p kinesis-kcl --example rebalance_bench -- [--repeats 5]
//!     [--take-interval half|default|<ms>] [--failover-ms 3000] [--idle-ms 250]
//! ```
//!
//! `--take-interval half` (the default here) is failover / 2; `default` leaves the builder's
//! default, 2 × (failover + 25 ms). Prints a markdown table (min / median / max) and, last, a
//! JSON line with every sample.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{json_samples, one_record_at_each, put_entries, shard_starts};
use integration_tests::{
    create_stream, delete_stream, delete_table, dynamodb_client, kinesis_client, unique_name,
};
use kcl::lease::LeaseTable;
use kcl::retrieval::PollingConfig;
use kcl::{
    Checkpointer, InitialPosition, ProcessRecordsInput, Scheduler, SchedulerHandle,
    ShardRecordProcessor,
};
use rand::Rng as _;

const SHARDS: usize = 12;
const WORKERS: usize = 3;
/// How long any one wait may take before the sample counts as failed.
const WAIT_LIMIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(25);

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Every batch delivered: (when, worker, shard).
type ProcessingLog = Arc<Mutex<Vec<(Instant, String, String)>>>;

struct Logger {
    worker: String,
    shard: String,
    log: ProcessingLog,
}

impl ShardRecordProcessor for Logger {
    async fn process_records(
        &mut self,
        _input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        let _ = checkpointer.checkpoint().await;
        if let Ok(mut log) = self.log.lock() {
            log.push((Instant::now(), self.worker.clone(), self.shard.clone()));
        }
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
        let _ = checkpointer.checkpoint_shard_end().await;
    }

    async fn shutdown_requested(&mut self, checkpointer: &mut Checkpointer) {
        let _ = checkpointer.checkpoint().await;
    }
}

#[derive(Debug, Clone, Copy)]
enum TakeInterval {
    Half,
    Default,
    Millis(u64),
}

#[derive(Debug, Clone)]
struct Settings {
    repeats: usize,
    failover: Duration,
    take: TakeInterval,
    idle: Duration,
}

impl Settings {
    fn from_args() -> Result<Self, Error> {
        let mut settings = Self {
            repeats: 5,
            failover: Duration::from_secs(3),
            take: TakeInterval::Half,
            idle: Duration::from_millis(250),
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--repeats" => settings.repeats = value()?.parse()?,
                "--failover-ms" => settings.failover = Duration::from_millis(value()?.parse()?),
                "--idle-ms" => settings.idle = Duration::from_millis(value()?.parse()?),
                "--take-interval" => {
                    settings.take = match value()?.as_str() {
                        "half" => TakeInterval::Half,
                        "default" => TakeInterval::Default,
                        ms => TakeInterval::Millis(ms.parse()?),
                    }
                }
                other => return Err(format!("unknown argument {other:?}").into()),
            }
        }
        Ok(settings)
    }

    /// The take interval set on the builder (`None`: the builder's default).
    fn take_interval(&self) -> Option<Duration> {
        match self.take {
            TakeInterval::Half => Some(self.failover / 2),
            TakeInterval::Default => None,
            TakeInterval::Millis(ms) => Some(Duration::from_millis(ms)),
        }
    }

    /// The take interval in force.
    fn effective_take_interval(&self) -> Duration {
        self.take_interval()
            .unwrap_or(2 * (self.failover + Duration::from_millis(25)))
    }
}

struct Worker {
    name: String,
    handle: SchedulerHandle,
    task: tokio::task::JoinHandle<()>,
}

struct Fleet {
    application: String,
    table: LeaseTable,
    log: ProcessingLog,
    workers: Vec<Worker>,
}

/// A worker leaving a fleet: when, who, and the shards it held.
struct Departure {
    since: Instant,
    worker: String,
    shards: BTreeSet<String>,
}

impl Fleet {
    async fn start(stream: &str, settings: &Settings) -> Result<Self, Error> {
        let application = unique_name("rebalance");
        let log = ProcessingLog::default();
        let kinesis = kinesis_client().await;
        let dynamodb = dynamodb_client().await;
        let mut workers = Vec::new();
        for i in 1..=WORKERS {
            let name = format!("w{i}");
            let factory = {
                let (log, worker) = (log.clone(), name.clone());
                move |shard: &str| Logger {
                    worker: worker.clone(),
                    shard: shard.to_owned(),
                    log: log.clone(),
                }
            };
            let mut builder = Scheduler::builder(application.as_str(), stream, factory)
                .clients(kinesis.clone(), dynamodb.clone())
                .worker_id(name.as_str())
                .initial_position(InitialPosition::Latest)
                .failover_time(settings.failover)
                .polling(PollingConfig::default().idle_time_between_reads(settings.idle));
            if let Some(take) = settings.take_interval() {
                builder = builder.take_interval(take);
            }
            let scheduler = builder.build()?;
            let handle = scheduler.handle();
            let worker_name = name.clone();
            let task = tokio::spawn(async move {
                if let Err(error) = scheduler.run().await {
                    eprintln!("{worker_name}: {error}");
                }
            });
            workers.push(Worker { name, handle, task });
        }
        Ok(Self {
            table: LeaseTable::new(dynamodb, application.as_str()),
            application,
            log,
            workers,
        })
    }

    /// Shards per owner (`-` for unowned); empty while the table does not exist yet.
    async fn owners(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut owners: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        if let Ok(leases) = self.table.list().await {
            for lease in leases {
                owners
                    .entry(lease.lease_owner.unwrap_or_else(|| "-".into()))
                    .or_default()
                    .insert(lease.lease_key);
            }
        }
        owners
    }

    /// Whether the table and every live worker agree on an even split of the shards.
    async fn evenly_split(&self, live: &[&Worker]) -> bool {
        let owners = self.owners().await;
        let target = SHARDS / live.len();
        let table_even = !owners.contains_key("-")
            && owners.values().map(BTreeSet::len).sum::<usize>() == SHARDS
            && live.iter().all(|w| {
                owners.get(&w.name).map_or(0, BTreeSet::len) == target
                    && w.handle.metrics().leases_held == target
            });
        table_even && owners.len() == live.len()
    }

    /// Time from the departure until the table shows none of its shards owned by the worker
    /// that left or unowned.
    async fn wait_taken(&self, departure: &Departure) -> Option<Duration> {
        let since = departure.since;
        poll(since, async || {
            let owners = self.owners().await;
            let stuck = [departure.worker.as_str(), "-"].iter().any(|owner| {
                owners
                    .get(*owner)
                    .is_some_and(|held| held.iter().any(|s| departure.shards.contains(s)))
            });
            (!stuck && !owners.is_empty()).then(|| since.elapsed())
        })
        .await
    }

    /// Time from the departure until every one of its shards delivered a batch on another
    /// worker than the one that left, after the departure.
    async fn wait_processing(&self, departure: &Departure) -> Option<Duration> {
        let since = departure.since;
        poll(since, async || {
            let log = self.log.lock().ok()?;
            let mut first: BTreeMap<&str, Instant> = BTreeMap::new();
            for (at, worker, shard) in log.iter() {
                if *at > since && *worker != departure.worker && departure.shards.contains(shard) {
                    first.entry(shard.as_str()).or_insert(*at);
                }
            }
            let latest = (first.len() == departure.shards.len())
                .then(|| first.values().max().copied())??;
            Some(latest.duration_since(since))
        })
        .await
    }

    /// Waits for the even split; the time since `started`.
    async fn wait_split(&self, started: Instant) -> Option<Duration> {
        let live: Vec<&Worker> = self.workers.iter().collect();
        let split = poll(started, async || {
            self.evenly_split(&live).await.then(|| started.elapsed())
        })
        .await;
        if split.is_none() {
            eprintln!("no even split: {:?}", self.owners().await);
        }
        split
    }

    /// Stops the workers still running and deletes the lease table.
    async fn stop(self) {
        for worker in &self.workers {
            if !worker.task.is_finished() {
                worker.handle.graceful_shutdown().await;
            }
        }
        delete_table(&dynamodb_client().await, &self.application).await;
    }
}

/// Asks `check` every [`POLL`] until it answers, for at most [`WAIT_LIMIT`] from `since`.
async fn poll(
    since: Instant,
    mut check: impl AsyncFnMut() -> Option<Duration>,
) -> Option<Duration> {
    while since.elapsed() < WAIT_LIMIT {
        if let Some(answer) = check().await {
            return Some(answer);
        }
        tokio::time::sleep(POLL).await;
    }
    None
}

/// How the last worker of a fleet leaves.
#[derive(Debug, Clone, Copy)]
enum Leave {
    /// Its task is aborted: no renewals, no release.
    Failover,
    /// It calls `graceful_shutdown`.
    Graceful,
}

/// One fleet: the even split, then its last worker leaves (after a random part of a take
/// interval), and the time until its shards are taken and processing elsewhere.
async fn split_then_leave(
    stream: &str,
    settings: &Settings,
    leave: Leave,
    repeat: usize,
    samples: &mut Samples,
) -> Result<(), Error> {
    let started = Instant::now();
    let fleet = Fleet::start(stream, settings).await?;
    let split = fleet.wait_split(started).await;
    samples.add("split", split);
    if split.is_some() {
        random_phase(settings).await;
        let leaving = &fleet.workers[WORKERS - 1];
        let shards = fleet
            .owners()
            .await
            .remove(&leaving.name)
            .unwrap_or_default();
        let departure = Departure {
            since: Instant::now(),
            worker: leaving.name.clone(),
            shards,
        };
        let (measure, what, returned) = match leave {
            Leave::Failover => {
                leaving.task.abort();
                ("failover", "failover", String::new())
            }
            Leave::Graceful => {
                leaving.handle.graceful_shutdown().await;
                let returned = departure.since.elapsed();
                samples.add("graceful_shutdown() returned", Some(returned));
                (
                    "graceful",
                    "graceful hand-back",
                    format!("returned {returned:.2?}, "),
                )
            }
        };
        let taken = fleet.wait_taken(&departure).await;
        let processing = fleet.wait_processing(&departure).await;
        samples.add(&format!("{measure} taken"), taken);
        samples.add(&format!("{measure} processing"), processing);
        eprintln!(
            "repeat {repeat}: split {split:.2?}, {what} of {} shards: {returned}taken {taken:.2?}, processing {processing:.2?}",
            departure.shards.len()
        );
    }
    fleet.stop().await;
    Ok(())
}

/// Puts one record on every shard (explicit hash key at the start of its range) every 100 ms.
async fn produce(client: aws_sdk_kinesis::Client, stream: String, starts: Vec<String>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        put_entries(&client, &stream, one_record_at_each(&starts)).await;
    }
}

async fn random_phase(settings: &Settings) {
    let interval = settings.effective_take_interval().as_millis().max(1) as u64;
    let wait = rand::rng().random_range(0..interval);
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

#[derive(Debug, Default)]
struct Samples(BTreeMap<String, Vec<Option<f64>>>);

impl Samples {
    fn add(&mut self, name: &str, value: Option<Duration>) {
        self.0
            .entry(name.to_owned())
            .or_default()
            .push(value.map(|d| d.as_secs_f64()));
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let settings = Settings::from_args()?;
    let kinesis = kinesis_client().await;
    let stream = unique_name("rebalance");
    create_stream(&kinesis, &stream, SHARDS as i32).await;
    let starts = shard_starts(&kinesis, &stream).await;
    let producer = tokio::spawn(produce(kinesis.clone(), stream.clone(), starts));
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    eprintln!(
        "{SHARDS} shards, {WORKERS} workers, failover {:?}, renew {:?} (failover / 3), take \
         interval {:?} ({:?}), idle time between reads {:?}, {} repeats, {build} build, load {}",
        settings.failover,
        settings.failover / 3,
        settings.effective_take_interval(),
        settings.take,
        settings.idle,
        settings.repeats,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );

    let mut samples = Samples::default();
    for repeat in 1..=settings.repeats {
        // Fleet 1: split, then one worker dies; fleet 2: split, then one leaves gracefully.
        for leave in [Leave::Failover, Leave::Graceful] {
            split_then_leave(&stream, &settings, leave, repeat, &mut samples).await?;
        }
    }
    producer.abort();
    delete_stream(&kinesis, &stream).await;

    println!("| measure (s) | n | failed | min | median | max |\n|---|---:|---:|---:|---:|---:|");
    let order = [
        "split",
        "failover taken",
        "failover processing",
        "graceful_shutdown() returned",
        "graceful taken",
        "graceful processing",
    ];
    for name in order {
        let values = samples.0.get(name).cloned().unwrap_or_default();
        let failed = values.iter().filter(|v| v.is_none()).count();
        let mut ok: Vec<f64> = values.into_iter().flatten().collect();
        ok.sort_by(f64::total_cmp);
        let median = if ok.is_empty() {
            f64::NAN
        } else if ok.len() % 2 == 1 {
            ok[ok.len() / 2]
        } else {
            (ok[ok.len() / 2 - 1] + ok[ok.len() / 2]) / 2.0
        };
        println!(
            "| {name} | {} | {failed} | {:.2} | {:.2} | {:.2} |",
            ok.len(),
            ok.first().copied().unwrap_or(f64::NAN),
            median,
            ok.last().copied().unwrap_or(f64::NAN),
        );
    }
    println!(
        "{{\"failover_s\":{},\"take_interval_s\":{},\"idle_s\":{},\"build\":\"{build}\",\"samples\":{}}}",
        settings.failover.as_secs_f64(),
        settings.effective_take_interval().as_secs_f64(),
        settings.idle.as_secs_f64(),
        json_samples(
            samples
                .0
                .iter()
                .map(|(name, values)| (name.as_str(), &values[..]))
        )
    );
    Ok(())
}
