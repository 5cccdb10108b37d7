//! [`CoordinatorConfig`]: the coordinator's timings and limits, validated when built.

use std::num::NonZeroUsize;
use std::time::Duration;

/// The lease coordinator's timings and limits.
///
/// Build one with [`CoordinatorConfig::builder`]; [`Default`] gives the defaults below, which
/// are the Java KCL 2.x's.
///
/// | setting | default | source |
/// |---|---|---|
/// | [`failover_time`](Self::failover_time) | 10 s | `failoverTimeMillis` |
/// | [`renew_interval`](Self::renew_interval) | failover / 3 | `DynamoDBLeaseCoordinator`: `leaseDuration / 3` |
/// | [`take_interval`](Self::take_interval) | 2 × (failover + 25 ms) | `DynamoDBLeaseCoordinator`: `(leaseDuration + epsilon) * 2` |
/// | [`max_leases_for_worker`](Self::max_leases_for_worker) | unlimited | `maxLeasesForWorker` |
/// | [`max_concurrent_requests`](Self::max_concurrent_requests) | 20 | `maxLeaseRenewalThreads` |
/// | [`graceful_handoff`](Self::graceful_handoff) | on | 3.x `isGracefulLeaseHandoffEnabled` |
/// | [`handoff_timeout`](Self::handoff_timeout) | 30 s | 3.x `gracefulLeaseHandoffTimeoutMillis` |
///
/// Renew and take intervals not set explicitly follow the failover time. Every duration must
/// be positive and at most [`MAX_DURATION`](Self::MAX_DURATION) (one day).
///
/// Every renew, take and release request is bounded by the renew interval, and each lease
/// table scan by the take interval: a request that hangs counts as failed and is retried in the
/// next cycle.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use kcl::coordinator::CoordinatorConfig;
///
/// let config = CoordinatorConfig::builder()
///     .failover_time(Duration::from_secs(3))
///     .build()?;
/// assert_eq!(config.renew_interval(), Duration::from_secs(1));
/// assert_eq!(config.take_interval(), Duration::from_millis(6050));
/// # Ok::<(), kcl::coordinator::CoordinatorConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CoordinatorConfig {
    failover_time: Duration,
    renew_interval: Duration,
    take_interval: Duration,
    max_leases_for_worker: Option<NonZeroUsize>,
    max_concurrent_requests: NonZeroUsize,
    graceful_handoff: bool,
    handoff_timeout: Duration,
}

impl CoordinatorConfig {
    /// The longest duration any setting may have: one day. Longer ones are refused rather
    /// than left to overflow a timer.
    pub const MAX_DURATION: Duration = Duration::from_secs(86_400);
    /// Default [`handoff_timeout`](Self::handoff_timeout): 30 s (the Java KCL 3.x's
    /// `gracefulLeaseHandoffTimeoutMillis`).
    pub const DEFAULT_HANDOFF_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default [`failover_time`](Self::failover_time): 10 s (the Java KCL's
    /// `failoverTimeMillis`).
    pub const DEFAULT_FAILOVER_TIME: Duration = Duration::from_secs(10);
    /// The slack added to the failover time in the default take interval (the Java KCL's
    /// `epsilonMillis`, 25 ms).
    pub const TAKE_INTERVAL_EPSILON: Duration = Duration::from_millis(25);
    /// Default [`max_concurrent_requests`](Self::max_concurrent_requests): 20 (the Java KCL's
    /// `maxLeaseRenewalThreads`).
    pub const DEFAULT_MAX_CONCURRENT_REQUESTS: NonZeroUsize = match NonZeroUsize::new(20) {
        Some(n) => n,
        None => NonZeroUsize::MIN,
    };

    /// A builder starting from the defaults.
    pub fn builder() -> CoordinatorConfigBuilder {
        CoordinatorConfigBuilder::default()
    }

    /// How long a lease's `leaseCounter` must stand still, as seen by this worker's own scans,
    /// before the lease counts as expired and may be taken; also how long a held lease may go
    /// unrenewed (transport errors) before this worker stops counting it as held.
    pub fn failover_time(&self) -> Duration {
        self.failover_time
    }

    /// How often every held lease is renewed.
    pub fn renew_interval(&self) -> Duration {
        self.renew_interval
    }

    /// How often the lease table is scanned for leases to take.
    pub fn take_interval(&self) -> Duration {
        self.take_interval
    }

    /// The most leases this worker holds (`None`: no limit).
    pub fn max_leases_for_worker(&self) -> Option<NonZeroUsize> {
        self.max_leases_for_worker
    }

    /// The most renew, take or release requests in flight at once.
    pub fn max_concurrent_requests(&self) -> NonZeroUsize {
        self.max_concurrent_requests
    }

    /// Whether a lease taken from a live worker to balance the fleet is handed over
    /// gracefully (the Java KCL 3.x's handoff: the taker writes the holder as
    /// `checkpointOwner`, the holder checkpoints and lets go, the taker starts from that
    /// checkpoint) instead of taken at once (the 2.x steal, after which the old holder keeps
    /// delivering until its next renewal fails and the taker repeats what was not
    /// checkpointed).
    pub fn graceful_handoff(&self) -> bool {
        self.graceful_handoff
    }

    /// How long a worker waits for a holder to let go of a lease it asked for before it takes
    /// the lease anyway (a holder that never answers: a Java KCL 2.x worker ignores
    /// `checkpointOwner`). A holder that stops renewing is not waited for beyond the failover
    /// time.
    pub fn handoff_timeout(&self) -> Duration {
        self.handoff_timeout
    }

    /// How often a worker waiting on handoffs re-reads those leases: a quarter of the renew
    /// interval, between 10 ms and 500 ms.
    pub fn handoff_poll_interval(&self) -> Duration {
        (self.renew_interval / 4).clamp(Duration::from_millis(10), Duration::from_millis(500))
    }
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        let failover_time = Self::DEFAULT_FAILOVER_TIME;
        Self {
            failover_time,
            renew_interval: default_renew_interval(failover_time),
            take_interval: default_take_interval(failover_time),
            max_leases_for_worker: None,
            max_concurrent_requests: Self::DEFAULT_MAX_CONCURRENT_REQUESTS,
            graceful_handoff: true,
            handoff_timeout: Self::DEFAULT_HANDOFF_TIMEOUT,
        }
    }
}

