//! `kinesis-cat perf produce`: producer throughput, receipt latency and peak memory.

use std::time::Instant;

use bytes::Bytes;
use clap::Args;
use kpl::{Producer, UserRecord};
use rand::distr::{Alphanumeric, SampleString};
use rand::{Rng, RngCore, SeedableRng};
use serde::Serialize;

use crate::cloudwatch_metrics::Telemetry;
use crate::jsonl::CliError;

#[derive(Debug, Args)]
pub(crate) struct PerfProduceArgs {
    /// Stream name or ARN (the sink accepts any name).
    #[arg(long, default_value = "perf")]
    stream: String,
    /// User records to send.
    #[arg(long, default_value_t = 1_000_000)]
    records: usize,
    /// Bytes of data per record.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Distinct partition keys (random, 16 characters).
    #[arg(long, default_value_t = 1_000)]
    keys: usize,
    /// Send each record as its own Kinesis record.
    #[arg(long)]
    no_aggregate: bool,
    /// The producer's outstanding-bytes limit, in MiB.
    #[arg(long, default_value_t = 64)]
    max_outstanding_mib: usize,
    /// Per-shard rate limit as a percentage of the shard limits (a sink has none: raise it).
    #[arg(long, default_value_t = 150)]
    rate_limit_percent: u32,
    /// Await and time one receipt in this many; the rest are sent detached, fire and forget
    /// (1: every receipt is awaited, as a caller that checks each record does).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    receipt_sample: u64,
    /// Send the records not sampled with `send` and drop their receipts, instead of
    /// `send_detached` (which makes none).
    #[arg(long)]
    drop_receipts: bool,
    /// Let records of a key be stored out of order (more Kinesis records in flight per shard).
    #[arg(long)]
    unordered: bool,
    /// Ordering lanes per shard (when ordered).
    #[arg(long, default_value_t = 8)]
    ordering_lanes: usize,
    #[command(flatten)]
    metrics: crate::metrics_export::MetricsArgs,
    #[command(flatten)]
    cloudwatch: crate::cloudwatch_metrics::CloudWatchArgs,
}

#[derive(Debug, Serialize)]
struct ProduceReport {
    #[serde(rename = "impl")]
    implementation: &'static str,
    records: usize,
    record_size: usize,
    keys: usize,
    aggregation: bool,
    seconds: f64,
    user_records_per_sec: f64,
    mb_per_sec: f64,
    succeeded: u64,
    failed: u64,
    put_records_calls: u64,
    kinesis_records: u64,
    user_records_per_kinesis_record: f64,
    kinesis_records_per_put_records: f64,
    latency_ms_p50: f64,
    latency_ms_p99: f64,
    latency_ms_max: f64,
    peak_rss_mib: f64,
    max_outstanding_mib: usize,
    receipt_sample: u64,
    drop_receipts: bool,
    ordered: bool,
    ordering_lanes: usize,
}

pub(crate) fn run(args: PerfProduceArgs) -> Result<(), CliError> {
    let runtime = tokio::runtime::Runtime::new()?;
    // What the metrics cost is part of what is measured, when a flag asks for them.
    let telemetry = Telemetry::start(
        &runtime,
        &args.metrics,
        &args.cloudwatch,
        kpl::cloudwatch::Builder::producer(),
    )?;
    // On a worker, as a service's sending task would be (not on the thread blocked in
    // `block_on`, which would make every record cross threads to reach the pipeline).
    let result = runtime.block_on(async {
        tokio::spawn(perf_produce(args))
            .await
            .map_err(|e| CliError::Usage(e.to_string()))?
    });
    telemetry.finish(&runtime);
    result
}

