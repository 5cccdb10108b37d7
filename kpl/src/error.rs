//! Errors of the producer, one type per operation family.

use std::fmt;

use aggregation_proto::RecordError;

use crate::receipt::Attempt;

/// A [`ProducerBuilder`](crate::ProducerBuilder) setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The setting and why it is rejected.
    #[error("invalid producer configuration: {0}")]
    Invalid(&'static str),
    /// Neither an SDK config nor a Kinesis client was given.
    #[error("no AWS configuration: call sdk_config() or client() on the builder")]
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
        record: Box<aggregation_proto::UserRecord>,
    },
    /// The producer is shutting down or has stopped.
    #[error("the producer is shutting down")]
    ShuttingDown(Box<aggregation_proto::UserRecord>),
}

/// Why [`Producer::try_send`](crate::Producer::try_send) did not take a record. The record is
/// given back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrySendError {
    /// The producer holds its maximum of outstanding records or bytes: wait (use `send`), or
    /// drop or divert the record.
    #[error("producer is full (outstanding records or bytes at their limit)")]
    Full(Box<aggregation_proto::UserRecord>),
    /// As for `send`.
    #[error(transparent)]
    Send(#[from] SendError),
}

/// Why a record sent to Kinesis did not make it. Every variant carries every attempt made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordFailure {
    /// The record's TTL ran out before Kinesis accepted it (for example under sustained
    /// throttling).
    #[error("record expired after {} attempt(s){}", .attempts.len(), LastError(.attempts))]
    Expired {
        /// Every attempt, with its error.
        attempts: Vec<Attempt>,
    },
    /// Kinesis refused it with an error retrying cannot fix (validation, access denied, missing
    /// stream, KMS key problems, ...).
    #[error("rejected by Kinesis: {code}: {message}")]
    Rejected {
        /// The error code.
        code: String,
        /// The service's message.
        message: String,
        /// Every attempt.
        attempts: Vec<Attempt>,
    },
    /// Throttled, and the producer is configured to fail throttled records at once.
    #[error("throttled{}", LastError(.attempts))]
    Throttled {
        /// Every attempt.
        attempts: Vec<Attempt>,
    },
    /// The producer was dropped or aborted before the record was sent.
    #[error("the producer stopped before the record was sent")]
    ShuttingDown {
        /// The attempts made before it stopped.
        attempts: Vec<Attempt>,
    },
}

impl RecordFailure {
    /// Every attempt made for the record.
    pub fn attempts(&self) -> &[Attempt] {
        match self {
            Self::Expired { attempts }
            | Self::Rejected { attempts, .. }
            | Self::Throttled { attempts }
            | Self::ShuttingDown { attempts } => attempts,
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
