//! [`Retry`]: consecutive failures of one source, the backoff they earned, and the decision to
//! retry or give up. Shared by polling and enhanced fan-out so both back off alike.

use std::time::Duration;

use aws_sdk_kinesis::error::DisplayErrorContext;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use rand::Rng;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::error::{CallError, Class, RetrievalError};
use super::stats::{Counters, add};

/// The backoff envelope and the retry limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    pub(crate) min_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) give_up_after: Option<Duration>,
}

/// Consecutive failures and the backoff they have earned.
pub(crate) struct Retry {
    policy: RetryPolicy,
    pub(crate) failures: u32,
    since: Option<Instant>,
    backoff: Option<ExponentialBackoff>,
}

impl Retry {
    pub(crate) fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            failures: 0,
            since: None,
            backoff: None,
        }
    }

    /// Forgets the failures after a success.
    pub(crate) fn succeeded(&mut self) {
        self.failures = 0;
        self.since = None;
        self.backoff = None;
    }

    /// When the next attempt may start: now, or after the backoff when the last one failed.
    pub(crate) fn not_before(&mut self) -> Option<Instant> {
        (self.failures > 0).then(|| after(Instant::now(), self.delay()))
    }

    /// The next backoff: backon's exponential envelope, with the wait drawn uniformly from its
    /// upper half (so a fleet of consumers spreads out).
    fn delay(&mut self) -> Duration {
        let RetryPolicy {
            min_backoff: min,
            max_backoff: max,
            ..
        } = self.policy;
        let envelope = self
            .backoff
            .get_or_insert_with(|| {
                ExponentialBuilder::default()
                    .with_min_delay(min)
                    .with_max_delay(max)
                    .with_factor(2.0)
                    .without_max_times()
                    .build()
            })
            .next()
            .unwrap_or(max);
        let half = envelope / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }

    /// Counts a failure: `Ok` to retry it, `Err` to hand it to the caller.
    pub(crate) fn failed(
        &mut self,
        error: CallError,
        counters: &Counters,
    ) -> Result<(), RetrievalError> {
        let now = Instant::now();
        self.failures = self.failures.saturating_add(1);
        let since = *self.since.get_or_insert(now);
        let operation = error.operation.name();
        match error.class {
            Class::Throttled => {
                add(&counters.throttled, 1);
                debug!(
                    operation,
                    code = %error.code,
                    failures = self.failures,
                    "throttled; backing off"
                );
            }
            Class::Transient => {
                add(&counters.transient_errors, 1);
                warn!(
                    operation,
                    code = %error.code,
                    failures = self.failures,
                    error = %DisplayErrorContext(&*error.source),
                    "call failed; retrying"
                );
            }
            Class::ExpiredIterator => {}
            Class::NotFound
            | Class::AccessDenied
            | Class::Kms
            | Class::InvalidRequest
            | Class::Malformed
            | Class::Unexpected => {
                warn!(
                    operation,
                    code = %error.code,
                    error = %DisplayErrorContext(&*error.source),
                    "call failed; not retrying"
                );
                return Err(error.into_retrieval_error());
            }
        }
        let elapsed = now.saturating_duration_since(since);
        if self
            .policy
            .give_up_after
            .is_some_and(|limit| elapsed >= limit)
        {
            return Err(RetrievalError::RetriesExhausted {
                operation,
                attempts: self.failures,
                elapsed,
                source: error.source,
            });
        }
        Ok(())
    }
}

/// `start + by`, or a year later when that overflows (a setting of `Duration::MAX`).
pub(crate) fn after(start: Instant, by: Duration) -> Instant {
    start
        .checked_add(by)
        .or_else(|| start.checked_add(Duration::from_secs(86_400 * 365)))
        .unwrap_or(start)
}
