//! `kinesis-cat consume` and `kinesis-cat leases`: one worker of a consumer application, and a
//! look at its lease table.
//!
//! The records go to stdout through a writer thread fed by a bounded queue: a processor hands
//! its batch over and awaits the write before it checkpoints, so a reader that stops reading
//! (a full pipe) slows the shards down without ever blocking the runtime, and the worker keeps
//! renewing its leases meanwhile. `--idle-exit` asks the worker whether anything is left to
//! read (every held shard at the tip for that long, none waiting on a parent or on its output,
//! no lease left to take), not how long ago a record was printed.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use aws_sdk_kinesis::primitives::{DateTime, DateTimeFormat};
use clap::Args;
use kcl::lease::Checkpoint;
use kcl::{
    Checkpointer, DeaggregatedRecord, InitialPosition, InitializeInput, ProcessRecordsInput,
    Scheduler, SchedulerHandle, ShardRecordProcessor,
};
use kinesis_common::ErrorChain;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::cloudwatch_metrics::Telemetry;
use crate::jsonl::{CliError, encode_base64};

#[derive(Debug, Args)]
pub(crate) struct ConsumeArgs {
    /// Stream name or ARN.
    stream: String,
    /// Application name: workers with the same name share the shards (leases in the DynamoDB
    /// table of that name).
    #[arg(long)]
    application: String,
    /// Where shards without a checkpoint start: latest, trim-horizon or at-timestamp=RFC3339.
    #[arg(long, default_value = "latest")]
    from: String,
    /// Print {"shard_id", "sequence_number", "sub_sequence_number", "partition_key",
    /// "explicit_hash_key", "data": base64, "holding", "at_us"} per record instead of the raw
    /// data: `holding` numbers the processors this worker started (one per lease holding, in
    /// start order), `at_us` is when the batch was handed over (Unix microseconds).
    #[arg(long)]
    json: bool,
    /// With --json, also print a line per processor event, in order with the records:
    /// {"event": "initialize" (with "checkpoint", where it starts) | "checkpoint" (written,
    /// with "checkpoint") | "lease_lost" | "shard_ended" | "shutdown_requested", "shard_id",
    /// "holding", "at_us"}. Record lines have no "event" field.
    #[arg(long, requires = "json")]
    events: bool,
    /// The worker id in the lease table (default: a random one).
    #[arg(long)]
    worker_id: Option<String>,
    /// Stop (gracefully) after printing this many records.
    #[arg(long)]
    max_records: Option<u64>,
    /// Stop (gracefully) once there has been nothing left to read for this many seconds:
    /// every shard this worker holds at the tip, none waiting on a parent shard or on the
    /// output, and no lease left for it to take.
    #[arg(long)]
    idle_exit: Option<f64>,
    /// Failover time in seconds (how long a dead worker's shards wait before others take them).
    #[arg(long, default_value_t = 10.0)]
    failover_seconds: f64,
    /// Time between GetRecords calls on a shard that is caught up, in milliseconds (the
    /// library's default, `kcl::retrieval::DEFAULT_IDLE_TIME_BETWEEN_READS`).
    #[arg(long, default_value_t = DEFAULT_IDLE_MILLIS)]
    idle_millis: u64,
    /// Read by enhanced fan-out (SubscribeToShard) through the stream consumer of this name,
    /// registered if missing, instead of polling. Every worker of an application should use
    /// the same.
    #[arg(long, value_name = "CONSUMER_NAME")]
    fan_out: Option<String>,
    #[command(flatten)]
    metrics: crate::metrics_export::MetricsArgs,
    #[command(flatten)]
    cloudwatch: crate::cloudwatch_metrics::CloudWatchArgs,
}

#[derive(Debug, Args)]
pub(crate) struct LeasesArgs {
    /// Application name (the lease table).
    #[arg(long)]
    application: String,
}

#[derive(Debug, Serialize)]
struct JsonRecord<'a> {
    shard_id: &'a str,
    sequence_number: Option<&'a str>,
    sub_sequence_number: Option<u64>,
    partition_key: &'a str,
    explicit_hash_key: Option<&'a str>,
    data: String,
    holding: u64,
    at_us: u64,
}

/// A processor event line (`--events`).
#[derive(Debug, Serialize)]
struct JsonEvent<'a> {
    event: &'a str,
    shard_id: &'a str,
    holding: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint: Option<String>,
    at_us: u64,
}

/// Microseconds since the Unix epoch, for the output's timestamps.
fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        })
}

/// Batches waiting for the writer thread: a few, so a stalled reader holds back only a few
/// batches' worth of memory.
const OUTPUT_QUEUE: usize = 4;

