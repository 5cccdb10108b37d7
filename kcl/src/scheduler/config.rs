//! The worker's settings besides the coordinator's: the validated [`WorkerConfig`], and
//! [`SchedulerError`] ([`InitialPosition`] is in `position.rs`: shard sync and the consumer
//! need it too).

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use crate::InitialPosition;
use crate::coordinator::{CoordinatorConfig, CoordinatorConfigError};
use crate::lease::LeaseError;
use crate::retrieval::{FanOutConfig, PollingConfig, RegistrationError};
use crate::shard_sync::ShardSyncError;

/// How the application reads its shards: the same for every worker of an application.
///
/// Both deliver the same records in the same order, with the same checkpoints, lease
/// handling and shutdown; they differ in cost and latency. Polling shares each shard's 2 MiB/s
/// and 5 calls/s with every other polling application; an enhanced fan-out consumer gets its own
/// 2 MiB/s per shard, pushed over a long-lived HTTP/2 subscription (AWS quotes about 70 ms from put
/// to delivery, against polling's idle wait), and is billed per consumer-shard hour and per GiB.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retrieval {
    /// GetRecords ([`PollingSource`](crate::retrieval::PollingSource)); the default.
    #[default]
    Polling,
    /// SubscribeToShard through the stream consumer `consumer_name`
    /// ([`FanOutSource`](crate::retrieval::FanOutSource)), registered at start if missing
    /// (usually the application name, as the Java KCL does).
    FanOut {
        /// The stream consumer's name (1 to 128 of `a-zA-Z0-9_.-`).
        consumer_name: String,
    },
}

