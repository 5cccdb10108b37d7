//! [`FanOutConfig`]: how a [`FanOutSource`](super::FanOutSource) subscribes, waits and retries,
//! and how the stream consumer is registered.

use std::time::Duration;

use crate::retrieval::retry::RetryPolicy;

const ONE_MILLISECOND: Duration = Duration::from_millis(1);

/// Settings of enhanced fan-out.
///
/// Every setter consumes and returns the config; values outside the allowed range are clamped
/// (each setter says how).
///
/// | setting | default | why |
/// |---|---|---|
/// | [`read_timeout`](Self::read_timeout) | 35 s | the service sends an event at least every 5 s; the Java KCL's SDK read timeout is 35 s |
/// | [`subscribe_backoff`](Self::subscribe_backoff) | 500 ms to 10 s | ResourceInUse clears within seconds of a previous subscription ending |
/// | [`give_up_after`](Self::give_up_after) | never | the KCL retries forever too |
/// | [`max_subscription_time`](Self::max_subscription_time) | none | the service ends every subscription after 5 minutes by itself |
/// | [`registration_poll_interval`](Self::registration_poll_interval) | 500 ms | DescribeStreamConsumer allows 20 calls/s per stream |
/// | [`registration_timeout`](Self::registration_timeout) | 5 minutes | a consumer takes seconds to become ACTIVE, or to finish DELETING |
/// | [`closed_shard_check`](Self::closed_shard_check) | 30 s | a safety net for endpoints that never end a closed shard's subscription |
///
/// ```
/// use std::time::Duration;
/// use kcl::retrieval::FanOutConfig;
///
/// let config = FanOutConfig::default()
///     .read_timeout(Duration::from_secs(20))
///     .subscribe_backoff(Duration::from_millis(200), Duration::from_secs(5));
/// # let _ = config;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanOutConfig {
    pub(crate) read_timeout: Duration,
    pub(crate) min_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) give_up_after: Option<Duration>,
    pub(crate) max_subscription_time: Option<Duration>,
    pub(crate) registration_poll_interval: Duration,
    pub(crate) registration_timeout: Duration,
    pub(crate) closed_shard_check: Option<Duration>,
}

impl Default for FanOutConfig {
    fn default() -> Self {
        Self {
            read_timeout: Duration::from_secs(35),
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            give_up_after: None,
            max_subscription_time: None,
            registration_poll_interval: Duration::from_millis(500),
            registration_timeout: Duration::from_secs(300),
            closed_shard_check: Some(Duration::from_secs(30)),
        }
    }
}