/// `--idle-millis` by default: the library's idle time, so the CLI and a worker built with
/// the defaults poll a caught-up shard alike. (`as_millis` is a `u128`; 1,500 fits.)
const DEFAULT_IDLE_MILLIS: u64 = kcl::retrieval::DEFAULT_IDLE_TIME_BETWEEN_READS.as_millis() as u64;

/// One batch of output lines and who waits for them to be written.
struct Chunk {
    bytes: Vec<u8>,
    written: oneshot::Sender<std::io::Result<()>>,
}

/// The thread that owns stdout: writes each chunk, flushes, says so.
fn spawn_writer() -> std::io::Result<(mpsc::Sender<Chunk>, JoinHandle<()>)> {
    let (tx, mut rx) = mpsc::channel::<Chunk>(OUTPUT_QUEUE);
    let thread = std::thread::Builder::new()
        .name("kinesis-cat-stdout".into())
        .spawn(move || {
            let stdout = std::io::stdout();
            while let Some(chunk) = rx.blocking_recv() {
                let mut out = stdout.lock();
                let result = out.write_all(&chunk.bytes).and_then(|()| out.flush());
                let _ = chunk.written.send(result);
            }
        })?;
    Ok((tx, thread))
}

/// What every shard's printer shares.
#[derive(Debug)]
struct Output {
    json: bool,
    events: bool,
    printed: AtomicU64,
    /// Processors started so far: each new one takes the next number as its holding.
    holdings: AtomicU64,
    max_records: Option<u64>,
    stop: CancellationToken,
    writer: mpsc::Sender<Chunk>,
}

#[derive(Debug)]
struct Printer {
    shard_id: String,
    holding: u64,
    output: Arc<Output>,
}

impl Printer {
    /// Formats as many records as the limit allows; returns the lines and how many records.
    fn format(&self, records: &[DeaggregatedRecord]) -> Result<(Vec<u8>, usize), CliError> {
        let mut buffer = Vec::with_capacity(records.len() * 64);
        let mut taken = 0;
        let at_us = unix_micros();
        for record in records {
            if let Some(max) = self.output.max_records
                && self.output.printed.fetch_add(1, Relaxed) >= max
            {
                break;
            } else if self.output.max_records.is_none() {
                self.output.printed.fetch_add(1, Relaxed);
            }
            if self.output.json {
                let line = JsonRecord {
                    shard_id: &self.shard_id,
                    sequence_number: record.sequence_number(),
                    sub_sequence_number: record.sub_sequence_number(),
                    partition_key: record.partition_key(),
                    explicit_hash_key: record.explicit_hash_key(),
                    data: encode_base64(record.data()),
                    holding: self.holding,
                    at_us,
                };
                serde_json::to_writer(&mut buffer, &line)
                    .map_err(|e| CliError::Usage(format!("formatting a record: {e}")))?;
            } else {
                buffer.extend_from_slice(record.data());
            }
            buffer.push(b'\n');
            taken += 1;
        }
        Ok((buffer, taken))
    }

    /// Writes an event line (`--events` only); a failed write stops the worker like a failed
    /// record write.
    async fn event(&self, event: &str, checkpoint: Option<String>) {
        if !self.output.events {
            return;
        }
        let line = JsonEvent {
            event,
            shard_id: &self.shard_id,
            holding: self.holding,
            checkpoint,
            at_us: unix_micros(),
        };
        let mut bytes = match serde_json::to_vec(&line) {
            Ok(bytes) => bytes,
            Err(error) => {
                eprintln!("kinesis-cat consume: formatting an event: {error}");
                self.output.stop.cancel();
                return;
            }
        };
        bytes.push(b'\n');
        if let Err(error) = self.write(bytes).await {
            eprintln!("kinesis-cat consume: writing stdout failed: {error}");
            self.output.stop.cancel();
        }
    }

    /// Hands `bytes` to the writer thread and waits until they are written: never blocks the
    /// runtime, however slow the reader.
    async fn write(&self, bytes: Vec<u8>) -> std::io::Result<()> {
        let (written, done) = oneshot::channel();
        if self
            .output
            .writer
            .send(Chunk { bytes, written })
            .await
            .is_err()
        {
            return Err(std::io::Error::other("the output thread stopped"));
        }
        done.await
            .unwrap_or_else(|_| Err(std::io::Error::other("the output thread stopped")))
    }
}

