//! `kinesis-cat perf consume`: the consumer's CPU cost per user record, against an in-process
//! read sink (`fault_proxy::Upstream::ReadSink`), so Kinesis is not the limit.
//!
//! Three modes peel the consumer apart:
//!
//! - `scheduler` (default): one kcl [`Scheduler`] worker (lease table and checkpoints in
//!   DynamoDB: the endpoint comes from the environment, e.g. DynamoDB Local through
//!   `AWS_ENDPOINT_URL_DYNAMODB`) with a processor that counts records and checkpoints once per
//!   batch: GetRecords, deaggregation, dispatch and checkpoint bookkeeping.
//! - `polling`: one [`PollingSource`] per shard (with the shard's hash range, as the
//!   Scheduler gives it), no leases, no checkpoints: GetRecords and deaggregation only.
//! - `sdk`: a bare `aws-sdk-kinesis` GetRecords loop per shard: the HTTP and JSON cost the
//!   other two build on.
//!
//! The sink runs on its own thread (a current-thread runtime), so its CPU time is read from
//! that thread's `/proc/self/task/<tid>/stat` and subtracted from the process's
//! (`/proc/self/stat`): `consumer` figures are the process minus the sink. Both count from just
//! before the consumer starts until the last record was processed (and checkpointed).
//! Under `taskset -c N` everything (consumer runtime, sink thread) shares that one core.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use aggregation_proto::HashRange;
use aws_sdk_kinesis::types::ShardIteratorType;
use clap::{Args, ValueEnum};
use fault_proxy::{FaultProxy, Faults, Upstream, even_hash_ranges, shard_id};
use kcl::retrieval::{PollingConfig, PollingSource, RecordSource, StartingPosition};
use kcl::{Checkpointer, InitialPosition, ProcessRecordsInput, Scheduler, ShardRecordProcessor};
use serde::Serialize;
use tokio::sync::{Notify, oneshot};

use crate::cloudwatch_metrics::Telemetry;
use crate::jsonl::CliError;

/// The stream name the consumer reads (the sink answers for any name).
const STREAM: &str = "perf";

#[derive(Debug, Args)]
pub(crate) struct PerfConsumeArgs {
    /// Shards of the sink's stream.
    #[arg(long, default_value_t = 4)]
    shards: u32,
    /// User records generated per shard.
    #[arg(long, default_value_t = 250_000)]
    records_per_shard: u64,
    /// Bytes of random data per user record.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Pack the records into KPL aggregates (51,200 bytes at most), as the KPL does.
    #[arg(long)]
    aggregated: bool,
    /// Distinct random partition keys (16 characters).
    #[arg(long, default_value_t = 1_000)]
    keys: usize,
    /// What consumes: the kcl Scheduler, PollingSources without leases, or bare SDK calls.
    #[arg(long, value_enum, default_value_t = Mode::Scheduler)]
    mode: Mode,
    /// GetRecords Limit (Kinesis records per call, an aggregate counting once).
    #[arg(long, default_value_t = 10_000)]
    max_records: i32,
    /// Scheduler mode: do not checkpoint (to see what checkpointing costs).
    #[arg(long)]
    no_checkpoint: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_seconds: u64,
    #[command(flatten)]
    metrics: crate::metrics_export::MetricsArgs,
    #[command(flatten)]
    cloudwatch: crate::cloudwatch_metrics::CloudWatchArgs,
}

/// What consumes the sink's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// kcl Scheduler: leases, a processor per shard, a checkpoint per batch.
    Scheduler,
    /// kcl PollingSource per shard (GetRecords + deaggregation), no leases or checkpoints.
    Polling,
    /// aws-sdk-kinesis GetRecords per shard, no deaggregation.
    Sdk,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Scheduler => "scheduler",
            Self::Polling => "polling",
            Self::Sdk => "sdk",
        }
    }
}

