//! Producer settings, with the KPL's defaults, and their validation.

use std::time::Duration;

use aggregation_proto::{DEFAULT_MAX_AGGREGATE_SIZE, DEFAULT_MAX_RECORD_SIZE};

use crate::error::ConfigError;

/// PutRecords accepts at most this many records per call.
pub const PUT_RECORDS_MAX_RECORDS: usize = 500;
/// PutRecords accepts at most this many bytes (data plus partition keys) per call: 10 MiB
/// since the service raised it with 10 MiB records (it was 5 MiB).
pub const PUT_RECORDS_MAX_BYTES: usize = 10 * 1024 * 1024;
/// The default bytes of one PutRecords call: the KPL's `CollectionMaxSize` (calls of half the
/// service's limit cost no throughput and half the memory in flight).
pub const DEFAULT_BATCH_BYTES: usize = 5 * 1024 * 1024;
/// Bookkeeping memory charged for each outstanding record on top of its data: its receipt
/// channel, its place in the pipeline, its share of request buffers.
pub const RECORD_OVERHEAD_BYTES: usize = 512;
/// The most ordering lanes a shard can have.
pub const MAX_ORDERING_LANES: usize = 64;

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

/// What to do with the records of an aggregate that Kinesis stored on a shard other than the one
/// it was built for (it was built just before a reshard and landed whole in one child).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MisroutedRecords {
    /// Send every record of the aggregate again, each to the shard that owns it (what the C++
    /// KPL does). Needed for the Java KCL, which drops the whole aggregate at its first record
    /// outside the shard's range, and for Lambda, which does not filter at all. A consumer that
    /// filters each record by hash range (this project's `kcl`) sees the records the landing
    /// shard owns twice.
    #[default]
    ResendAll,
    /// Send again only the records the landing shard does not own; the others count as stored
    /// there. Right only when every consumer filters each sub-record by its shard's hash range
    /// (this project's `kcl` does); then nothing is read twice.
    ResendOutOfRange,
}

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
    pub(crate) stream_share_percent: u32,
    pub(crate) max_record_size: usize,
    pub(crate) max_concurrent_requests: usize,
    pub(crate) adaptive_concurrency: bool,
    pub(crate) ordered: bool,
    pub(crate) ordering_lanes: usize,
    pub(crate) fail_if_throttled: bool,
    pub(crate) min_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) shard_map_refresh_interval: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) list_shards_timeout: Duration,
    pub(crate) list_shards_at_build: bool,
    pub(crate) misrouted_records: MisroutedRecords,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            aggregation: true,
            max_aggregate_size: DEFAULT_MAX_AGGREGATE_SIZE,
            max_aggregate_count: usize::MAX,
            max_batch_records: PUT_RECORDS_MAX_RECORDS,
            max_batch_bytes: DEFAULT_BATCH_BYTES,
            linger: Duration::from_millis(100),
            record_ttl: Duration::from_secs(30),
            rate_limit_percent: 150,
            max_outstanding_records: 100_000,
            max_outstanding_bytes: 64 * 1024 * 1024,
            stream_share_percent: 75,
            max_record_size: DEFAULT_MAX_RECORD_SIZE,
            max_concurrent_requests: 24,
            adaptive_concurrency: true,
            ordered: false,
            ordering_lanes: 8,
            fail_if_throttled: false,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            shard_map_refresh_interval: Duration::from_secs(60),
            request_timeout: Duration::from_secs(6),
            list_shards_timeout: Duration::from_secs(30),
            list_shards_at_build: true,
            misrouted_records: MisroutedRecords::ResendAll,
        }
    }
}

/// Longest backoff accepted: beyond it a "retry" is no retry at all.
const MAX_BACKOFF_LIMIT: Duration = Duration::from_secs(3600);
/// Longest call timeout accepted: a hung call must end in bounded time.
const MAX_TIMEOUT_LIMIT: Duration = Duration::from_secs(600);

impl ProducerConfig {
    /// The TTL as a bound, or `None` for records that never expire (`Duration::MAX`).
    pub(crate) fn ttl(&self) -> Option<Duration> {
        (self.record_ttl != Duration::MAX).then_some(self.record_ttl)
    }

    /// Lanes per shard: independent ordering streams (records of one hash key always share
    /// one); 1 when order is not kept.
    pub(crate) fn lanes(&self) -> usize {
        if self.ordered { self.ordering_lanes } else { 1 }
    }

    /// The most one stream may hold of the budget while the producer has several (`None`:
    /// no limit).
    pub(crate) fn share_limit(&self) -> Option<crate::streams::ShareLimit> {
        (self.stream_share_percent < 100).then(|| {
            let share =
                |max: usize| ((max as u128 * u128::from(self.stream_share_percent)) / 100) as usize;
            crate::streams::ShareLimit {
                records: share(self.max_outstanding_records).max(1),
                bytes: share(self.max_outstanding_bytes).max(record_charge(self.max_record_size)),
            }
        })
    }

