//! Aggregation and deaggregation throughput for 100 B, 1 KiB and 10 KiB records over 1,000
//! keys, next to the MD5 limit (the one pass over the bytes that neither direction can avoid).
//!
//! `cargo bench -p aggregation-proto --bench aggregation`

use std::hint::black_box;

use aggregation_proto::{
    AddError, Aggregator, AggregatorConfig, Deaggregator, KinesisRecord, ReceivedRecord, UserRecord,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use md5::{Digest, Md5};
use rand::distr::{Alphanumeric, SampleString};
use rand::{Rng, RngCore, SeedableRng};

/// About 4 MB of user data per workload, so one iteration spans many full aggregates.
const BYTES_PER_WORKLOAD: usize = 4_000_000;

fn workload(record_size: usize) -> Vec<UserRecord> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let keys: Vec<String> = (0..1_000)
        .map(|_| Alphanumeric.sample_string(&mut rng, 16))
        .collect();
    (0..BYTES_PER_WORKLOAD / record_size)
        .map(|_| {
            let mut data = vec![0u8; record_size];
            rng.fill_bytes(&mut data);
            UserRecord::new(keys[rng.random_range(0..keys.len())].clone(), data)
        })
        .collect()
}

fn aggregate(records: &[UserRecord]) -> Vec<KinesisRecord> {
    let mut aggregator = Aggregator::new(AggregatorConfig::default());
    let mut out = Vec::new();
    for record in records {
        if let Err(AddError::Full) = aggregator.try_add(record) {
            out.extend(aggregator.finish());
            aggregator.try_add(record).expect("fits an empty aggregate");
        }
    }
    out.extend(aggregator.finish());
    out
}

fn bench(c: &mut Criterion) {
    for (name, record_size) in [("100B", 100), ("1KiB", 1024), ("10KiB", 10 * 1024)] {
        let records = workload(record_size);
        let aggregates: Vec<ReceivedRecord> = aggregate(&records)
            .into_iter()
            .map(|a| ReceivedRecord::new(a.partition_key, a.data).with_sequence_number("1"))
            .collect();
        let mut group = c.benchmark_group(format!("agg_{name}"));
        group.throughput(Throughput::Elements(records.len() as u64));
        group.bench_function("aggregate", |b| b.iter(|| aggregate(black_box(&records))));
        group.bench_function("deaggregate", |b| {
            let deaggregator = Deaggregator::new();
            let mut out = Vec::new();
            b.iter(|| {
                for aggregate in &aggregates {
                    out.clear();
                    let _ = deaggregator.deaggregate_into(black_box(aggregate), &mut out);
                }
            })
        });
        group.finish();
    }

    let block = vec![0x5Au8; aggregation_proto::DEFAULT_MAX_AGGREGATE_SIZE];
    let mut group = c.benchmark_group("md5_limit");
    group.throughput(Throughput::Bytes(block.len() as u64));
    group.bench_function("md-5_0.11", |b| b.iter(|| Md5::digest(black_box(&block))));
    group.bench_function("md-5_0.10_asm", |b| {
        b.iter(|| {
            use md5_asm::Digest as _;
            md5_asm::Md5::digest(black_box(&block))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
