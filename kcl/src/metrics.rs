//! Consumer counters: a snapshot API and the `metrics` crate facade.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Live counters of one worker.
#[derive(Debug, Default)]
pub(crate) struct ConsumerMetrics {
    records: AtomicU64,
    bytes: AtomicU64,
    batches: AtomicU64,
    processing_micros: AtomicU64,
    behind: Mutex<BTreeMap<String, i64>>,
}

impl ConsumerMetrics {
    pub(crate) fn processed(
        &self,
        shard: &str,
        records: usize,
        bytes: usize,
        took: Duration,
        behind: Option<i64>,
    ) {
        self.records.fetch_add(records as u64, Relaxed);
        self.bytes.fetch_add(bytes as u64, Relaxed);
        self.batches.fetch_add(1, Relaxed);
        self.processing_micros
            .fetch_add(took.as_micros() as u64, Relaxed);
        metrics::counter!("kinesis_consumer.records_processed", "shard" => shard.to_owned())
            .increment(records as u64);
        metrics::counter!("kinesis_consumer.data_bytes_processed", "shard" => shard.to_owned())
            .increment(bytes as u64);
        metrics::histogram!("kinesis_consumer.processing_time_seconds").record(took.as_secs_f64());
        if let Some(behind) = behind {
            self.behind(shard, behind);
        }
    }

    pub(crate) fn behind(&self, shard: &str, millis: i64) {
        if let Ok(mut behind) = self.behind.lock() {
            behind.insert(shard.to_owned(), millis);
        }
        metrics::gauge!("kinesis_consumer.millis_behind_latest", "shard" => shard.to_owned())
            .set(millis as f64);
    }

    pub(crate) fn forget(&self, shard: &str) {
        if let Ok(mut behind) = self.behind.lock() {
            behind.remove(shard);
        }
    }

    pub(crate) fn snapshot(&self, leases_held: usize) -> ConsumerSnapshot {
        ConsumerSnapshot {
            records_processed: self.records.load(Relaxed),
            data_bytes_processed: self.bytes.load(Relaxed),
            batches_processed: self.batches.load(Relaxed),
            processing_time: Duration::from_micros(self.processing_micros.load(Relaxed)),
            millis_behind_latest: self.behind.lock().map(|b| b.clone()).unwrap_or_default(),
            leases_held,
        }
    }
}

/// A worker's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerSnapshot {
    /// User records handed to processors.
    pub records_processed: u64,
    /// Bytes of their data.
    pub data_bytes_processed: u64,
    /// `process_records` calls.
    pub batches_processed: u64,
    /// Time spent inside `process_records`.
    pub processing_time: Duration,
    /// The latest MillisBehindLatest of each shard being processed.
    pub millis_behind_latest: BTreeMap<String, i64>,
    /// Leases this worker holds.
    pub leases_held: usize,
}