#[derive(Debug, Serialize)]
struct ConsumeReport {
    #[serde(rename = "impl")]
    implementation: &'static str,
    mode: Mode,
    shards: u32,
    records_per_shard: u64,
    record_size: usize,
    aggregated: bool,
    keys: usize,
    max_records: i32,
    checkpoint: bool,
    /// User records consumed (in `sdk` mode, which does not deaggregate: the data set's).
    user_records: u64,
    /// Kinesis records GetRecords returned (aggregates count once).
    kinesis_records: u64,
    data_bytes: u64,
    get_records_calls: u64,
    /// Non-empty batches handed to processors (or read, in `polling` and `sdk` modes).
    batches: u64,
    checkpoints: u64,
    checkpoint_failures: u64,
    /// From starting the consumer until the last record was processed.
    seconds: f64,
    /// From starting the consumer until the first record was processed (lease table, shard
    /// sync, lease taking, first GetRecords).
    startup_seconds: f64,
    user_records_per_sec: f64,
    mb_per_sec: f64,
    /// Records per second from the first record to the last.
    steady_records_per_sec: f64,
    process_cpu_seconds: f64,
    sink_cpu_seconds: f64,
    consumer_cpu_seconds: f64,
    process_cpu_us_per_record: f64,
    sink_cpu_us_per_record: f64,
    consumer_cpu_us_per_record: f64,
    /// User records per consumer CPU second: the per-core figure.
    consumer_records_per_cpu_sec: f64,
    /// Process CPU time over wall time (1.0 = one core busy).
    cpu_utilization: f64,
    /// CPUs this process may run on (taskset).
    cpus_allowed: usize,
    peak_rss_mib: f64,
    load1: f64,
}

/// Counters shared by every processor or reader task.
#[derive(Debug, Default)]
struct Progress {
    records: AtomicU64,
    bytes: AtomicU64,
    batches: AtomicU64,
    checkpoints: AtomicU64,
    checkpoint_failures: AtomicU64,
    total: u64,
    first: std::sync::OnceLock<Instant>,
    done: Notify,
}

impl Progress {
    fn new(total: u64) -> Self {
        Self {
            total,
            ..Self::default()
        }
    }

    fn add(&self, records: usize, bytes: usize) {
        if records == 0 {
            return;
        }
        self.first.get_or_init(Instant::now);
        self.bytes.fetch_add(bytes as u64, Relaxed);
        self.batches.fetch_add(1, Relaxed);
        let before = self.records.fetch_add(records as u64, Relaxed);
        if before < self.total && before + records as u64 >= self.total {
            self.done.notify_one();
        }
    }

    fn records(&self) -> u64 {
        self.records.load(Relaxed)
    }
}

/// Counts records and checkpoints once per batch.
struct Counter {
    progress: Arc<Progress>,
    checkpoint: bool,
}

impl ShardRecordProcessor for Counter {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        let bytes = input.records.iter().map(|r| r.data().len()).sum();
        if self.checkpoint {
            let counter = match checkpointer.checkpoint().await {
                Ok(()) => &self.progress.checkpoints,
                Err(_) => &self.progress.checkpoint_failures,
            };
            counter.fetch_add(1, Relaxed);
        }
        self.progress.add(input.records.len(), bytes);
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
        let _ = checkpointer.checkpoint_shard_end().await;
    }
}

/// CPU time of the whole process and of the sink's thread, in seconds.
#[derive(Debug, Clone, Copy, Default)]
struct CpuSample {
    process: f64,
    sink: f64,
}

/// utime + stime of a `/proc/.../stat` file, in seconds (0 where unreadable).
fn stat_cpu_seconds(path: &str) -> f64 {
    let ticks = std::fs::read_to_string(path).ok().and_then(|stat| {
        // Fields after the command name (which may hold spaces) in parentheses; utime and
        // stime are the 14th and 15th fields, the 12th and 13th after the name.
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut fields = rest.split_whitespace().skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        Some(utime + stime)
    });
    // USER_HZ is 100 on every Linux architecture that matters here.
    ticks.map_or(0.0, |ticks| ticks as f64 / 100.0)
}

