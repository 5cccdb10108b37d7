//! `kinesis-cat perf agg`: aggregation and deaggregation throughput on an in-memory workload.

use std::time::{Duration, Instant};

use aggregation_proto::{
    AddError, Aggregator, AggregatorConfig, Deaggregator, KinesisRecord, ReceivedRecord, UserRecord,
};
use bytes::Bytes;
use clap::Subcommand;
use md5::{Digest, Md5};
use rand::distr::{Alphanumeric, SampleString};
use rand::{Rng, RngCore, SeedableRng};
use serde::Serialize;

use crate::jsonl::CliError;

const SEQ: &str = "49590338271490256608559692538361571095921575989136588898";

#[derive(Debug, Subcommand)]
pub(crate) enum PerfCommand {
    /// Aggregate N records over K keys into KPL-default aggregates and deaggregate them back.
    Agg {
        /// Bytes of data per user record.
        #[arg(long, default_value_t = 100)]
        record_size: usize,
        /// Distinct partition keys (random, 16 characters).
        #[arg(long, default_value_t = 1_000)]
        keys: usize,
        /// User records in the workload.
        #[arg(long, default_value_t = 1_000_000)]
        records: usize,
        /// Timed runs; the median is reported.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Send N records of a size over K keys to a stream (or a local sink: point
    /// AWS_ENDPOINT_URL_KINESIS at `fault-proxy --sink`) through the producer, like Kafka's
    /// producer perf test.
    Produce(crate::perf_produce::PerfProduceArgs),
    /// Consume N shards x M records from an in-process read sink through the consumer
    /// (Scheduler, or PollingSource, or bare SDK calls) and report the CPU cost per record.
    Consume(crate::perf_consume::PerfConsumeArgs),
}

#[derive(Debug, Serialize)]
struct AggReport {
    #[serde(rename = "impl")]
    implementation: &'static str,
    record_size: usize,
    keys: usize,
    records: usize,
    aggregates: usize,
    runs: usize,
    aggregate_records_per_sec: f64,
    deaggregate_records_per_sec: f64,
    aggregate_mb_per_sec: f64,
    deaggregate_mb_per_sec: f64,
    /// The MD5 this build uses, on one 51,200-byte aggregate: the limit both directions face.
    md5_mb_per_sec: f64,
}

pub(crate) fn run(command: PerfCommand) -> Result<(), CliError> {
    match command {
        PerfCommand::Agg {
            record_size,
            keys,
            records,
            runs,
        } => perf_agg(record_size, keys, records, runs),
        PerfCommand::Produce(args) => crate::perf_produce::run(args),
        PerfCommand::Consume(args) => crate::perf_consume::run(args),
    }
}

fn perf_agg(record_size: usize, keys: usize, records: usize, runs: usize) -> Result<(), CliError> {
    if keys == 0 || records == 0 || runs == 0 {
        return Err(CliError::Usage(
            "--keys, --records and --runs must be at least 1".into(),
        ));
    }
    let workload = workload(record_size, keys, records);
    let mut aggregates = Vec::new();
    let aggregate_time = median(runs, || {
        let start = Instant::now();
        aggregates = aggregate(&workload);
        start.elapsed()
    });
    let received: Vec<_> = aggregates
        .iter()
        .map(|a| {
            ReceivedRecord::new(a.partition_key.clone(), a.data.clone()).with_sequence_number(SEQ)
        })
        .collect();
    let mut deaggregated = 0;
    let deaggregate_time = median(runs, || {
        let start = Instant::now();
        deaggregated = deaggregate(&received);
        start.elapsed()
    });
    if deaggregated != records {
        return Err(CliError::BadInput(format!(
            "deaggregated {deaggregated} records out of {records}: this is a bug"
        )));
    }
    let md5_block = vec![0x5Au8; aggregation_proto::DEFAULT_MAX_AGGREGATE_SIZE];
    let md5_rounds = 4_000;
    let md5_time = median(runs, || {
        let start = Instant::now();
        for _ in 0..md5_rounds {
            std::hint::black_box(Md5::digest(std::hint::black_box(&md5_block)));
        }
        start.elapsed()
    });
    let megabytes = (records * record_size) as f64 / 1e6;
    let report = AggReport {
        implementation: "rust aggregation-proto",
        record_size,
        keys,
        records,
        aggregates: aggregates.len(),
        runs,
        aggregate_records_per_sec: records as f64 / aggregate_time.as_secs_f64(),
        deaggregate_records_per_sec: records as f64 / deaggregate_time.as_secs_f64(),
        aggregate_mb_per_sec: megabytes / aggregate_time.as_secs_f64(),
        deaggregate_mb_per_sec: megabytes / deaggregate_time.as_secs_f64(),
        md5_mb_per_sec: (md5_rounds * md5_block.len()) as f64 / 1e6 / md5_time.as_secs_f64(),
    };
    eprintln!(
        "{records} records of {record_size} B over {keys} keys -> {} aggregates; \
         aggregate {:.2} M rec/s ({:.0} MB/s), deaggregate {:.2} M rec/s ({:.0} MB/s), \
         MD5 {:.0} MB/s, median of {runs}",
        report.aggregates,
        report.aggregate_records_per_sec / 1e6,
        report.aggregate_mb_per_sec,
        report.deaggregate_records_per_sec / 1e6,
        report.deaggregate_mb_per_sec,
        report.md5_mb_per_sec,
    );
    println!(
        "{}",
        serde_json::to_string(&report).map_err(std::io::Error::other)?
    );
    Ok(())
}

/// Random 16-character keys, random data sliced from one buffer, keys picked uniformly.
fn workload(record_size: usize, keys: usize, records: usize) -> Vec<UserRecord> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let keys: Vec<String> = (0..keys)
        .map(|_| Alphanumeric.sample_string(&mut rng, 16))
        .collect();
    let mut pool = vec![0u8; record_size * records.min(4096) + 1];
    rng.fill_bytes(&mut pool);
    let pool = Bytes::from(pool);
    (0..records)
        .map(|i| {
            let offset = (i % 4096) * record_size % (pool.len() - record_size);
            UserRecord::new(
                keys[rng.random_range(0..keys.len())].clone(),
                pool.slice(offset..offset + record_size),
            )
        })
        .collect()
}

fn aggregate(records: &[UserRecord]) -> Vec<KinesisRecord> {
    let mut aggregator = Aggregator::new(AggregatorConfig::default());
    let mut out = Vec::new();
    for record in records {
        if let Err(AddError::Full) = aggregator.try_add(record) {
            out.extend(aggregator.finish());
            // The workload's records are valid and each fits an empty aggregate.
            let _ = aggregator.try_add(record);
        }
    }
    out.extend(aggregator.finish());
    out
}

fn deaggregate(received: &[ReceivedRecord]) -> usize {
    let deaggregator = Deaggregator::new();
    let mut out = Vec::new();
    let mut total = 0;
    for record in received {
        out.clear();
        let _ = deaggregator.deaggregate_into(record, &mut out);
        total += out.len();
    }
    total
}

fn median(runs: usize, mut run: impl FnMut() -> Duration) -> Duration {
    let mut times: Vec<Duration> = (0..runs).map(|_| run()).collect();
    times.sort();
    times[times.len() / 2]
}
