//! [`Retry`]: consecutive failures of one source, the backoff they earned, and the decision to
//! retry or give up. Shared by polling and enhanced fan-out so both back off alike.

use std::time::Duration;

use kinesis_common::{Backoff, ErrorChain, Jitter, KinesisError, later};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::error::{Class, RetrievalError};
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
    /// Equal jitter (the upper half of the envelope), so a fleet of consumers spreads out
    /// without any of them retrying at once.
    backoff: Backoff,
}

impl Retry {
    pub(crate) fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            failures: 0,
            since: None,
            backoff: Backoff::new(policy.min_backoff, policy.max_backoff, Jitter::Equal),
        }
    }

    /// Forgets the failures after a success.
    pub(crate) fn succeeded(&mut self) {
        self.failures = 0;
        self.since = None;
        self.backoff.reset();
    }

    /// When the next attempt may start: now, or after the backoff when the last one failed.
    pub(crate) fn not_before(&mut self) -> Option<Instant> {
        (self.failures > 0).then(|| later(Instant::now(), self.backoff.next_delay()))
    }

    /// Counts a failure: `Ok` to retry it, `Err` to hand it to the caller.
    pub(crate) fn failed(
        &mut self,
        error: KinesisError,
        counters: &Counters,
    ) -> Result<(), RetrievalError> {
        let now = Instant::now();
        self.failures = self.failures.saturating_add(1);
        let since = *self.since.get_or_insert(now);
        let operation = error.operation();
        match error.class() {
            Class::Throttled => {
                add(&counters.throttled, 1);
                debug!(
                    operation,
                    code = error.code(),
                    failures = self.failures,
                    "throttled; backing off"
                );
            }
            Class::Transient => {
                add(&counters.transient_errors, 1);
                warn!(
                    operation,
                    code = error.code(),
                    failures = self.failures,
                    error = %ErrorChain(&error),
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
                    code = error.code(),
                    error = %ErrorChain(&error),
                    "call failed; not retrying"
                );
                return Err(error.into());
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
                source: Box::new(error),
            });
        }
        Ok(())
    }
}
