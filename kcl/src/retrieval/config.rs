//! [`PollingConfig`]: how a [`PollingSource`](super::PollingSource) paces and retries its calls.

use std::time::Duration;

/// Most records one GetRecords call may return (the service's limit, and the default).
pub const MAX_RECORDS_LIMIT: i32 = 10_000;

/// The default [`PollingConfig::idle_time_between_reads`]: 1,500 ms, the Java KCL's
/// `idleTimeBetweenReadsInMillis`. `kinesis-cat consume --idle-millis` defaults to it too.
pub const DEFAULT_IDLE_TIME_BETWEEN_READS: Duration = Duration::from_millis(1_500);

/// The default [`PollingConfig::caught_up_threshold`]: an answer less than 1 s behind the tip
/// counts as caught up.
pub const DEFAULT_CAUGHT_UP_THRESHOLD: Duration = Duration::from_secs(1);

/// Settings of a [`PollingSource`](super::PollingSource).
///
/// Every setter consumes and returns the config, so a config reads as one expression; values
/// outside the allowed range are clamped to it (each setter says how). Defaults follow the Java
/// KCL's `PollingConfig` where it has one, and the service's limits otherwise:
///
/// | setting | default | origin |
/// |---|---|---|
/// | [`max_records`](Self::max_records) | 10,000 | KCL `maxRecords`; the GetRecords maximum |
/// | [`idle_time_between_reads`](Self::idle_time_between_reads) | 1,500 ms | KCL `idleTimeBetweenReadsInMillis` |
/// | [`caught_up_threshold`](Self::caught_up_threshold) | 1,000 ms | KCL 3.x `millisBehindLatestThresholdForReducedTps` |
/// | [`min_time_between_calls`](Self::min_time_between_calls) | 200 ms | the service's 5 GetRecords calls/s per shard |
/// | [`throttle_backoff`](Self::throttle_backoff) | 200 ms to 10 s | one call slot, doubling |
/// | [`request_timeout`](Self::request_timeout) | 30 s | a 10 MiB answer on a slow link |
/// | [`give_up_after`](Self::give_up_after) | never | the KCL retries forever too |
/// | [`prefetch`](Self::prefetch) | on | KCL's `PrefetchRecordsPublisher` |
///
/// The service allows 5 GetRecords calls per second per shard, shared by every consumer
/// application reading that shard (fan-out consumers have their own pipes). Calls beyond it are
/// throttled: the source retries them after a backoff, so a too-eager setting costs throughput,
/// not records.
///
/// ```
/// use std::time::Duration;
/// use kcl::retrieval::PollingConfig;
///
/// let config = PollingConfig::default()
///     .max_records(1_000)
///     .idle_time_between_reads(Duration::from_millis(500))
///     .prefetch(false);
/// # let _ = config;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollingConfig {
    pub(crate) max_records: i32,
    pub(crate) idle_time_between_reads: Duration,
    pub(crate) caught_up_threshold: Duration,
    pub(crate) min_time_between_calls: Duration,
    pub(crate) min_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) give_up_after: Option<Duration>,
    pub(crate) prefetch: bool,
}

impl Default for PollingConfig {
    fn default() -> Self {
        Self {
            max_records: MAX_RECORDS_LIMIT,
            idle_time_between_reads: DEFAULT_IDLE_TIME_BETWEEN_READS,
            caught_up_threshold: DEFAULT_CAUGHT_UP_THRESHOLD,
            min_time_between_calls: Duration::from_millis(200),
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            give_up_after: None,
            prefetch: true,
        }
    }
}

const ONE_MILLISECOND: Duration = Duration::from_millis(1);

impl PollingConfig {
    /// The `Limit` of each GetRecords call: at most this many Kinesis records (an aggregate
    /// counts once). Clamped to `1..=10_000`. Default 10,000.
    pub fn max_records(mut self, max_records: i32) -> Self {
        self.max_records = max_records.clamp(1, MAX_RECORDS_LIMIT);
        self
    }

    /// How long to wait before the next GetRecords call once the source is caught up (see
    /// [`caught_up_threshold`](Self::caught_up_threshold)): at the tip the source makes at most
    /// one call per this interval, whether the answers carry a few records or none. The batch
    /// itself is handed out at once; the wait comes before the next call. While behind, calls
    /// follow each other without this wait. At least 1 ms (clamped); values under 200 ms
    /// exceed the service's 5 calls/s per shard at the tip. Default
    /// [`DEFAULT_IDLE_TIME_BETWEEN_READS`] (1,500 ms).
    pub fn idle_time_between_reads(mut self, idle: Duration) -> Self {
        self.idle_time_between_reads = idle.max(ONE_MILLISECOND);
        self
    }

    /// When an answer counts as caught up: its `MillisBehindLatest` is below this threshold
    /// (records or not), or it has no records and `MillisBehindLatest` is 0 or absent. After
    /// a caught-up answer the next call waits for
    /// [`idle_time_between_reads`](Self::idle_time_between_reads); after any other it follows
    /// at once (at most one call per
    /// [`min_time_between_calls`](Self::min_time_between_calls)).
    ///
    /// The Java KCL 3.x calls this `millisBehindLatestThresholdForReducedTps` (where it is off
    /// by default, and every call waits `idleTimeBetweenReadsInMillis` anyway). Without it, a
    /// shard receiving a record or two a second would be polled after every answer that
    /// carried one, several calls a second, out of the 5 calls/s the shard shares with every
    /// application polling it. `Duration::ZERO` turns it off: only an empty answer at the tip
    /// waits. Default [`DEFAULT_CAUGHT_UP_THRESHOLD`] (1 s).
    pub fn caught_up_threshold(mut self, threshold: Duration) -> Self {
        self.caught_up_threshold = threshold;
        self
    }