fn default_renew_interval(failover_time: Duration) -> Duration {
    failover_time / 3
}

fn default_take_interval(failover_time: Duration) -> Duration {
    failover_time
        .saturating_add(CoordinatorConfig::TAKE_INTERVAL_EPSILON)
        .saturating_mul(2)
}

/// Builds a [`CoordinatorConfig`]; [`build`](Self::build) validates it.
#[derive(Debug, Clone)]
pub struct CoordinatorConfigBuilder {
    failover_time: Duration,
    renew_interval: Option<Duration>,
    take_interval: Option<Duration>,
    max_leases_for_worker: Option<NonZeroUsize>,
    max_concurrent_requests: NonZeroUsize,
    graceful_handoff: bool,
    handoff_timeout: Duration,
}

impl Default for CoordinatorConfigBuilder {
    fn default() -> Self {
        Self {
            failover_time: CoordinatorConfig::DEFAULT_FAILOVER_TIME,
            renew_interval: None,
            take_interval: None,
            max_leases_for_worker: None,
            max_concurrent_requests: CoordinatorConfig::DEFAULT_MAX_CONCURRENT_REQUESTS,
            graceful_handoff: true,
            handoff_timeout: CoordinatorConfig::DEFAULT_HANDOFF_TIMEOUT,
        }
    }
}

impl CoordinatorConfigBuilder {
    /// See [`CoordinatorConfig::failover_time`] (default 10 s).
    pub fn failover_time(mut self, failover_time: Duration) -> Self {
        self.failover_time = failover_time;
        self
    }

    /// See [`CoordinatorConfig::renew_interval`] (default: failover time / 3). Must be shorter
    /// than the failover time.
    pub fn renew_interval(mut self, renew_interval: Duration) -> Self {
        self.renew_interval = Some(renew_interval);
        self
    }

    /// See [`CoordinatorConfig::take_interval`] (default: 2 × (failover time + 25 ms)).
    pub fn take_interval(mut self, take_interval: Duration) -> Self {
        self.take_interval = Some(take_interval);
        self
    }

    /// See [`CoordinatorConfig::max_leases_for_worker`] (default: no limit).
    pub fn max_leases_for_worker(mut self, max: NonZeroUsize) -> Self {
        self.max_leases_for_worker = Some(max);
        self
    }

    /// Sets or clears [`CoordinatorConfig::max_leases_for_worker`].
    pub fn set_max_leases_for_worker(&mut self, max: Option<NonZeroUsize>) -> &mut Self {
        self.max_leases_for_worker = max;
        self
    }

    /// See [`CoordinatorConfig::max_concurrent_requests`] (default 20).
    pub fn max_concurrent_requests(mut self, max: NonZeroUsize) -> Self {
        self.max_concurrent_requests = max;
        self
    }

