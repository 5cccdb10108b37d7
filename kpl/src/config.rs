//! Producer settings, with the KPL's defaults.

use std::time::Duration;

use aggregation_proto::{DEFAULT_MAX_AGGREGATE_SIZE, DEFAULT_MAX_RECORD_SIZE};

/// PutRecords accepts at most this many records per call.
pub const PUT_RECORDS_MAX_RECORDS: usize = 500;
/// PutRecords accepts at most this many bytes (data plus partition keys) per call.
pub const PUT_RECORDS_MAX_BYTES: usize = 5 * 1024 * 1024;
/// Bookkeeping memory charged for each outstanding record on top of its data: its receipt
/// channel, its place in the pipeline, its share of request buffers.
pub const RECORD_OVERHEAD_BYTES: usize = 512;

/// What one outstanding record of `size` bytes (data plus partition key) counts against
/// `max_outstanding_bytes`: its data twice (the caller's copy, kept for retries, and its copy in
/// the aggregate) plus [`RECORD_OVERHEAD_BYTES`]. So the limit bounds memory, not just payload.
pub const fn record_charge(size: usize) -> usize {
    2 * size + RECORD_OVERHEAD_BYTES
}

/// A shard accepts 1,000 records per second.
pub const SHARD_RECORDS_PER_SEC: f64 = 1_000.0;
/// A shard accepts 1 MiB per second.
pub const SHARD_BYTES_PER_SEC: f64 = 1024.0 * 1024.0;

/// Everything a [`Producer`](crate::Producer) can be tuned with. Build it through
/// [`ProducerBuilder`](crate::ProducerBuilder); every default is listed there.
#[derive(Debug, Clone)]
pub(crate) struct ProducerConfig {
    pub(crate) aggregation: bool,
    pub(crate) max_aggregate_size: usize,
    pub(crate) max_aggregate_count: usize,
    pub(crate) max_batch_records: usize,
    pub(crate) max_batch_bytes: usize,
    pub(crate) linger: Duration,
    pub(crate) record_ttl: Duration,
    pub(crate) rate_limit_percent: u32,
    pub(crate) max_outstanding_records: usize,
    pub(crate) max_outstanding_bytes: usize,
    pub(crate) max_record_size: usize,
    pub(crate) max_concurrent_requests: usize,
    pub(crate) preserve_shard_order: bool,
    pub(crate) fail_if_throttled: bool,
    pub(crate) min_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) shard_map_refresh_interval: Duration,
    pub(crate) request_timeout: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            aggregation: true,
            max_aggregate_size: DEFAULT_MAX_AGGREGATE_SIZE,
            max_aggregate_count: usize::MAX,
            max_batch_records: PUT_RECORDS_MAX_RECORDS,
            max_batch_bytes: PUT_RECORDS_MAX_BYTES,
            linger: Duration::from_millis(100),
            record_ttl: Duration::from_secs(30),
            rate_limit_percent: 150,
            max_outstanding_records: 100_000,
            max_outstanding_bytes: 64 * 1024 * 1024,
            max_record_size: DEFAULT_MAX_RECORD_SIZE,
            max_concurrent_requests: 24,
            preserve_shard_order: false,
            fail_if_throttled: false,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            shard_map_refresh_interval: Duration::from_secs(60),
            request_timeout: Duration::from_secs(6),
        }
    }
}

impl ProducerConfig {
    /// Rejects settings that cannot work, saying which and why.
    pub(crate) fn validate(&self) -> Result<(), crate::ConfigError> {
        use crate::ConfigError::Invalid;
        if !(1..=PUT_RECORDS_MAX_RECORDS).contains(&self.max_batch_records) {
            return Err(Invalid(
                "max_batch_records must be 1..=500 (the PutRecords limit)",
            ));
        }
        if !(1..=PUT_RECORDS_MAX_BYTES).contains(&self.max_batch_bytes) {
            return Err(Invalid(
                "max_batch_bytes must be 1..=5 MiB (the PutRecords limit)",
            ));
        }
        if self.max_record_size > 10 * 1024 * 1024 || self.max_record_size == 0 {
            return Err(Invalid(
                "max_record_size must be 1 byte..=10 MiB (Kinesis' largest MaxRecordSize)",
            ));
        }
        if self.max_aggregate_size > self.max_record_size {
            return Err(Invalid(
                "max_aggregate_size must not exceed max_record_size, or Kinesis would refuse full aggregates",
            ));
        }
        if self.max_outstanding_bytes < record_charge(self.max_record_size) {
            return Err(Invalid(
                "max_outstanding_bytes must be at least record_charge(max_record_size) (twice the record size plus 512), or a large record could never be accepted",
            ));
        }
        if self.max_outstanding_records == 0 || self.max_concurrent_requests == 0 {
            return Err(Invalid(
                "max_outstanding_records and max_concurrent_requests must be at least 1",
            ));
        }
        if self.max_outstanding_records > tokio::sync::Semaphore::MAX_PERMITS
            || self.max_outstanding_bytes > tokio::sync::Semaphore::MAX_PERMITS
        {
            return Err(Invalid(
                "max_outstanding_records and max_outstanding_bytes must be at most usize::MAX >> 3",
            ));
        }
        if self.rate_limit_percent == 0 {
            return Err(Invalid("rate_limit_percent must be at least 1"));
        }
        if self.min_backoff > self.max_backoff {
            return Err(Invalid("min_backoff must not exceed max_backoff"));
        }
        Ok(())
    }
}
