//! `kinesis-cat consume` and `kinesis-cat leases`: one worker of a consumer application, and a
//! look at its lease table.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_kinesis::primitives::{DateTime, DateTimeFormat};
use clap::Args;
use kcl::lease::{Checkpoint, LeaseTable};
use kcl::{
    Checkpointer, DeaggregatedRecord, InitialPosition, ProcessRecordsInput, Scheduler,
    ShardRecordProcessor,
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

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
    /// "explicit_hash_key", "data": base64} per record instead of the raw data.
    #[arg(long)]
    json: bool,
    /// Stop (gracefully) after printing this many records.
    #[arg(long)]
    max_records: Option<u64>,
    /// Stop (gracefully) after this many seconds without a new record on any shard.
    #[arg(long)]
    idle_exit: Option<f64>,
    /// Failover time in seconds (how long a dead worker's shards wait before others take them).
    #[arg(long, default_value_t = 10.0)]
    failover_seconds: f64,
    /// Time between GetRecords calls on a shard that is caught up, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    idle_millis: u64,
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
}

/// What every shard's printer shares.
#[derive(Debug)]
struct Output {
    json: bool,
    printed: AtomicU64,
    max_records: Option<u64>,
    last_record: Mutex<Instant>,
    stop: CancellationToken,
}

#[derive(Debug)]
struct Printer {
    shard_id: String,
    output: Arc<Output>,
}

impl Printer {
    /// Prints as many records as the limit allows; returns how many.
    fn print(&self, records: &[DeaggregatedRecord]) -> std::io::Result<usize> {
        let mut stdout = std::io::stdout().lock();
        let mut printed = 0;
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
                };
                serde_json::to_writer(&mut stdout, &line)?;
            } else {
                stdout.write_all(record.data())?;
            }
            stdout.write_all(b"\n")?;
            printed += 1;
        }
        stdout.flush()?;
        Ok(printed)
    }
}

impl ShardRecordProcessor for Printer {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        if let Ok(mut last) = self.output.last_record.lock() {
            *last = Instant::now();
        }
        let printed = match self.print(&input.records) {
            Ok(printed) => printed,
            Err(error) => {
                eprintln!("kinesis-cat consume: writing stdout failed: {error}");
                self.output.stop.cancel();
                return;
            }
        };
        // Checkpoint exactly what was printed.
        if let Some(last) = printed.checked_sub(1).and_then(|i| input.records.get(i)) {
            let result = checkpointer
                .checkpoint_at(
                    last.sequence_number().unwrap_or("0"),
                    last.sub_sequence_number().unwrap_or(0),
                )
                .await;
            if let Err(error) = result {
                eprintln!(
                    "kinesis-cat consume: {}: checkpoint failed: {error}",
                    self.shard_id
                );
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
        if let Err(error) = checkpointer.checkpoint_shard_end().await {
            eprintln!(
                "kinesis-cat consume: {}: SHARD_END checkpoint failed: {error}",
                self.shard_id
            );
        }
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

pub(crate) fn run(args: ConsumeArgs) -> Result<(), CliError> {
    tokio::runtime::Runtime::new()?.block_on(consume(args))
}

async fn consume(args: ConsumeArgs) -> Result<(), CliError> {
    let initial = initial_position(&args.from)?;
    if !args.failover_seconds.is_finite() || args.failover_seconds <= 0.0 {
        return Err(CliError::Usage(
            "--failover-seconds must be positive".into(),
        ));
    }
    let config = aws_config::load_from_env().await;
    let output = Arc::new(Output {
        json: args.json,
        printed: AtomicU64::new(0),
        max_records: args.max_records,
        last_record: Mutex::new(Instant::now()),
        stop: CancellationToken::new(),
    });
    let factory_output = output.clone();
    let polling = kcl::retrieval::PollingConfig::default()
        .idle_time_between_reads(Duration::from_millis(args.idle_millis.max(1)));
    let scheduler = Scheduler::builder(
        args.application.as_str(),
        args.stream.as_str(),
        move |shard: &str| Printer {
            shard_id: shard.to_owned(),
            output: factory_output.clone(),
        },
    )
    .sdk_config(&config)
    .initial_position(initial)
    .failover_time(Duration::from_secs_f64(args.failover_seconds))
    .polling(polling)
    .build()
    .map_err(|e| CliError::Usage(e.to_string()))?;
    let handle = scheduler.handle();
    let stopper = tokio::spawn({
        let output = output.clone();
        let idle_exit = args.idle_exit.map(Duration::from_secs_f64);
        async move {
            let idle = async {
                match idle_exit {
                    Some(limit) => loop {
                        let since = output
                            .last_record
                            .lock()
                            .map(|t| t.elapsed())
                            .unwrap_or_default();
                        if since >= limit {
                            break;
                        }
                        tokio::time::sleep(limit - since).await;
                    },
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = output.stop.cancelled() => {}
                () = idle => {}
                () = terminate_signal() => {}
            }
            handle.graceful_shutdown().await;
        }
    });
    let result = scheduler
        .run()
        .await
        .map_err(|e| CliError::Usage(e.to_string()));
    stopper.abort();
    result
}

/// SIGINT or SIGTERM.
async fn terminate_signal() {
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
        let table = LeaseTable::new(
            aws_sdk_dynamodb::Client::new(&config),
            args.application.as_str(),
        );
        let mut leases = table
            .list()
            .await
            .map_err(|e| CliError::Usage(e.to_string()))?;
        leases.sort_by(|a, b| a.lease_key.cmp(&b.lease_key));
        println!(
            "{:<24} {:<40} {:>8} {:<64} {:<24} STATE",
            "SHARD", "OWNER", "COUNTER", "CHECKPOINT", "PARENTS"
        );
        let mut per_worker: BTreeMap<String, usize> = BTreeMap::new();
        for lease in &leases {
            let owner = lease.lease_owner.as_deref().unwrap_or("-");
            let state = match (&lease.checkpoint, &lease.lease_owner) {
                (Checkpoint::ShardEnd, _) => "finished",
                (_, None) => "unowned",
                (_, Some(_)) => "held",
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
        Ok(())
    })
}
