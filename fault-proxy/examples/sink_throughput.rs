//! Throughput of the sink: PutRecords calls of 500 entries of 100 bytes from one
//! `aws-sdk-kinesis` client with a number of calls in flight.
//!
//! ```text
//! cargo run --release -p fault-proxy --example sink_throughput -- --concurrency 8 --seconds 10
//! # against a separately running `fault-proxy --sink --shards 4`:
//! cargo run --release -p fault-proxy --example sink_throughput -- --endpoint http://127.0.0.1:PORT
//! ```
//!
//! Without `--endpoint` the sink runs in this process (sharing its CPU with the client).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use clap::Parser;
use fault_proxy::{FaultProxy, Faults, Upstream};

#[derive(Debug, Parser)]
struct Args {
    /// A running sink to measure; default: start one in this process.
    #[arg(long)]
    endpoint: Option<String>,
    /// Shards of the in-process sink.
    #[arg(long, default_value_t = 4)]
    shards: u32,
    /// PutRecords calls in flight.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Entries per call.
    #[arg(long, default_value_t = 500)]
    entries: usize,
    /// Bytes of data per entry.
    #[arg(long, default_value_t = 100)]
    entry_bytes: usize,
    /// Measured seconds (after one second of warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

/// CPU seconds (user + system) this process has used so far, from /proc (Linux only).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let proxy = match &args.endpoint {
        Some(_) => None,
        None => Some(
            FaultProxy::start(
                Upstream::Sink {
                    shards: args.shards,
                },
                Faults::default(),
            )
            .await?,
        ),
    };
    let endpoint = match (&args.endpoint, &proxy) {
        (Some(endpoint), _) => endpoint.clone(),
        (None, Some(proxy)) => proxy.endpoint_url(),
        (None, None) => unreachable!("a proxy is started when no endpoint is given"),
    };
    let client = integration_tests::kinesis_client_at(&endpoint).await;
    let batch: Vec<PutRecordsRequestEntry> = (0..args.entries)
        .map(|i| {
            PutRecordsRequestEntry::builder()
                .partition_key(format!("partition-key-{i}"))
                .data(Blob::new(vec![b'x'; args.entry_bytes]))
                .build()
        })
        .collect::<Result<_, _>>()?;

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (client, batch) = (client.clone(), batch.clone());
        let (measuring, stop, calls) = (measuring.clone(), stop.clone(), calls.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let out = client
                    .put_records()
                    .stream_name("bench")
                    .set_records(Some(batch.clone()))
                    .send()
                    .await?;
                if out.failed_record_count() != Some(0) {
                    return Err(format!("{:?} entries failed", out.failed_record_count()).into());
                }
                if measuring.load(Ordering::Relaxed) {
                    calls.fetch_add(1, Ordering::Relaxed);
                    latencies.push(started.elapsed());
                }
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(latencies)
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await?.map_err(|err| err.to_string())?);
    }
    latencies.sort();

    let calls = calls.load(Ordering::Relaxed) as f64;
    let records = calls * args.entries as f64;
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "{} ({} shards), {} in flight, {} x {} B entries, {:.1} s",
        if proxy.is_some() {
            "in-process sink"
        } else {
            endpoint.as_str()
        },
        args.shards,
        args.concurrency,
        args.entries,
        args.entry_bytes,
        elapsed
    );
    println!(
        "{:.0} calls/s, {:.0} records/s, {:.1} MB/s of data; latency p50 {:?}, p99 {:?}",
        calls / elapsed,
        records / elapsed,
        records * args.entry_bytes as f64 / elapsed / 1e6,
        percentile(0.5),
        percentile(0.99),
    );
    if let Some(cpu) = cpu {
        println!(
            "process CPU: {:.2} cores ({:.0} µs per call)",
            cpu / elapsed,
            cpu / calls * 1e6
        );
    }
    if let Some(proxy) = proxy {
        eprintln!("{:?}", proxy.stats());
        proxy.shutdown().await;
    }
    Ok(())
}