    /// See [`CoordinatorConfig::graceful_handoff`] (default on).
    pub fn graceful_handoff(mut self, enabled: bool) -> Self {
        self.graceful_handoff = enabled;
        self
    }

    /// See [`CoordinatorConfig::handoff_timeout`] (default 30 s).
    pub fn handoff_timeout(mut self, timeout: Duration) -> Self {
        self.handoff_timeout = timeout;
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    ///
    /// [`CoordinatorConfigError`] naming the first invalid setting: a zero failover time, renew interval,
    /// take interval or handoff timeout, one longer than
    /// [`CoordinatorConfig::MAX_DURATION`], or a renew interval not shorter than the failover
    /// time (the worker's leases would expire at other workers between two renewals).
    pub fn build(self) -> Result<CoordinatorConfig, CoordinatorConfigError> {
        let failover_time = self.failover_time;
        if failover_time.is_zero() {
            return Err(CoordinatorConfigError::ZeroFailoverTime);
        }
        check_max("failover_time", failover_time)?;
        let renew_interval = self
            .renew_interval
            .unwrap_or_else(|| default_renew_interval(failover_time));
        if renew_interval.is_zero() {
            return Err(CoordinatorConfigError::ZeroRenewInterval);
        }
        if renew_interval >= failover_time {
            return Err(CoordinatorConfigError::RenewIntervalTooLong {
                renew_interval,
                failover_time,
            });
        }
        let take_interval = self
            .take_interval
            .unwrap_or_else(|| default_take_interval(failover_time));
        if take_interval.is_zero() {
            return Err(CoordinatorConfigError::ZeroTakeInterval);
        }
        check_max("take_interval", take_interval)?;
        if self.handoff_timeout.is_zero() {
            return Err(CoordinatorConfigError::ZeroHandoffTimeout);
        }
        check_max("handoff_timeout", self.handoff_timeout)?;
        Ok(CoordinatorConfig {
            failover_time,
            renew_interval,
            take_interval,
            max_leases_for_worker: self.max_leases_for_worker,
            max_concurrent_requests: self.max_concurrent_requests,
            graceful_handoff: self.graceful_handoff,
            handoff_timeout: self.handoff_timeout,
        })
    }
}

fn check_max(setting: &'static str, value: Duration) -> Result<(), CoordinatorConfigError> {
    if value > CoordinatorConfig::MAX_DURATION {
        Err(CoordinatorConfigError::TooLong {
            setting,
            value,
            max: CoordinatorConfig::MAX_DURATION,
        })
    } else {
        Ok(())
    }
}

/// An invalid [`CoordinatorConfig`], coordinator or worker setting (the
/// [`Scheduler`](crate::Scheduler)'s builder reports its own settings with it too, in
/// [`SchedulerError::Config`](crate::SchedulerError::Config)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatorConfigError {
    /// The failover time is zero.
    #[error("the failover time must be positive")]
    ZeroFailoverTime,
    /// The renew interval is zero.
    #[error("the renew interval must be positive")]
    ZeroRenewInterval,
    /// The renew interval is not shorter than the failover time.
    #[error(
        "the renew interval ({renew_interval:?}) must be shorter than the failover time \
         ({failover_time:?})"
    )]
    RenewIntervalTooLong {
        /// The renew interval asked for.
        renew_interval: Duration,
        /// The failover time.
        failover_time: Duration,
    },
    /// The take interval is zero.
    #[error("the take interval must be positive")]
    ZeroTakeInterval,
    /// The handoff timeout is zero.
    #[error("the handoff timeout must be positive")]
    ZeroHandoffTimeout,
    /// The enhanced fan-out consumer name is not 1 to 128 of `a-zA-Z0-9_.-`.
    #[error("invalid fan-out consumer name {name:?}: use 1 to 128 of a-z, A-Z, 0-9, _ . -")]
    InvalidConsumerName {
        /// The name given.
        name: String,
    },
    /// Another duration that must be positive is zero.
    #[error("{setting} must be positive")]
    Zero {
        /// The setting.
        setting: &'static str,
    },
    /// A duration is longer than [`CoordinatorConfig::MAX_DURATION`].
    #[error("{setting} ({value:?}) is longer than the maximum of {max:?}")]
    TooLong {
        /// The setting.
        setting: &'static str,
        /// The value asked for.
        value: Duration,
        /// The longest allowed.
        max: Duration,
    },
    /// The worker id is empty.
    #[error("the worker id must not be empty")]
    EmptyWorkerId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_java_kcl_timings() {
        let config = CoordinatorConfig::default();
        assert_eq!(config.failover_time(), Duration::from_secs(10));
        assert_eq!(config.renew_interval(), Duration::from_secs(10) / 3);
        assert_eq!(config.take_interval(), Duration::from_millis(20_050));
        assert_eq!(config.max_leases_for_worker(), None);
        assert_eq!(config.max_concurrent_requests().get(), 20);
        assert_eq!(CoordinatorConfig::builder().build(), Ok(config));
    }

    #[test]
    fn intervals_follow_the_failover_time_unless_set() {
        let config = CoordinatorConfig::builder()
            .failover_time(Duration::from_millis(1500))
            .build()
            .unwrap();
        assert_eq!(config.renew_interval(), Duration::from_millis(500));
        assert_eq!(config.take_interval(), Duration::from_millis(3050));

        let config = CoordinatorConfig::builder()
            .take_interval(Duration::from_millis(300))
            .renew_interval(Duration::from_millis(200))
            .failover_time(Duration::from_secs(1))
            .max_leases_for_worker(NonZeroUsize::new(4).unwrap())
            .max_concurrent_requests(NonZeroUsize::new(2).unwrap())
            .build()
            .unwrap();
        assert_eq!(config.failover_time(), Duration::from_secs(1));
        assert_eq!(config.renew_interval(), Duration::from_millis(200));
        assert_eq!(config.take_interval(), Duration::from_millis(300));
        assert_eq!(
            config.max_leases_for_worker().map(NonZeroUsize::get),
            Some(4)
        );
        assert_eq!(config.max_concurrent_requests().get(), 2);

        let mut builder = CoordinatorConfig::builder().max_leases_for_worker(NonZeroUsize::MIN);
        builder.set_max_leases_for_worker(None);
        assert_eq!(builder.build().unwrap().max_leases_for_worker(), None);
    }

    #[test]
    fn invalid_settings_are_rejected() {
        let build = |b: CoordinatorConfigBuilder| b.build().unwrap_err();
        assert_eq!(
            build(CoordinatorConfig::builder().failover_time(Duration::ZERO)),
            CoordinatorConfigError::ZeroFailoverTime
        );
        // 2 ns / 3 rounds down to zero.
        assert_eq!(
            build(CoordinatorConfig::builder().failover_time(Duration::from_nanos(2))),
            CoordinatorConfigError::ZeroRenewInterval
        );
        assert_eq!(
            build(CoordinatorConfig::builder().renew_interval(Duration::from_secs(10))),
            CoordinatorConfigError::RenewIntervalTooLong {
                renew_interval: Duration::from_secs(10),
                failover_time: Duration::from_secs(10),
            }
        );
        assert_eq!(
            build(CoordinatorConfig::builder().take_interval(Duration::ZERO)),
            CoordinatorConfigError::ZeroTakeInterval
        );
        assert_eq!(
            CoordinatorConfigError::RenewIntervalTooLong {
                renew_interval: Duration::from_secs(4),
                failover_time: Duration::from_secs(3),
            }
            .to_string(),
            "the renew interval (4s) must be shorter than the failover time (3s)"
        );
    }

    #[test]
    fn huge_durations_are_refused_not_left_to_overflow() {
        let day = CoordinatorConfig::MAX_DURATION;
        assert_eq!(
            CoordinatorConfig::builder()
                .failover_time(Duration::MAX)
                .build(),
            Err(CoordinatorConfigError::TooLong {
                setting: "failover_time",
                value: Duration::MAX,
                max: day,
            })
        );
        // The default take interval of a one-day failover is over a day.
        assert!(matches!(
            CoordinatorConfig::builder().failover_time(day).build(),
            Err(CoordinatorConfigError::TooLong {
                setting: "take_interval",
                ..
            })
        ));
        let config = CoordinatorConfig::builder()
            .failover_time(day)
            .take_interval(day)
            .handoff_timeout(day)
            .build()
            .unwrap();
        assert_eq!(config.take_interval(), day);
        assert!(matches!(
            CoordinatorConfig::builder()
                .handoff_timeout(day * 2)
                .build(),
            Err(CoordinatorConfigError::TooLong {
                setting: "handoff_timeout",
                ..
            })
        ));
        assert_eq!(
            CoordinatorConfig::builder()
                .handoff_timeout(Duration::ZERO)
                .build(),
            Err(CoordinatorConfigError::ZeroHandoffTimeout)
        );
    }
}
