//! Errors of the producer, one type per operation family.

use std::fmt;
use std::sync::Arc;

use aggregation_proto::{RecordError, UserRecord};

use crate::receipt::Attempt;

/// A [`ProducerBuilder`](crate::ProducerBuilder) setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The setting and why it is rejected.
    #[error("invalid producer configuration: {0}")]
    Invalid(&'static str),
    /// Neither an SDK config, a Kinesis client nor a [`KinesisApi`](crate::KinesisApi) was
    /// given.
    #[error("no AWS configuration: call sdk_config(), client() or kinesis_api() on the builder")]
    MissingClient,
    /// `build` was called outside a tokio runtime.
    #[error("the producer must be built inside a tokio runtime (it spawns its pipeline task)")]
    NoRuntime,
}

/// Why [`Producer::send`](crate::Producer::send) did not take a record. The record is given
/// back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// Kinesis would refuse the record: fix it and send again.
    #[error("record rejected before sending: {error}")]
    Invalid {
        /// What is wrong with it.
        error: RecordError,
        /// The record.
        record: Box<UserRecord>,
    },
    /// The producer is shutting down or has stopped.
    #[error("the producer is shutting down")]
    ShuttingDown(Box<UserRecord>),
    /// The producer's pipeline failed (a bug: please report it with the cause); nothing more
    /// can be sent with this producer. Build a new one.
    #[error("the producer's pipeline failed: {cause}")]
    Stopped {
        /// Why it failed.
        cause: Arc<str>,
        /// The record.
        record: Box<UserRecord>,
    },
}

impl SendError {
    /// The record that was not taken.
    pub fn into_record(self) -> UserRecord {
        match self {
            Self::Invalid { record, .. }
            | Self::ShuttingDown(record)
            | Self::Stopped { record, .. } => *record,
        }
    }
}

/// Why [`Producer::try_send`](crate::Producer::try_send) did not take a record. The record is
/// given back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrySendError {
    /// The producer holds its maximum of outstanding records or bytes: wait (use `send`), or
    /// drop or divert the record.
    #[error("producer is full (outstanding records or bytes at their limit)")]
    Full(Box<UserRecord>),
    /// As for `send`.
    #[error(transparent)]
    Send(#[from] SendError),
}

/// Why a record failed for good.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureReason {
    /// Its TTL ran out before Kinesis accepted it (for example under sustained throttling, or
    /// an endpoint too slow for the load).
    Expired,
    /// Kinesis refused it with an error retrying cannot fix (validation, access denied,
    /// missing stream, KMS key problems, ...).
    Rejected {
        /// The error code.
        code: Arc<str>,
        /// The service's message.
        message: Arc<str>,
    },
    /// Throttled, and the producer is configured to fail throttled records at once.
    Throttled,
    /// The producer was shut down, or its runtime stopped, before the record was sent.
    ShuttingDown,
    /// The producer's pipeline failed (a bug: please report it with the cause).
    Stopped {
        /// Why it failed.
        cause: Arc<str>,
    },
}

/// A record that Kinesis did not store, with why, every attempt made, and the record itself
/// (to retry it elsewhere or dead-letter it without a copy).
///
/// One pointer wide: the details live in one allocation, made only for a failed record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", Describe(self))]
pub struct RecordFailure {
    inner: Box<FailureDetails>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FailureDetails {
    reason: FailureReason,
    record: Option<UserRecord>,
    attempts: Vec<Attempt>,
    attempt_count: u32,
    may_be_stored: bool,
}

impl RecordFailure {
    pub(crate) fn new(
        reason: FailureReason,
        record: Option<UserRecord>,
        attempts: Vec<Attempt>,
        attempt_count: u32,
        may_be_stored: bool,
    ) -> Self {
        Self {
            inner: Box::new(FailureDetails {
                reason,
                record,
                attempts,
                attempt_count,
                may_be_stored,
            }),
        }
    }