impl ShardRecordProcessor for Printer {
    async fn initialize(&mut self, input: InitializeInput) {
        self.event("initialize", Some(input.checkpoint.to_string()))
            .await;
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        let (bytes, printed) = match self.format(&input.records) {
            Ok(formatted) => formatted,
            Err(error) => {
                eprintln!("kinesis-cat consume: {error}");
                self.output.stop.cancel();
                return;
            }
        };
        if printed > 0
            && let Err(error) = self.write(bytes).await
        {
            eprintln!("kinesis-cat consume: writing stdout failed: {error}");
            self.output.stop.cancel();
            return;
        }
        // Checkpoint exactly what was written.
        if let Some(last) = printed.checked_sub(1).and_then(|i| input.records.get(i)) {
            let result = checkpointer
                .checkpoint_at(
                    last.sequence_number().unwrap_or("0"),
                    last.sub_sequence_number().unwrap_or(0),
                )
                .await;
            match result {
                Ok(()) => {
                    let written = checkpointer.last_checkpoint().to_string();
                    self.event("checkpoint", Some(written)).await;
                }
                Err(error) => eprintln!(
                    "kinesis-cat consume: {}: checkpoint failed: {error}",
                    self.shard_id
                ),
            }
        }
        if printed < input.records.len()
            || self
                .output
                .max_records
                .is_some_and(|max| self.output.printed.load(Relaxed) >= max)
        {
            self.output.stop.cancel();
        }
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
        match checkpointer.checkpoint_shard_end().await {
            Ok(()) => self.event("shard_ended", None).await,
            Err(error) => eprintln!(
                "kinesis-cat consume: {}: SHARD_END checkpoint failed (retried): {error}",
                self.shard_id
            ),
        }
    }

    async fn lease_lost(&mut self) {
        self.event("lease_lost", None).await;
    }

    async fn shutdown_requested(&mut self, _checkpointer: &mut Checkpointer) {
        // Every batch was checkpointed after it was written: nothing more to record.
        self.event("shutdown_requested", None).await;
    }
}

fn initial_position(from: &str) -> Result<InitialPosition, CliError> {
    match from {
        "latest" => Ok(InitialPosition::Latest),
        "trim-horizon" => Ok(InitialPosition::TrimHorizon),
        other => {
            let Some(timestamp) = other.strip_prefix("at-timestamp=") else {
                return Err(CliError::Usage(format!(
                    "--from {other:?}: expected latest, trim-horizon or at-timestamp=RFC3339"
                )));
            };
            let parsed = DateTime::from_str(timestamp, DateTimeFormat::DateTime).map_err(|e| {
                CliError::Usage(format!(
                    "--from: {timestamp:?} is not an RFC 3339 time: {e}"
                ))
            })?;
            let at = SystemTime::try_from(parsed)
                .map_err(|e| CliError::Usage(format!("--from: {e}")))?;
            Ok(InitialPosition::AtTimestamp(at))
        }
    }
}