fn cpu_sample(sink_thread: &str) -> CpuSample {
    CpuSample {
        process: stat_cpu_seconds("/proc/self/stat"),
        sink: stat_cpu_seconds(sink_thread),
    }
}

/// A value from `/proc/self/status` (e.g. `VmHWM:` in kB, `Cpus_allowed_list:`).
fn status_field(name: &str) -> Option<String> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix(name).map(|v| v.trim().to_owned()))
}

/// Peak resident memory of this process (VmHWM), in MiB; 0 where /proc is missing.
pub(crate) fn peak_rss_mib() -> f64 {
    status_field("VmHWM:")
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// How many CPUs `Cpus_allowed_list` (`0-1`, `1`, `0,2-3`) names.
fn cpus_allowed() -> usize {
    status_field("Cpus_allowed_list:").map_or(0, |list| {
        list.split(',')
            .map(|part| match part.split_once('-') {
                Some((a, b)) => match (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
                    (Ok(a), Ok(b)) if b >= a => b - a + 1,
                    _ => 0,
                },
                None => usize::from(!part.trim().is_empty()),
            })
            .sum()
    })
}

fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The read sink on its own thread and current-thread runtime.
struct SinkThread {
    endpoint: String,
    /// `/proc/self/task/<tid>/stat` of the thread.
    stat_path: String,
    proxy_stats: tokio::sync::mpsc::Sender<oneshot::Sender<fault_proxy::Stats>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SinkThread {
    fn start(upstream: Upstream) -> Result<Self, CliError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (stats_tx, mut stats_rx) =
            tokio::sync::mpsc::channel::<oneshot::Sender<fault_proxy::Stats>>(1);
        let thread = std::thread::Builder::new()
            .name("read-sink".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ = ready_tx.send(Err(format!("sink runtime: {err}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let proxy = match FaultProxy::start(upstream, Faults::default()).await {
                        Ok(proxy) => proxy,
                        Err(err) => {
                            let _ = ready_tx.send(Err(format!("read sink: {err}")));
                            return;
                        }
                    };
                    let stat = std::fs::read_link("/proc/thread-self")
                        .map(|link| format!("/proc/{}/stat", link.display()))
                        .unwrap_or_default();
                    let _ = ready_tx.send(Ok((proxy.endpoint_url(), stat)));
                    let mut stop_rx = stop_rx;
                    loop {
                        tokio::select! {
                            _ = &mut stop_rx => break,
                            Some(reply) = stats_rx.recv() => { let _ = reply.send(proxy.stats()); }
                        }
                    }
                    proxy.shutdown().await;
                });
            })?;
        let (endpoint, stat_path) = ready_rx
            .recv()
            .map_err(|_| CliError::Usage("the read sink thread died".into()))?
            .map_err(CliError::Usage)?;
        Ok(Self {
            endpoint,
            stat_path,
            proxy_stats: stats_tx,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    async fn stats(&self) -> fault_proxy::Stats {
        let (tx, rx) = oneshot::channel();
        if self.proxy_stats.send(tx).await.is_err() {
            return fault_proxy::Stats::default();
        }
        rx.await.unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for SinkThread {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn run(args: PerfConsumeArgs) -> Result<(), CliError> {
    if args.shards == 0 || args.records_per_shard == 0 {
        return Err(CliError::Usage(
            "--shards and --records-per-shard must be at least 1".into(),
        ));
    }
    let upstream = Upstream::ReadSink {
        shards: args.shards,
        records_per_shard: args.records_per_shard,
        record_size: args.record_size,
        aggregated: args.aggregated,
        keys: args.keys,
    };
    let generating = Instant::now();
    let mut sink = SinkThread::start(upstream)?;
    eprintln!(
        "read sink: {} shards x {} records of {} B{} generated in {:.1} s at {}",
        args.shards,
        args.records_per_shard,
        args.record_size,
        if args.aggregated { " (aggregated)" } else { "" },
        generating.elapsed().as_secs_f64(),
        sink.endpoint
    );
    let runtime = tokio::runtime::Runtime::new()?;
    // What the metrics cost is part of what is measured, when a flag asks for them.
    let telemetry = Telemetry::start(
        &runtime,
        &args.metrics,
        &args.cloudwatch,
        kcl::cloudwatch::Builder::consumer(STREAM, "perf-worker"),
    )?;
    let result = runtime.block_on(perf_consume(&args, &sink));
    telemetry.finish(&runtime);
    drop(runtime);
    sink.stop();
    result
}

async fn perf_consume(args: &PerfConsumeArgs, sink: &SinkThread) -> Result<(), CliError> {
    let config = aws_config::load_from_env().await;
    let mut kinesis_config =
        aws_sdk_kinesis::config::Builder::from(&config).endpoint_url(&sink.endpoint);
    if config.region().is_none() {
        kinesis_config = kinesis_config.region(aws_sdk_kinesis::config::Region::new("us-east-1"));
    }
    let kinesis = aws_sdk_kinesis::Client::from_conf(kinesis_config.build());
    let total = u64::from(args.shards) * args.records_per_shard;
    let progress = Arc::new(Progress::new(total));
    let load = load1();

    let before = cpu_sample(&sink.stat_path);
    let started = Instant::now();
    let deadline = Duration::from_secs(args.timeout_seconds);
    let finished = match args.mode {
        Mode::Scheduler => {
            run_scheduler(args, &config, kinesis, &progress, deadline, &sink.stat_path).await?
        }
        Mode::Polling | Mode::Sdk => {
            let mut readers = tokio::task::JoinSet::new();
            let ranges = even_hash_ranges(args.shards);
            for index in 0..args.shards {
                let kinesis = kinesis.clone();
                let progress = Arc::clone(&progress);
                let (mode, limit, records) = (args.mode, args.max_records, args.records_per_shard);
                // The shard's hash range, as the Scheduler passes it from the lease: the
                // deaggregator then checks every sub-record's key against it.
                let range = ranges
                    .get(index as usize)
                    .and_then(|&(start, end)| HashRange::new(start, end).ok());
                readers.spawn(async move {
                    let shard = shard_id(index);
                    if mode == Mode::Polling {
                        read_polling(kinesis, shard, range, limit, records, &progress).await
                    } else {
                        read_sdk(kinesis, shard, limit, &progress).await
                    }
                });
            }
            let wait = async {
                while let Some(joined) = readers.join_next().await {
                    joined.map_err(|e| CliError::Usage(format!("reader task: {e}")))??;
                }
                Ok::<_, CliError>(())
            };
            tokio::time::timeout(deadline, wait)
                .await
                .map_err(|_| timed_out(&progress, deadline))??;
            (Instant::now(), cpu_sample(&sink.stat_path))
        }
    };
    let (ended, after) = finished;
    let stats = sink.stats().await;

    let seconds = ended.duration_since(started).as_secs_f64();
    let first = progress.first.get().copied().unwrap_or(ended);
    let startup = first.duration_since(started).as_secs_f64();
    // The sdk mode counts Kinesis records (no deaggregation); every mode reads the same user
    // records, so the per-record figures are per user record in all modes.
    let records = if args.mode == Mode::Sdk {
        total
    } else {
        progress.records()
    };
    let bytes = if args.mode == Mode::Sdk {
        total * args.record_size as u64
    } else {
        progress.bytes.load(Relaxed)
    };
    let process_cpu = after.process - before.process;
    let sink_cpu = after.sink - before.sink;
    let consumer_cpu = (process_cpu - sink_cpu).max(0.0);
    let per_record = |cpu: f64| cpu * 1e6 / records.max(1) as f64;
    let report = ConsumeReport {
        implementation: "rust kcl",
        mode: args.mode,
        shards: args.shards,
        records_per_shard: args.records_per_shard,
        record_size: args.record_size,
        aggregated: args.aggregated,
        keys: args.keys,
        max_records: args.max_records,
        checkpoint: args.mode == Mode::Scheduler && !args.no_checkpoint,
        user_records: records,
        kinesis_records: stats.records_read,
        data_bytes: bytes,
        get_records_calls: stats.requests_for("GetRecords"),
        batches: progress.batches.load(Relaxed),
        checkpoints: progress.checkpoints.load(Relaxed),
        checkpoint_failures: progress.checkpoint_failures.load(Relaxed),
        seconds,
        startup_seconds: startup,
        user_records_per_sec: records as f64 / seconds,
        mb_per_sec: bytes as f64 / 1e6 / seconds,
        steady_records_per_sec: records as f64 / (seconds - startup).max(1e-9),
        process_cpu_seconds: process_cpu,
        sink_cpu_seconds: sink_cpu,
        consumer_cpu_seconds: consumer_cpu,
        process_cpu_us_per_record: per_record(process_cpu),
        sink_cpu_us_per_record: per_record(sink_cpu),
        consumer_cpu_us_per_record: per_record(consumer_cpu),
        consumer_records_per_cpu_sec: records as f64 / consumer_cpu.max(1e-9),
        cpu_utilization: process_cpu / seconds,
        cpus_allowed: cpus_allowed(),
        peak_rss_mib: peak_rss_mib(),
        load1: load,
    };
    eprintln!(
        "{} mode, {} records of {} B{}: {:.0} rec/s ({:.1} MB/s) over {:.2} s ({:.2} s to the \
         first record), {} GetRecords, {} batches, {} checkpoints; CPU {:.2} µs/rec \
         (consumer {:.2}, in-process sink {:.2}), {:.0} rec per consumer CPU-second, \
         {} CPU(s) allowed, load {:.2}",
        report.mode.name(),
        report.user_records,
        report.record_size,
        if report.aggregated {
            " (aggregated)"
        } else {
            ""
        },
        report.user_records_per_sec,
        report.mb_per_sec,
        report.seconds,
        report.startup_seconds,
        report.get_records_calls,
        report.batches,
        report.checkpoints,
        report.process_cpu_us_per_record,
        report.consumer_cpu_us_per_record,
        report.sink_cpu_us_per_record,
        report.consumer_records_per_cpu_sec,
        report.cpus_allowed,
        report.load1,
    );
    println!(
        "{}",
        serde_json::to_string(&report).map_err(std::io::Error::other)?
    );
    if report.checkpoint_failures > 0 {
        return Err(CliError::Usage(format!(
            "{} checkpoints failed",
            report.checkpoint_failures
        )));
    }
    Ok(())
}

fn timed_out(progress: &Progress, deadline: Duration) -> CliError {
    CliError::Usage(format!(
        "only {} of {} records consumed within {deadline:?}",
        progress.records(),
        progress.total
    ))
}

/// Scheduler mode: one worker over every shard; returns when the last record was processed
/// (with the CPU sample taken then), after a graceful shutdown that is not timed.
async fn run_scheduler(
    args: &PerfConsumeArgs,
    config: &aws_config::SdkConfig,
    kinesis: aws_sdk_kinesis::Client,
    progress: &Arc<Progress>,
    deadline: Duration,
    sink_stat: &str,
) -> Result<(Instant, CpuSample), CliError> {
    if std::env::var_os("AWS_ENDPOINT_URL_DYNAMODB").is_none()
        && std::env::var_os("AWS_ENDPOINT_URL").is_none()
    {
        return Err(CliError::Usage(
            "scheduler mode keeps its leases in DynamoDB: point AWS_ENDPOINT_URL_DYNAMODB at \
             DynamoDB Local (eval \"$(scripts/emulators.sh env)\"), or use --mode polling"
                .into(),
        ));
    }
    let dynamodb = aws_sdk_dynamodb::Client::new(config);
    let application = format!("perf-consume-{}", std::process::id());
    let polling = PollingConfig::default()
        .max_records(args.max_records)
        .min_time_between_calls(Duration::ZERO)
        .idle_time_between_reads(Duration::from_millis(200));
    let factory = {
        let progress = Arc::clone(progress);
        let checkpoint = !args.no_checkpoint;
        move |_shard: &str| Counter {
            progress: Arc::clone(&progress),
            checkpoint,
        }
    };
    let scheduler = Scheduler::builder(application.as_str(), STREAM, factory)
        .clients(kinesis, dynamodb.clone())
        .worker_id("perf-consume")
        .initial_position(InitialPosition::TrimHorizon)
        .polling(polling)
        .build()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let handle = scheduler.handle();
    let mut worker = tokio::spawn(scheduler.run());
    let outcome = tokio::select! {
        () = progress.done.notified() => Ok((Instant::now(), cpu_sample(sink_stat))),
        () = tokio::time::sleep(deadline) => Err(timed_out(progress, deadline)),
        ended = &mut worker => Err(CliError::Usage(match ended {
            Ok(Ok(())) => "the worker stopped before reading everything".to_owned(),
            Ok(Err(err)) => format!("worker: {err}"),
            Err(err) => format!("worker task: {err}"),
        })),
    };
    if !worker.is_finished() {
        handle.graceful_shutdown().await;
        match worker.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => eprintln!("worker: {err}"),
            Err(err) => eprintln!("worker task: {err}"),
        }
    }
    if let Err(err) = dynamodb
        .delete_table()
        .table_name(&application)
        .send()
        .await
    {
        eprintln!(
            "could not delete lease table {application}: {}",
            aws_sdk_dynamodb::error::DisplayErrorContext(&err)
        );
    }
    outcome
}

/// Polling mode: one PollingSource until the shard's records are all read.
async fn read_polling(
    kinesis: aws_sdk_kinesis::Client,
    shard: String,
    range: Option<HashRange>,
    limit: i32,
    records: u64,
    progress: &Progress,
) -> Result<(), CliError> {
    let polling = PollingConfig::default()
        .max_records(limit)
        .min_time_between_calls(Duration::ZERO)
        .idle_time_between_reads(Duration::from_millis(200));
    let mut source = PollingSource::new(
        kinesis,
        STREAM.into(),
        shard,
        range,
        StartingPosition::TrimHorizon,
        polling,
    );
    let mut read = 0u64;
    while read < records {
        let batch = source
            .next_batch()
            .await
            .map_err(|e| CliError::Usage(format!("GetRecords: {e}")))?;
        let bytes = batch.records.iter().map(|r| r.data().len()).sum();
        read += batch.records.len() as u64;
        progress.add(batch.records.len(), bytes);
    }
    Ok(())
}

/// SDK mode: GetShardIterator and GetRecords until the first empty page at the end of the
/// shard. Without deaggregation: with `--aggregated` the progress counts aggregates.
async fn read_sdk(
    kinesis: aws_sdk_kinesis::Client,
    shard: String,
    limit: i32,
    progress: &Progress,
) -> Result<(), CliError> {
    let mut iterator = kinesis
        .get_shard_iterator()
        .stream_name(STREAM)
        .shard_id(shard)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .map_err(|e| CliError::Usage(format!("GetShardIterator: {e}")))?
        .shard_iterator;
    while let Some(current) = iterator {
        let out = kinesis
            .get_records()
            .shard_iterator(current)
            .limit(limit)
            .send()
            .await
            .map_err(|e| CliError::Usage(format!("GetRecords: {e}")))?;
        let bytes = out.records.iter().map(|r| r.data.as_ref().len()).sum();
        progress.add(out.records.len(), bytes);
        if out.records.is_empty() && out.millis_behind_latest == Some(0) {
            break;
        }
        iterator = out.next_shard_iterator;
    }
    Ok(())
}