async fn perf_produce(args: PerfProduceArgs) -> Result<(), CliError> {
    if args.keys == 0 || args.records == 0 {
        return Err(CliError::Usage(
            "--keys and --records must be at least 1".into(),
        ));
    }
    let config = aws_config::load_from_env().await;
    let producer = Producer::builder(args.stream.as_str())
        .sdk_config(&config)
        .aggregation(!args.no_aggregate)
        .max_outstanding_bytes(args.max_outstanding_mib * 1024 * 1024)
        .max_outstanding_records(usize::MAX >> 4)
        .rate_limit_percent(args.rate_limit_percent)
        .ordered(!args.unordered)
        .ordering_lanes(args.ordering_lanes)
        .build()
        .await
        .map_err(|e| CliError::Usage(e.to_string()))?;

    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let keys: Vec<String> = (0..args.keys)
        .map(|_| Alphanumeric.sample_string(&mut rng, 16))
        .collect();
    let mut pool = vec![0u8; args.record_size * 64 + 1];
    rng.fill_bytes(&mut pool);
    let pool = Bytes::from(pool);

    // Bounded: a caller that reads its receipts cannot run ahead of reading them for ever (a
    // backlog of resolved receipts would be the harness's memory, not the producer's).
    let (timed_tx, mut timed_rx) = tokio::sync::mpsc::channel::<(Instant, kpl::Receipt)>(65_536);
    let timer = tokio::spawn(async move {
        // Microseconds in a u32: a receipt per record must not make the harness's own memory
        // the peak RSS it reports.
        let mut latencies: Vec<u32> = Vec::new();
        let mut failed = 0u64;
        while let Some((sent, receipt)) = timed_rx.recv().await {
            if receipt.await.is_err() {
                failed += 1;
            }
            latencies.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
        }
        (latencies, failed)
    });

    let started = Instant::now();
    for i in 0..args.records {
        let offset = (i % 64) * args.record_size;
        let record = UserRecord::new(
            keys[rng.random_range(0..keys.len())].clone(),
            pool.slice(offset..offset + args.record_size),
        );
        if (i as u64).is_multiple_of(args.receipt_sample) {
            let sent = Instant::now();
            let receipt = producer
                .send(record)
                .await
                .map_err(|e| CliError::Usage(e.to_string()))?;
            let _ = timed_tx.send((sent, receipt)).await;
        } else if args.drop_receipts {
            drop(
                producer
                    .send(record)
                    .await
                    .map_err(|e| CliError::Usage(e.to_string()))?,
            );
        } else {
            producer
                .send_detached(record)
                .await
                .map_err(|e| CliError::Usage(e.to_string()))?;
        }
    }
    drop(timed_tx);
    producer.shutdown().await;
    let seconds = started.elapsed().as_secs_f64();
    let (mut latencies, _) = timer.await.map_err(|e| CliError::Usage(e.to_string()))?;
    latencies.sort();
    let percentile = |p: f64| -> f64 {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |micros: &u32| f64::from(*micros) / 1e3)
    };
    let metrics = producer.metrics();
    let report = ProduceReport {
        implementation: "rust kpl",
        records: args.records,
        record_size: args.record_size,
        keys: args.keys,
        aggregation: !args.no_aggregate,
        seconds,
        user_records_per_sec: args.records as f64 / seconds,
        mb_per_sec: (args.records * args.record_size) as f64 / 1e6 / seconds,
        succeeded: metrics.user_records_put,
        failed: metrics.user_records_failed,
        put_records_calls: metrics.put_records_calls,
        kinesis_records: metrics.kinesis_records_put,
        user_records_per_kinesis_record: metrics.user_records_per_kinesis_record,
        kinesis_records_per_put_records: metrics.kinesis_records_per_put_records_request,
        latency_ms_p50: percentile(0.50),
        latency_ms_p99: percentile(0.99),
        latency_ms_max: percentile(1.0),
        peak_rss_mib: crate::perf_consume::peak_rss_mib(),
        max_outstanding_mib: args.max_outstanding_mib,
        receipt_sample: args.receipt_sample,
        drop_receipts: args.drop_receipts,
        ordered: !args.unordered,
        ordering_lanes: args.ordering_lanes,
    };
    eprintln!(
        "{} records of {} B: {:.0} rec/s, {:.1} MB/s, {} PutRecords calls, {:.1} user records per Kinesis record, \
         receipt latency p50 {:.1} ms p99 {:.1} ms, peak RSS {:.0} MiB",
        report.records,
        report.record_size,
        report.user_records_per_sec,
        report.mb_per_sec,
        report.put_records_calls,
        report.user_records_per_kinesis_record,
        report.latency_ms_p50,
        report.latency_ms_p99,
        report.peak_rss_mib
    );
    println!(
        "{}",
        serde_json::to_string(&report).map_err(std::io::Error::other)?
    );
    if report.failed > 0 {
        return Err(CliError::Usage(format!("{} records failed", report.failed)));
    }
    Ok(())
}