impl FanOutConfig {
    /// How long to wait for the SubscribeToShard answer, and then for each event, before the
    /// subscription is given up as dead (a stalled connection) and a new one is opened from the
    /// last position after a backoff. Each call of [registration](super::register_stream_consumer)
    /// (DescribeStreamSummary, DescribeStreamConsumer, RegisterStreamConsumer) is abandoned and
    /// retried after it too. At least 1 ms (clamped). Default 35 s.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout.max(ONE_MILLISECOND);
        self
    }

    /// The backoff envelope after a failed subscription (ResourceInUse while the shard's
    /// previous subscription is still open, throttling, a dropped connection, a read timeout,
    /// a server error): starts at `min`, doubles per consecutive failure up to `max`, each
    /// wait drawn from the upper half of the envelope. A subscription the service ended
    /// normally is renewed at once, without a backoff. `min` at least 1 ms and `max` at least
    /// `min` (clamped). Default 500 ms to 10 s.
    pub fn subscribe_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_backoff = min.max(ONE_MILLISECOND);
        self.max_backoff = max.max(self.min_backoff);
        self
    }

    /// How long retryable failures may go on without a single event before
    /// [`next_batch`](crate::retrieval::RecordSource::next_batch) returns
    /// [`RetrievalError::RetriesExhausted`](crate::retrieval::RetrievalError::RetriesExhausted).
    /// `None` (the default) retries for as long as it takes.
    pub fn give_up_after(mut self, limit: Option<Duration>) -> Self {
        self.give_up_after = limit;
        self
    }

    /// Ends each subscription after this long and opens the next one from its
    /// `ContinuationSequenceNumber`, as the service itself does every 5 minutes. `None` (the
    /// default) leaves it to the service; a shorter time makes resubscription frequent (tests
    /// use it to exercise the resume path). At least 1 ms (clamped).
    pub fn max_subscription_time(mut self, limit: Option<Duration>) -> Self {
        self.max_subscription_time = limit.map(|limit| limit.max(ONE_MILLISECOND));
        self
    }

    /// How often DescribeStreamConsumer is asked while the consumer is CREATING or DELETING.
    /// At least 1 ms (clamped). Default 500 ms.
    pub fn registration_poll_interval(mut self, interval: Duration) -> Self {
        self.registration_poll_interval = interval.max(ONE_MILLISECOND);
        self
    }

    /// How long registration waits for the consumer to become ACTIVE (including waiting out
    /// a consumer of the same name that is being deleted, transient failures, and a call
    /// without an answer) before it fails. At least 1 ms (clamped). Default 5 minutes.
    pub fn registration_timeout(mut self, timeout: Duration) -> Self {
        self.registration_timeout = timeout.max(ONE_MILLISECOND);
        self
    }

    /// After a subscription has been caught up (events without records, `MillisBehindLatest`
    /// 0) for this long, ask ListShards whether the shard was closed; if it was, subscribe
    /// again from the continuation and end the shard at the first caught-up event of that new
    /// subscription (opened after the close, so nothing can follow it).
    ///
    /// The service itself ends a closed shard's subscription with an event without a
    /// continuation, carrying the children, and that is what the source acts on first; this
    /// check is for endpoints that do not (kinesis-mock 0.6.2 sends empty events forever).
    /// It costs one ListShards call per idle shard per interval. `None` turns it off. At least
    /// 1 ms (clamped). Default 30 s.
    pub fn closed_shard_check(mut self, interval: Option<Duration>) -> Self {
        self.closed_shard_check = interval.map(|interval| interval.max(ONE_MILLISECOND));
        self
    }

    /// The bounds of enhanced fan-out's own client: its ListShards calls and the
    /// registration calls (the `control` group) by the read timeout. SubscribeToShard and its
    /// events are bounded by the subscriber itself.
    pub(crate) fn timeouts(&self) -> kinesis_common::Timeouts {
        let mut timeouts = kinesis_common::Timeouts::none();
        timeouts.list_shards = Some(self.read_timeout);
        timeouts.control = Some(self.read_timeout);
        timeouts
    }

    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            min_backoff: self.min_backoff,
            max_backoff: self.max_backoff,
            give_up_after: self.give_up_after,
        }
    }

    /// The durations the scheduler validates, by setting name.
    pub(crate) fn durations(&self) -> Vec<(&'static str, Duration)> {
        let mut durations = vec![
            ("fan_out.read_timeout", self.read_timeout),
            ("fan_out.subscribe_backoff_min", self.min_backoff),
            ("fan_out.subscribe_backoff_max", self.max_backoff),
            (
                "fan_out.registration_poll_interval",
                self.registration_poll_interval,
            ),
            ("fan_out.registration_timeout", self.registration_timeout),
        ];
        if let Some(limit) = self.max_subscription_time {
            durations.push(("fan_out.max_subscription_time", limit));
        }
        if let Some(interval) = self.closed_shard_check {
            durations.push(("fan_out.closed_shard_check", interval));
        }
        if let Some(limit) = self.give_up_after {
            durations.push(("fan_out.give_up_after", limit.max(ONE_MILLISECOND)));
        }
        durations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setters_clamp() {
        let config = FanOutConfig::default()
            .read_timeout(Duration::ZERO)
            .subscribe_backoff(Duration::from_secs(2), Duration::from_secs(1))
            .max_subscription_time(Some(Duration::ZERO));
        assert_eq!(config.read_timeout, ONE_MILLISECOND);
        assert_eq!(config.max_backoff, Duration::from_secs(2));
        assert_eq!(config.max_subscription_time, Some(ONE_MILLISECOND));
        assert_eq!(FanOutConfig::default().max_subscription_time, None);
    }
}
