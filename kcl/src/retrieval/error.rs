//! [`RetrievalError`]: what is left of a failed Kinesis call once the source has handled it.
//!
//! Every failed call comes as a [`KinesisError`] already sorted into a [`Class`] by the
//! workspace's one classifier ([`kinesis_common::classify`]):
//!
//! - throttling (`ProvisionedThroughputExceededException`, `KMSThrottlingException`,
//!   `ThrottlingException`, `LimitExceededException`, HTTP 429) and transient failures (HTTP
//!   5xx, `InternalFailure`, `ServiceUnavailable`, `ResourceInUseException`, timeouts,
//!   connection errors, unreadable responses) are retried inside the source with backoff;
//! - `ExpiredIteratorException` makes the source get a new iterator at the last position it
//!   delivered;
//! - everything else is returned to the caller as a [`RetrievalError`].

use std::time::Duration;

use kinesis_common::KinesisError;

/// A boxed error, the source of a [`RetrievalError`].
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why [`RecordSource::next_batch`](super::RecordSource::next_batch) failed.
///
/// Throttling, server errors, timeouts, connection failures and expired iterators never show
/// up here: the source retries them (see [`RetrievalStats`](super::RetrievalStats) for how
/// often). What remains is either final for this shard ([`is_fatal`](Self::is_fatal): the
/// stream or shard is gone, access is denied, the KMS key is unusable, the request is invalid)
/// or [`RetriesExhausted`](Self::RetriesExhausted) when
/// [`PollingConfig::give_up_after`](super::PollingConfig::give_up_after) is set.
///
/// The source stays usable after an error: calling `next_batch` again tries again from the
/// same position (after a backoff), never skipping or repeating a record.
///
/// Following the workspace's error style, `Display` does not repeat the source; the failed
/// call, a [`KinesisError`] (operation, class, code, the service's message), is reachable
/// through [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetrievalError {
    /// The stream or the shard does not exist (any more): `ResourceNotFoundException`. Fatal.
    #[error("{operation}: stream or shard not found")]
    NotFound {
        /// The Kinesis operation that failed.
        operation: &'static str,
        /// The failed call ([`KinesisError`]).
        #[source]
        source: BoxError,
    },
    /// The credentials may not read the stream (`AccessDeniedException`,
    /// `KMSAccessDeniedException`, unrecognized or invalid credentials). Fatal.
    #[error("{operation}: access denied ({code})")]
    AccessDenied {
        /// The Kinesis operation that failed.
        operation: &'static str,
        /// The service's error code.
        code: String,
        /// The failed call ([`KinesisError`]).
        #[source]
        source: BoxError,
    },
    /// The stream's KMS key cannot be used (`KMSDisabledException`,
    /// `KMSInvalidStateException`, `KMSNotFoundException`, `KMSOptInRequired`). Fatal.
    #[error("{operation}: the stream's KMS key is unusable ({code})")]
    Kms {
        /// The Kinesis operation that failed.
        operation: &'static str,
        /// The service's error code.
        code: String,
        /// The failed call ([`KinesisError`]).
        #[source]
        source: BoxError,
    },
    /// The service refused the request as invalid (`InvalidArgumentException`, for example a
    /// starting sequence number that is not in the shard), or the SDK could not build it.
    /// Fatal.
    #[error("{operation}: invalid request ({code})")]
    InvalidRequest {
        /// The Kinesis operation that failed.
        operation: &'static str,
        /// The service's error code.
        code: String,
        /// The failed call ([`KinesisError`]).
        #[source]
        source: BoxError,
    },
    /// The [`StartingPosition`](super::StartingPosition) cannot be used, for example an
    /// `AfterSequence` whose sequence number is not decimal digits. Fatal.
    #[error("invalid starting position: {reason}")]
    InvalidStartingPosition {
        /// What is wrong with it.
        reason: String,
    },
    /// A response the source cannot use, for example a child shard without a valid hash-key
    /// range. Fatal.
    #[error("{operation}: malformed response: {reason}")]
    MalformedResponse {
        /// The Kinesis operation that answered.
        operation: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An error the source does not know how to handle. Fatal.
    #[error("{operation}: unexpected error ({code})")]
    Unexpected {
        /// The Kinesis operation that failed.
        operation: &'static str,
        /// The service's error code, or a description of the client-side failure.
        code: String,
        /// The failed call ([`KinesisError`]).
        #[source]
        source: BoxError,
    },
    /// Retryable failures went on for longer than
    /// [`PollingConfig::give_up_after`](super::PollingConfig::give_up_after) without a
    /// success. Not fatal: calling `next_batch` again keeps retrying.
    #[error("{operation}: still failing after {attempts} attempts over {elapsed:?}")]
    RetriesExhausted {
        /// The operation of the last failure.
        operation: &'static str,
        /// Failed attempts in a row.
        attempts: u32,
        /// Time since the first of them.
        elapsed: Duration,
        /// The last failure.
        #[source]
        source: BoxError,
    },
    /// The background task that prefetches batches stopped (it panicked). Fatal for this
    /// source; a new source resumes from the last checkpoint.
    #[error("the prefetch task stopped unexpectedly")]
    PrefetchStopped,
}