pub(crate) fn run(mut args: ConsumeArgs) -> Result<(), CliError> {
    let runtime = tokio::runtime::Runtime::new()?;
    if args.cloudwatch.enabled() && args.worker_id.is_none() {
        // The metrics' WorkerIdentifier is the lease owner's name: choose it here.
        args.worker_id = Some(format!(
            "kinesis-cat-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
    }
    let telemetry = Telemetry::start(
        &runtime,
        &args.metrics,
        &args.cloudwatch,
        kcl::cloudwatch::Builder::consumer(
            args.application.as_str(),
            args.worker_id.as_deref().unwrap_or_default(),
        ),
    )?;
    let result = runtime.block_on(consume(args));
    telemetry.finish(&runtime);
    result
}

fn positive_seconds(flag: &str, seconds: f64) -> Result<Duration, CliError> {
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 86_400.0 {
        return Err(CliError::Usage(format!(
            "{flag} must be a number of seconds between 0 and 86400, got {seconds}"
        )));
    }
    Ok(Duration::from_secs_f64(seconds))
}

async fn consume(args: ConsumeArgs) -> Result<(), CliError> {
    let initial = initial_position(&args.from)?;
    let failover = positive_seconds("--failover-seconds", args.failover_seconds)?;
    let idle_exit = args
        .idle_exit
        .map(|seconds| positive_seconds("--idle-exit", seconds))
        .transpose()?;
    let config = aws_config::load_from_env().await;
    let (writer, writer_thread) = spawn_writer()?;
    let output = Arc::new(Output {
        json: args.json,
        events: args.events,
        printed: AtomicU64::new(0),
        holdings: AtomicU64::new(0),
        max_records: args.max_records,
        stop: CancellationToken::new(),
        writer,
    });
    let factory_output = output.clone();
    let polling = kcl::retrieval::PollingConfig::default()
        .idle_time_between_reads(Duration::from_millis(args.idle_millis.max(1)));
    let mut builder = Scheduler::builder(
        args.application.as_str(),
        args.stream.as_str(),
        move |shard: &str| Printer {
            shard_id: shard.to_owned(),
            holding: factory_output.holdings.fetch_add(1, Relaxed) + 1,
            output: factory_output.clone(),
        },
    );
    if let Some(consumer_name) = &args.fan_out {
        builder = builder.fan_out(consumer_name.as_str());
    }
    if let Some(worker_id) = &args.worker_id {
        builder = builder.worker_id(worker_id.as_str());
    }
    let scheduler = builder
        .sdk_config(&config)
        .initial_position(initial)
        .failover_time(failover)
        .polling(polling)
        // A reader that stops reading is not a hung processor: wait for it as long as it takes.
        .processor_timeout(None)
        .build()
        .map_err(|e| CliError::Usage(ErrorChain(&e).to_string()))?;
    let handle = scheduler.handle();
    let stopper = tokio::spawn({
        let output = output.clone();
        let handle = handle.clone();
        async move {
            tokio::select! {
                () = output.stop.cancelled() => {}
                () = wait_idle(&handle, idle_exit) => {}
                () = terminate_signal() => {}
            }
            handle.graceful_shutdown().await;
        }
    });
    let result = run_scheduler(scheduler, stopper).await;
    // Every processor awaited its writes, so nothing is left to write unless one was
    // abandoned at the shutdown timeout; give the writer a moment for that, not forever.
    drop(output);
    drop(handle);
    let joined = tokio::task::spawn_blocking(move || writer_thread.join());
    let _ = tokio::time::timeout(Duration::from_secs(5), joined).await;
    result
}

/// Returns once the worker has had nothing left to read for `idle` (never without `idle`).
async fn wait_idle(handle: &SchedulerHandle, idle: Option<Duration>) {
    match idle {
        Some(idle) => handle.wait_idle(idle).await,
        None => std::future::pending().await,
    }
}

/// Runs `scheduler` to its end, then ends `stopper`, the task that would have stopped it.
pub(crate) async fn run_scheduler<F, P>(
    scheduler: Scheduler<F>,
    stopper: tokio::task::JoinHandle<()>,
) -> Result<(), CliError>
where
    F: Fn(&str) -> P + Send + Sync + 'static,
    P: ShardRecordProcessor,
{
    let result = scheduler
        .run()
        .await
        .map_err(|e| CliError::Usage(ErrorChain(&e).to_string()));
    stopper.abort();
    result
}

/// SIGINT or SIGTERM.
pub(crate) async fn terminate_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

pub(crate) fn leases(args: LeasesArgs) -> Result<(), CliError> {
    tokio::runtime::Runtime::new()?.block_on(async {
        let config = aws_config::load_from_env().await;
        let scan = crate::ops::all_leases(&config, &args.application)
            .await
            .map_err(|e| CliError::Usage(e.to_string()))?;
        let leases = &scan.leases;
        println!(
            "{:<24} {:<40} {:>8} {:<64} {:<24} STATE",
            "SHARD", "OWNER", "COUNTER", "CHECKPOINT", "PARENTS"
        );
        let mut per_worker: BTreeMap<String, usize> = BTreeMap::new();
        for lease in leases {
            let owner = lease.lease_owner.as_deref().unwrap_or("-");
            let state = match (&lease.checkpoint, &lease.lease_owner) {
                (Checkpoint::ShardEnd, _) => "finished".to_owned(),
                (_, None) => "unowned".to_owned(),
                (_, Some(_)) => match &lease.checkpoint_owner {
                    Some(holder) => format!("handoff from {holder}"),
                    None => "held".to_owned(),
                },
            };
            *per_worker.entry(owner.to_owned()).or_default() += 1;
            println!(
                "{:<24} {:<40} {:>8} {:<64} {:<24} {}",
                lease.lease_key,
                owner,
                lease.lease_counter,
                lease.checkpoint.to_string(),
                if lease.parent_shard_ids.is_empty() {
                    "-".to_owned()
                } else {
                    lease.parent_shard_ids.join(",")
                },
                state
            );
        }
        println!();
        for (worker, count) in per_worker {
            println!("{worker}: {count} lease(s)");
        }
        for row in &scan.skipped {
            println!(
                "skipped {}: {}",
                row.lease_key.as_deref().unwrap_or("(no leaseKey)"),
                row.reason
            );
        }
        Ok(())
    })
}