    /// Rejects settings that cannot work, saying which and why.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        use ConfigError::Invalid;
        if !(1..=PUT_RECORDS_MAX_RECORDS).contains(&self.max_batch_records) {
            return Err(Invalid(
                "max_batch_records must be 1..=500 (the PutRecords limit)",
            ));
        }
        if !(1..=PUT_RECORDS_MAX_BYTES).contains(&self.max_batch_bytes) {
            return Err(Invalid(
                "max_batch_bytes must be 1..=10 MiB (the PutRecords limit)",
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
        if self.max_aggregate_count == 0 {
            return Err(Invalid("max_aggregate_count must be at least 1"));
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
        if self.max_concurrent_requests > 1_000 {
            return Err(Invalid("max_concurrent_requests must be at most 1,000"));
        }
        if self.max_outstanding_records > tokio::sync::Semaphore::MAX_PERMITS
            || self.max_outstanding_bytes > tokio::sync::Semaphore::MAX_PERMITS
        {
            return Err(Invalid(
                "max_outstanding_records and max_outstanding_bytes must be at most usize::MAX >> 3",
            ));
        }
        if !(1..=100).contains(&self.stream_share_percent) {
            return Err(Invalid(
                "stream_share_percent must be 1..=100 (100: any one stream may take the whole budget)",
            ));
        }
        if !(1..=MAX_ORDERING_LANES).contains(&self.ordering_lanes) {
            return Err(Invalid("ordering_lanes must be 1..=64"));
        }
        if self.rate_limit_percent == 0 {
            return Err(Invalid("rate_limit_percent must be at least 1"));
        }
        if self.record_ttl.is_zero() {
            return Err(Invalid(
                "record_ttl must be more than zero (Duration::MAX means records never expire)",
            ));
        }
        if self.min_backoff < Duration::from_millis(1) {
            return Err(Invalid(
                "min_backoff must be at least 1 ms, or a failing stream would be retried in a busy loop",
            ));
        }
        if self.min_backoff > self.max_backoff {
            return Err(Invalid("min_backoff must not exceed max_backoff"));
        }
        if self.max_backoff > MAX_BACKOFF_LIMIT {
            return Err(Invalid("max_backoff must be at most one hour"));
        }
        if self.shard_map_refresh_interval < Duration::from_millis(100) {
            return Err(Invalid(
                "shard_map_refresh_interval must be at least 100 ms (Duration::MAX: refresh only when a put shows the map is stale)",
            ));
        }
        for timeout in [self.request_timeout, self.list_shards_timeout] {
            if timeout < Duration::from_millis(1) || timeout > MAX_TIMEOUT_LIMIT {
                return Err(Invalid(
                    "request_timeout and list_shards_timeout must be 1 ms..=10 minutes, so a call that never answers ends",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(ProducerConfig::default().validate(), Ok(()));
    }

    #[test]
    fn extreme_durations_are_valid_or_typed_errors() {
        let valid = |change: fn(&mut ProducerConfig)| {
            let mut config = ProducerConfig::default();
            change(&mut config);
            config.validate()
        };
        assert_eq!(valid(|c| c.record_ttl = Duration::MAX), Ok(()));
        assert_eq!(valid(|c| c.linger = Duration::MAX), Ok(()));
        assert_eq!(valid(|c| c.linger = Duration::ZERO), Ok(()));
        assert_eq!(
            valid(|c| c.shard_map_refresh_interval = Duration::MAX),
            Ok(())
        );
        // The service's current PutRecords limit, since 10 MiB records: 10 MiB a call.
        assert_eq!(valid(|c| c.max_batch_bytes = 10 * 1024 * 1024), Ok(()));
        for broken in [
            valid(|c| c.max_batch_bytes = 10 * 1024 * 1024 + 1),
            valid(|c| c.record_ttl = Duration::ZERO),
            valid(|c| c.min_backoff = Duration::ZERO),
            valid(|c| c.max_backoff = Duration::MAX),
            valid(|c| c.request_timeout = Duration::ZERO),
            valid(|c| c.request_timeout = Duration::MAX),
            valid(|c| c.list_shards_timeout = Duration::MAX),
            valid(|c| c.shard_map_refresh_interval = Duration::ZERO),
            valid(|c| c.ordering_lanes = 0),
            valid(|c| c.max_aggregate_count = 0),
        ] {
            assert!(matches!(broken, Err(ConfigError::Invalid(_))), "{broken:?}");
        }
    }
}