/// Why the scheduler could not start or had to stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// Neither an SDK config nor both clients were given.
    #[error("no AWS configuration: call sdk_config() or clients() on the builder")]
    MissingClients,
    /// A setting cannot work.
    #[error("invalid configuration: {0}")]
    Config(#[from] CoordinatorConfigError),
    /// The lease table could not be created or read (a fatal error: access denied, a
    /// validation error; transient failures are retried).
    #[error("lease table")]
    Lease(#[from] LeaseError),
    /// The stream's shards could not be listed (a fatal error: check the stream name, region
    /// and credentials; transient failures are retried).
    #[error("shard sync")]
    ShardSync(#[from] ShardSyncError),
    /// The enhanced fan-out consumer could not be registered (see [`RegistrationError`]).
    #[error("enhanced fan-out")]
    FanOut(#[from] RegistrationError),
}

/// The scheduler's own timings, validated by the builder. Defaults are the Java KCL's where it
/// has the setting.
#[derive(Debug, Clone)]
pub(crate) struct WorkerConfig {
    pub(crate) initial: InitialPosition,
    pub(crate) polling: PollingConfig,
    pub(crate) retrieval: Retrieval,
    pub(crate) fan_out: FanOutConfig,
    pub(crate) shard_sync_interval: Duration,
    pub(crate) parent_poll_interval: Duration,
    pub(crate) cleanup_interval: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) processor_timeout: Option<Duration>,
    /// Whether `process_records` is called for reads that returned no records too.
    pub(crate) process_empty_batches: bool,
    /// Backoff between attempts of a failed shard end, a restart after a processor failure,
    /// a startup step: from `retry_min` doubling up to `retry_max`.
    pub(crate) retry_min: Duration,
    pub(crate) retry_max: Duration,
    /// How many `shard_ended` calls may return without storing SHARD_END (or stall) before
    /// the worker stops calling it for that holding.
    pub(crate) shard_end_attempts: NonZeroU32,
    /// The worker-wide memory budget of decoded batches, in bytes.
    pub(crate) batch_memory_budget: NonZeroUsize,
}

impl WorkerConfig {
    pub(crate) const DEFAULT_SHARD_SYNC_INTERVAL: Duration = Duration::from_secs(60);
    pub(crate) const DEFAULT_PARENT_POLL_INTERVAL: Duration = Duration::from_secs(1);
    pub(crate) const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(60);
    /// The whole graceful shutdown, leases handed back included: under the 30 s termination
    /// grace of Kubernetes and ECS, with time left for the process to exit.
    pub(crate) const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(25);
    pub(crate) const DEFAULT_PROCESSOR_TIMEOUT: Duration = Duration::from_secs(300);
    pub(crate) const DEFAULT_RETRY_MIN: Duration = Duration::from_millis(500);
    pub(crate) const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(30);
    /// About two minutes of attempts with the default retry backoff.
    pub(crate) const DEFAULT_SHARD_END_ATTEMPTS: NonZeroU32 = match NonZeroU32::new(10) {
        Some(n) => n,
        None => NonZeroU32::MIN,
    };

    pub(crate) fn new(initial: InitialPosition) -> Self {
        Self {
            initial,
            polling: PollingConfig::default(),
            retrieval: Retrieval::Polling,
            fan_out: FanOutConfig::default(),
            shard_sync_interval: Self::DEFAULT_SHARD_SYNC_INTERVAL,
            parent_poll_interval: Self::DEFAULT_PARENT_POLL_INTERVAL,
            cleanup_interval: Self::DEFAULT_CLEANUP_INTERVAL,
            shutdown_timeout: Self::DEFAULT_SHUTDOWN_TIMEOUT,
            processor_timeout: Some(Self::DEFAULT_PROCESSOR_TIMEOUT),
            process_empty_batches: false,
            retry_min: Self::DEFAULT_RETRY_MIN,
            retry_max: Self::DEFAULT_RETRY_MAX,
            shard_end_attempts: Self::DEFAULT_SHARD_END_ATTEMPTS,
            batch_memory_budget: crate::retrieval::DEFAULT_BATCH_MEMORY_BUDGET,
        }
    }

    /// The part of the shutdown timeout kept for handing the leases back at the end of a
    /// graceful shutdown: two renew intervals (a release write and the re-read after a failed
    /// condition are each bounded by one), at most half the timeout.
    pub(crate) fn release_reserve(&self, renew_interval: Duration) -> Duration {
        renew_interval
            .saturating_mul(2)
            .min(self.shutdown_timeout / 2)
    }

    /// How long a graceful shutdown waits for the processors: the shutdown timeout less the
    /// [release reserve](Self::release_reserve).
    pub(crate) fn processors_shutdown_time(&self, renew_interval: Duration) -> Duration {
        self.shutdown_timeout
            .saturating_sub(self.release_reserve(renew_interval))
    }

    /// Checks every duration: positive and at most [`CoordinatorConfig::MAX_DURATION`], and
    /// the polling settings' upper bounds.
    pub(crate) fn validate(&self) -> Result<(), CoordinatorConfigError> {
        let mut durations = vec![
            ("shard_sync_interval", self.shard_sync_interval),
            ("parent_poll_interval", self.parent_poll_interval),
            ("cleanup_interval", self.cleanup_interval),
            ("shutdown_timeout", self.shutdown_timeout),
            ("retry_backoff_min", self.retry_min),
            ("retry_backoff_max", self.retry_max),
        ];
        if let Some(timeout) = self.processor_timeout {
            durations.push(("processor_timeout", timeout));
        }
        durations.extend(self.polling.durations());
        if let Retrieval::FanOut { consumer_name } = &self.retrieval {
            if !valid_consumer_name(consumer_name) {
                return Err(CoordinatorConfigError::InvalidConsumerName {
                    name: consumer_name.chars().take(140).collect(),
                });
            }
            durations.extend(self.fan_out.durations());
        }
        for (setting, value) in durations {
            check(setting, value)?;
        }
        if self.retry_max < self.retry_min {
            return Err(CoordinatorConfigError::TooLong {
                setting: "retry_backoff_min",
                value: self.retry_min,
                max: self.retry_max,
            });
        }
        Ok(())
    }
}

/// The service's rule for consumer names: 1 to 128 of `a-zA-Z0-9_.-`.
fn valid_consumer_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Positive and at most one day.
pub(crate) fn check(setting: &'static str, value: Duration) -> Result<(), CoordinatorConfigError> {
    if value.is_zero() {
        return Err(CoordinatorConfigError::Zero { setting });
    }
    if value > CoordinatorConfig::MAX_DURATION {
        return Err(CoordinatorConfigError::TooLong {
            setting,
            value,
            max: CoordinatorConfig::MAX_DURATION,
        });
    }
    Ok(())
}