    /// The shortest time between the starts of two GetRecords calls, whatever they returned:
    /// keeps a shard that trickles a record or two per call from being polled in a tight loop.
    /// Zero disables it. Default 200 ms (the service's 5 calls/s per shard).
    pub fn min_time_between_calls(mut self, min: Duration) -> Self {
        self.min_time_between_calls = min;
        self
    }

    /// The backoff envelope after throttling (`ProvisionedThroughputExceededException`,
    /// `KMSThrottlingException`) and transient failures (5xx, timeouts, connection errors):
    /// starts at `min`, doubles per consecutive failure up to `max`, and each wait is drawn
    /// uniformly from the upper half of the envelope (so a fleet of consumers spreads out).
    /// `min` is at least 1 ms and `max` at least `min` (clamped). Default 200 ms to 10 s.
    pub fn throttle_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_backoff = min.max(ONE_MILLISECOND);
        self.max_backoff = max.max(self.min_backoff);
        self
    }

    /// How long one Kinesis call may take before it is abandoned and retried as a transient
    /// failure. At least 1 ms (clamped). Default 30 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout.max(ONE_MILLISECOND);
        self
    }

    /// How long retryable failures may go on, without a single success, before
    /// [`next_batch`](super::RecordSource::next_batch) returns
    /// [`RetrievalError::RetriesExhausted`](super::RetrievalError::RetriesExhausted) instead
    /// of retrying further. `None` (the default) retries for as long as it takes: a consumer
    /// that stops reading is rarely better off than one that keeps trying, and the
    /// [`RetrievalStats`](super::RetrievalStats) counters and the tracing warnings show it.
    pub fn give_up_after(mut self, limit: Option<Duration>) -> Self {
        self.give_up_after = limit;
        self
    }

    /// The durations that must be positive, by setting name, for validation by the scheduler
    /// (the setters only clamp the lower end), plus `min_time_between_calls` when set.
    pub(crate) fn durations(&self) -> Vec<(&'static str, Duration)> {
        let mut durations = vec![
            (
                "polling.idle_time_between_reads",
                self.idle_time_between_reads,
            ),
            ("polling.throttle_backoff_min", self.min_backoff),
            ("polling.throttle_backoff_max", self.max_backoff),
            ("polling.request_timeout", self.request_timeout),
        ];
        if !self.min_time_between_calls.is_zero() {
            durations.push((
                "polling.min_time_between_calls",
                self.min_time_between_calls,
            ));
        }
        if let Some(limit) = self.give_up_after {
            durations.push(("polling.give_up_after", limit.max(ONE_MILLISECOND)));
        }
        durations
    }

    /// The bounds of the calls polling makes ([`request_timeout`](Self::request_timeout) for
    /// ListShards, GetShardIterator and GetRecords), for [`kinesis_common::Bounded`]; the
    /// enhanced fan-out groups are left to their callers.
    pub(crate) fn timeouts(&self) -> kinesis_common::Timeouts {
        let mut timeouts = kinesis_common::Timeouts::none();
        timeouts.list_shards = Some(self.request_timeout);
        timeouts.get_shard_iterator = Some(self.request_timeout);
        timeouts.get_records = Some(self.request_timeout);
        timeouts
    }

    /// The backoff and retry limit, for the shared retry logic.
    pub(crate) fn retry_policy(&self) -> super::retry::RetryPolicy {
        super::retry::RetryPolicy {
            min_backoff: self.min_backoff,
            max_backoff: self.max_backoff,
            give_up_after: self.give_up_after,
        }
    }

    /// Whether the next GetRecords call runs in a background task while the caller processes
    /// the current batch (bounded: one batch waits, so about two batches are in memory).
    /// Without it, each [`next_batch`](super::RecordSource::next_batch) makes its call
    /// inline. Default `true`. Under a [`Scheduler`](crate::Scheduler) both batches count
    /// against the worker-wide
    /// [`batch_memory_budget`](crate::SchedulerBuilder::batch_memory_budget).
    pub fn prefetch(mut self, prefetch: bool) -> Self {
        self.prefetch = prefetch;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setters_clamp_to_the_allowed_ranges() {
        let config = PollingConfig::default()
            .max_records(0)
            .idle_time_between_reads(Duration::ZERO)
            .throttle_backoff(Duration::ZERO, Duration::ZERO)
            .request_timeout(Duration::ZERO);
        assert_eq!(config.max_records, 1);
        assert_eq!(config.idle_time_between_reads, ONE_MILLISECOND);
        assert_eq!(config.min_backoff, ONE_MILLISECOND);
        assert_eq!(config.max_backoff, ONE_MILLISECOND);
        assert_eq!(config.request_timeout, ONE_MILLISECOND);
        assert_eq!(
            PollingConfig::default().max_records(20_000).max_records,
            MAX_RECORDS_LIMIT
        );
        let backoff = PollingConfig::default()
            .throttle_backoff(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(backoff.max_backoff, Duration::from_secs(2));
    }

    #[test]
    fn defaults() {
        let config = PollingConfig::default();
        assert_eq!(config.max_records, 10_000);
        assert_eq!(config.idle_time_between_reads, Duration::from_millis(1_500));
        assert_eq!(config.caught_up_threshold, Duration::from_secs(1));
        assert!(config.prefetch);
        assert_eq!(config.give_up_after, None);
    }
}