impl RetrievalError {
    /// Whether calling [`next_batch`](super::RecordSource::next_batch) again cannot help: true
    /// for everything but [`RetriesExhausted`](Self::RetriesExhausted).
    pub fn is_fatal(&self) -> bool {
        !matches!(self, Self::RetriesExhausted { .. })
    }

    /// The Kinesis operation that failed, if a call failed.
    pub fn operation(&self) -> Option<&'static str> {
        match self {
            Self::NotFound { operation, .. }
            | Self::AccessDenied { operation, .. }
            | Self::Kms { operation, .. }
            | Self::InvalidRequest { operation, .. }
            | Self::MalformedResponse { operation, .. }
            | Self::Unexpected { operation, .. }
            | Self::RetriesExhausted { operation, .. } => Some(operation),
            Self::InvalidStartingPosition { .. } | Self::PrefetchStopped => None,
        }
    }
}

/// What a failed call means: the classes every Kinesis caller of the workspace shares.
pub(crate) use kinesis_common::ErrorClass as Class;

/// The caller-facing error for a failed call that is not retried; the [`KinesisError`] is
/// kept as the source.
impl From<KinesisError> for RetrievalError {
    fn from(error: KinesisError) -> Self {
        let operation = error.operation();
        let code = error.code().to_owned();
        match error.class() {
            Class::NotFound => RetrievalError::NotFound {
                operation,
                source: Box::new(error),
            },
            Class::AccessDenied => RetrievalError::AccessDenied {
                operation,
                code,
                source: Box::new(error),
            },
            Class::Kms => RetrievalError::Kms {
                operation,
                code,
                source: Box::new(error),
            },
            Class::InvalidRequest => RetrievalError::InvalidRequest {
                operation,
                code,
                source: Box::new(error),
            },
            Class::Malformed => RetrievalError::MalformedResponse {
                operation,
                reason: error.message().to_owned(),
            },
            Class::Throttled | Class::Transient | Class::ExpiredIterator | Class::Unexpected => {
                RetrievalError::Unexpected {
                    operation,
                    code,
                    source: Box::new(error),
                }
            }
        }
    }
}

/// Classifies a service error code (see [`kinesis_common::classify_code`]).
#[cfg(test)]
pub(crate) fn classify_code(code: &str) -> Option<Class> {
    kinesis_common::classify_code(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified() {
        for (code, class) in [
            ("ProvisionedThroughputExceededException", Class::Throttled),
            ("KMSThrottlingException", Class::Throttled),
            ("InternalFailure", Class::Transient),
            ("ServiceUnavailable", Class::Transient),
            ("ExpiredIteratorException", Class::ExpiredIterator),
            ("ResourceNotFoundException", Class::NotFound),
            ("AccessDeniedException", Class::AccessDenied),
            ("KMSAccessDeniedException", Class::AccessDenied),
            ("KMSDisabledException", Class::Kms),
            ("InvalidArgumentException", Class::InvalidRequest),
        ] {
            assert_eq!(classify_code(code), Some(class), "{code}");
        }
        assert_eq!(classify_code("SomethingNew"), None);
        assert!(Class::Throttled.is_retryable());
        assert!(Class::Transient.is_retryable());
        assert!(!Class::ExpiredIterator.is_retryable());
        assert!(!Class::NotFound.is_retryable());
    }

    #[test]
    fn caller_errors_keep_operation_and_source() {
        let error = RetrievalError::from(KinesisError::new(
            "GetRecords",
            Class::AccessDenied,
            "AccessDeniedException",
            "no",
        ));
        assert!(error.is_fatal());
        assert_eq!(error.operation(), Some("GetRecords"));
        assert_eq!(
            error.to_string(),
            "GetRecords: access denied (AccessDeniedException)"
        );
        // The source is the classified call error, which keeps the service's message.
        let source = std::error::Error::source(&error)
            .and_then(|source| source.downcast_ref::<KinesisError>())
            .map(KinesisError::message);
        assert_eq!(source, Some("no"));
        let exhausted = RetrievalError::RetriesExhausted {
            operation: "GetRecords",
            attempts: 3,
            elapsed: Duration::from_secs(1),
            source: "throttled".into(),
        };
        assert!(!exhausted.is_fatal());
    }
}
