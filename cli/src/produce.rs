//! `kinesis-cat produce`: stdin lines into a stream through the producer library.

use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::Args;
use kinesis_common::ErrorChain;
use kpl::{Producer, Receipt, SendError, UserRecord};
use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::cloudwatch_metrics::Telemetry;
use crate::jsonl::CliError;

#[derive(Debug, Args)]
pub(crate) struct ProduceArgs {
    /// Stream name or ARN.
    stream: String,
    /// Each line is {"partition_key", "explicit_hash_key", "data": base64} instead of raw data.
    #[arg(long)]
    json: bool,
    /// Partition key for every record (default: a random key per record).
    #[arg(long)]
    partition_key: Option<String>,
    /// Send each record as its own Kinesis record.
    #[arg(long)]
    no_aggregate: bool,
    /// At most this many records per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Let records of one partition key be stored out of order, for more records in flight
    /// per shard (by default each key's records are stored in the order of the lines).
    #[arg(long)]
    unordered: bool,
    #[command(flatten)]
    settings: crate::produce_settings::ProducerSettings,
    #[command(flatten)]
    metrics: crate::metrics_export::MetricsArgs,
    #[command(flatten)]
    cloudwatch: crate::cloudwatch_metrics::CloudWatchArgs,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRecord {
    partition_key: String,
    #[serde(default)]
    explicit_hash_key: Option<String>,
    data: String,
}

#[derive(Debug, Serialize)]
struct Summary {
    user_records: u64,
    succeeded: u64,
    failed: u64,
    kinesis_records: u64,
    put_records_calls: u64,
    /// Calls that got no answer in time: their records were sent again.
    put_records_timed_out: u64,
    /// Records sent again after an attempt whose answer never came (or whose aggregate landed
    /// on the wrong shard after a reshard): they may be stored twice. An upper bound.
    possibly_duplicated: u64,
    /// The input line that could not become a record: reading stopped there, nothing after it
    /// was sent.
    stopped_at_line: Option<usize>,
}

#[derive(Debug, Default)]
struct Counts {
    read: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
}

pub(crate) fn run(args: ProduceArgs) -> Result<(), CliError> {
    let runtime = tokio::runtime::Runtime::new()?;
    let telemetry = Telemetry::start(
        &runtime,
        &args.metrics,
        &args.cloudwatch,
        kpl::cloudwatch::Builder::producer(),
    )?;
    let result = runtime.block_on(produce(args));
    telemetry.finish(&runtime);
    result
}

async fn produce(args: ProduceArgs) -> Result<(), CliError> {
    let config = aws_config::load_from_env().await;
    let producer = args
        .settings
        .apply(Producer::builder(args.stream.as_str()))
        .sdk_config(&config)
        .aggregation(!args.no_aggregate)
        .ordered(!args.unordered)
        .build()
        .await
        .map_err(|e| CliError::Usage(ErrorChain(&e).to_string()))?;
    let counts = Arc::new(Counts::default());

    // Receipts are awaited in order by one task, so failures print with their line numbers.
    let (receipts_tx, mut receipts_rx) = mpsc::channel::<(usize, Receipt)>(64 * 1024);
    let waiter = {
        let counts = counts.clone();
        tokio::spawn(async move {
            while let Some((line, receipt)) = receipts_rx.recv().await {
                match receipt.await {
                    Ok(_) => counts.succeeded.fetch_add(1, Relaxed),
                    Err(error) => {
                        eprintln!("line {line}: not stored: {error}");
                        counts.failed.fetch_add(1, Relaxed)
                    }
                };
            }
        })
    };
    let progress = tokio::spawn(report_progress(counts.clone()));

    let (lines_tx, mut lines_rx) = mpsc::channel::<std::io::Result<String>>(1024);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if lines_tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    // A line that cannot become a record stops the reading: everything before it is sent and
    // answered, nothing after it is, so the run can be resumed from that line.
    let started = Instant::now();
    let mut number = 0usize;
    let mut stopped: Option<CliError> = None;
    while let Some(line) = lines_rx.recv().await {
        number += 1;
        let line = match line {
            Ok(line) => line,
            Err(error) => {
                stopped = Some(CliError::line(number, error));
                break;
            }
        };
        if args.json && line.trim().is_empty() {
            continue;
        }
        let record = match to_record(&args, &line) {
            Ok(record) => record,
            Err(problem) => {
                stopped = Some(CliError::line(number, problem));
                break;
            }
        };
        if let Some(rate) = args.rate {
            let due = started + Duration::from_secs_f64(counts.read.load(Relaxed) as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        match producer.send(record).await {
            Ok(receipt) => {
                counts.read.fetch_add(1, Relaxed);
                if receipts_tx.send((number, receipt)).await.is_err() {
                    break;
                }
            }
            Err(SendError::Invalid { error, .. }) => {
                stopped = Some(CliError::line(number, error));
                break;
            }
            Err(error) => {
                stopped = Some(CliError::Usage(error.to_string()));
                break;
            }
        }
    }
    drop(lines_rx);
    drop(receipts_tx);
    producer.shutdown().await;
    let _ = waiter.await;
    progress.abort();
    let metrics = producer.metrics();
    let summary = Summary {
        user_records: counts.read.load(Relaxed),
        succeeded: counts.succeeded.load(Relaxed),
        failed: counts.failed.load(Relaxed),
        kinesis_records: metrics.kinesis_records_put,
        put_records_calls: metrics.put_records_calls,
        put_records_timed_out: metrics.put_records_timed_out,
        possibly_duplicated: metrics.user_records_possibly_duplicated,
        stopped_at_line: match &stopped {
            Some(CliError::BadLine { line, .. }) => Some(*line),
            _ => None,
        },
    };
    println!(
        "{}",
        serde_json::to_string(&summary).map_err(std::io::Error::other)?
    );
    if let Some(error) = stopped {
        eprintln!(
            "kinesis-cat produce: stopped reading at {error}; the {} records before it were sent and answered ({} stored, {} failed)",
            summary.user_records, summary.succeeded, summary.failed
        );
        return Err(error);
    }
    if summary.failed > 0 {
        return Err(CliError::Usage(format!(
            "{} of {} records failed",
            summary.failed, summary.user_records
        )));
    }
    Ok(())
}

fn to_record(args: &ProduceArgs, line: &str) -> Result<UserRecord, String> {
    if args.json {
        let parsed: JsonRecord =
            serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(&parsed.data)
            .map_err(|e| format!("field \"data\" is not valid base64: {e}"))?;
        let mut record = UserRecord::new(parsed.partition_key, data);
        record.explicit_hash_key = parsed.explicit_hash_key;
        return Ok(record);
    }
    let key = match &args.partition_key {
        Some(key) => key.clone(),
        None => Alphanumeric.sample_string(&mut rand::rng(), 16),
    };
    Ok(UserRecord::new(key, line.as_bytes().to_vec()))
}

/// A progress line on stderr every few seconds, once the input is long enough to need one.
async fn report_progress(counts: Arc<Counts>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.tick().await;
    loop {
        tick.tick().await;
        eprintln!(
            "kinesis-cat produce: read {}, stored {}, failed {}",
            counts.read.load(Relaxed),
            counts.succeeded.load(Relaxed),
            counts.failed.load(Relaxed)
        );
    }
}
