//! [`RetrievalStats`]: what a source did, for metrics and tests.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

/// Counters of one [`PollingSource`](super::PollingSource) or
/// [`FanOutSource`](super::FanOutSource) since it was created (see their `stats`).
///
/// Retries are invisible to the caller of `next_batch` except here and in the tracing
/// events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetrievalStats {
    /// GetRecords calls made (successful or not).
    pub get_records_calls: u64,
    /// GetShardIterator calls made (successful or not).
    pub get_shard_iterator_calls: u64,
    /// ListShards calls made to find a closed shard's children (successful or not).
    pub list_shards_calls: u64,
    /// Calls answered with throttling, and retried.
    pub throttled: u64,
    /// Calls that failed transiently (server error, timeout, connection error), and retried.
    pub transient_errors: u64,
    /// GetRecords calls answered `ExpiredIteratorException`, after which the source got a new
    /// iterator at its last position.
    pub expired_iterators: u64,
    /// Batches handed to the caller.
    pub batches: u64,
    /// Kinesis records received (aggregates count once).
    pub kinesis_records: u64,
    /// Data bytes of those Kinesis records.
    pub bytes: u64,
    /// User records handed to the caller.
    pub records_delivered: u64,
    /// User records skipped because they were at or before the starting position (or already
    /// delivered before an iterator was replaced).
    pub records_skipped: u64,
    /// User records dropped because their hash key is outside the shard's range.
    pub records_filtered: u64,
    /// Enhanced fan-out: SubscribeToShard calls made (successful or not).
    pub subscribe_calls: u64,
    /// Enhanced fan-out: subscription events received.
    pub subscription_events: u64,
    /// Enhanced fan-out: subscriptions that ended without an error (the service ends each
    /// after 5 minutes, or [`FanOutConfig::max_subscription_time`](super::FanOutConfig::max_subscription_time)
    /// was reached), after which the source subscribed again at once.
    pub subscriptions_ended: u64,
}

/// The live counters behind [`RetrievalStats`], shared between a source and its prefetch
/// task.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) get_records_calls: AtomicU64,
    pub(crate) get_shard_iterator_calls: AtomicU64,
    pub(crate) list_shards_calls: AtomicU64,
    pub(crate) throttled: AtomicU64,
    pub(crate) transient_errors: AtomicU64,
    pub(crate) expired_iterators: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) kinesis_records: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) records_delivered: AtomicU64,
    pub(crate) records_skipped: AtomicU64,
    pub(crate) records_filtered: AtomicU64,
    pub(crate) subscribe_calls: AtomicU64,
    pub(crate) subscription_events: AtomicU64,
    pub(crate) subscriptions_ended: AtomicU64,
    /// When the last read succeeded (a GetRecords answer, a subscription event).
    last_read: Mutex<Option<Instant>>,
}

/// Adds `n` to `counter`.
pub(crate) fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

impl Counters {
    /// A read succeeded now.
    pub(crate) fn read_succeeded(&self) {
        if let Ok(mut last_read) = self.last_read.lock() {
            *last_read = Some(Instant::now());
        }
    }

    /// When the last read succeeded, if one did.
    pub(crate) fn last_read(&self) -> Option<Instant> {
        self.last_read.lock().ok().and_then(|last_read| *last_read)
    }

    pub(crate) fn snapshot(&self) -> RetrievalStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        RetrievalStats {
            get_records_calls: load(&self.get_records_calls),
            get_shard_iterator_calls: load(&self.get_shard_iterator_calls),
            list_shards_calls: load(&self.list_shards_calls),
            throttled: load(&self.throttled),
            transient_errors: load(&self.transient_errors),
            expired_iterators: load(&self.expired_iterators),
            batches: load(&self.batches),
            kinesis_records: load(&self.kinesis_records),
            bytes: load(&self.bytes),
            records_delivered: load(&self.records_delivered),
            records_skipped: load(&self.records_skipped),
            records_filtered: load(&self.records_filtered),
            subscribe_calls: load(&self.subscribe_calls),
            subscription_events: load(&self.subscription_events),
            subscriptions_ended: load(&self.subscriptions_ended),
        }
    }
}