    /// Whether Kinesis may have stored the record after all: an attempt's answer never came (a
    /// timeout, a dropped connection) or its aggregate was stored on another shard before it
    /// was sent again. Sending such a record again may duplicate it for consumers; `false`
    /// means no attempt of it can have been stored.
    ///
    /// ```
    /// # async fn example(receipt: kpl::Receipt) {
    /// if let Err(failure) = receipt.await {
    ///     let duplicate_risk = failure.may_be_stored();
    ///     let record = failure.into_record(); // to a dead-letter queue, with that flag
    /// #   let _ = (duplicate_risk, record);
    /// }
    /// # }
    /// ```
    pub fn may_be_stored(&self) -> bool {
        self.inner.may_be_stored
    }

    /// Why it failed.
    pub fn reason(&self) -> &FailureReason {
        &self.inner.reason
    }

    /// The record. `None` only when the pipeline went away while holding it (its runtime shut
    /// down, or it failed).
    pub fn record(&self) -> Option<&UserRecord> {
        self.inner.record.as_ref()
    }

    /// The record, to send again or dead-letter.
    pub fn into_record(self) -> Option<UserRecord> {
        self.inner.record
    }

    /// The latest attempts (at most [`MAX_KEPT_ATTEMPTS`](crate::MAX_KEPT_ATTEMPTS)).
    pub fn attempts(&self) -> &[Attempt] {
        &self.inner.attempts
    }

    /// How many attempts were made in all.
    pub fn attempt_count(&self) -> u32 {
        self.inner.attempt_count
    }

    /// Whether the TTL ran out.
    pub fn is_expired(&self) -> bool {
        self.inner.reason == FailureReason::Expired
    }
}

struct Describe<'a>(&'a RecordFailure);

impl fmt::Display for Describe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failure = &self.0.inner;
        self.reason(f)?;
        if failure.may_be_stored {
            f.write_str(" (it may be stored all the same: an attempt's answer never came)")?;
        }
        Ok(())
    }
}

impl Describe<'_> {
    fn reason(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failure = &self.0.inner;
        match &failure.reason {
            FailureReason::Expired => write!(
                f,
                "record expired after {} attempt(s){}",
                failure.attempt_count,
                LastError(&failure.attempts)
            ),
            FailureReason::Rejected { code, message } => {
                write!(f, "rejected by Kinesis: {code}: {message}")
            }
            FailureReason::Throttled => {
                write!(f, "throttled{}", LastError(&failure.attempts))
            }
            FailureReason::ShuttingDown => {
                f.write_str("the producer stopped before the record was sent")
            }
            FailureReason::Stopped { cause } => {
                write!(f, "the producer's pipeline failed: {cause}")
            }
        }
    }
}

struct LastError<'a>(&'a [Attempt]);

impl fmt::Display for LastError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self
            .0
            .last()
            .and_then(|a| a.error_code.as_deref().map(|c| (c, a)))
        {
            Some((code, attempt)) => write!(
                f,
                "; last error {code}: {}",
                attempt.error_message.as_deref().unwrap_or("")
            ),
            None => Ok(()),
        }
    }
}

/// What became of the records a [`Producer::flush`](crate::Producer::flush) waited for: those
/// accepted before it and not yet resolved when it was called.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlushReport {
    /// Stored by Kinesis.
    pub stored: u64,
    /// Failed for good (their receipts, or the metrics for detached records, say why).
    pub failed: u64,
    /// Of `failed`, those whose TTL ran out.
    pub expired: u64,
}

impl FlushReport {
    /// Whether every record was stored.
    pub fn all_stored(&self) -> bool {
        self.failed == 0
    }
}

/// Why a flush could not report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlushError {
    /// The time bound of [`Producer::flush_timeout`](crate::Producer::flush_timeout) ran out
    /// first; the records are still being sent.
    #[error("flush did not finish within {0:?}; the records are still being sent")]
    TimedOut(std::time::Duration),
    /// The producer's pipeline failed: records it held were not stored.
    #[error("the producer's pipeline failed: {cause}")]
    Stopped {
        /// Why it failed.
        cause: Arc<str>,
    },
}
