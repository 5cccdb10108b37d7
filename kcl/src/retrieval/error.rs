//! [`RetrievalError`], and the one place that decides what a failed Kinesis call means.
//!
//! Every failed call goes through [`classify`], which sorts it into a [`Class`]:
//!
//! - throttling (`ProvisionedThroughputExceededException`, `KMSThrottlingException`,
//!   `ThrottlingException`, `LimitExceededException`, HTTP 429) and transient failures (HTTP
//!   5xx, `InternalFailure`, `ServiceUnavailable`, `ResourceInUseException`, timeouts,
//!   connection errors, unreadable responses) are retried inside the source with backoff;
//! - `ExpiredIteratorException` makes the source get a new iterator at the last position it
//!   delivered;
//! - everything else is returned to the caller as a [`RetrievalError`].

use std::time::Duration;

use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};

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
/// Following the workspace's error style, `Display` does not repeat the source; the SDK error
/// is reachable through [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetrievalError {
    /// The stream or the shard does not exist (any more): `ResourceNotFoundException`. Fatal.
    #[error("{operation}: stream or shard not found")]
    NotFound {
        /// The Kinesis operation that failed.
        operation: &'static str,
        /// The SDK error.
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
        /// The SDK error.
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
        /// The SDK error.
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
        /// The SDK error.
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
        /// The SDK error.
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

/// A Kinesis operation the source calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    GetShardIterator,
    GetRecords,
    ListShards,
    DescribeStreamSummary,
    RegisterStreamConsumer,
    DescribeStreamConsumer,
    SubscribeToShard,
}

impl Operation {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::GetShardIterator => "GetShardIterator",
            Self::GetRecords => "GetRecords",
            Self::ListShards => "ListShards",
            Self::DescribeStreamSummary => "DescribeStreamSummary",
            Self::RegisterStreamConsumer => "RegisterStreamConsumer",
            Self::DescribeStreamConsumer => "DescribeStreamConsumer",
            Self::SubscribeToShard => "SubscribeToShard",
        }
    }
}

/// What a failed call means: the classes every Kinesis caller of the workspace shares.
pub(crate) use kinesis_common::ErrorClass as Class;

/// A failed call, classified.
#[derive(Debug)]
pub(crate) struct CallError {
    pub(crate) operation: Operation,
    pub(crate) class: Class,
    pub(crate) code: String,
    pub(crate) source: BoxError,
}

impl CallError {
    /// A call error from parts (the fakes of the unit tests build them this way too).
    pub(crate) fn new(
        operation: Operation,
        class: Class,
        code: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self {
            operation,
            class,
            code: code.into(),
            source: source.into(),
        }
    }

    /// A classified error of the shared classifier, kept as the source.
    pub(crate) fn from_kinesis(operation: Operation, error: kinesis_common::KinesisError) -> Self {
        Self::new(operation, error.class(), error.code().to_owned(), error)
    }

    /// The call took longer than the request timeout.
    pub(crate) fn timeout(operation: Operation, timeout: Duration) -> Self {
        Self::new(
            operation,
            Class::Transient,
            "Timeout",
            format!("{} took longer than {timeout:?}", operation.name()),
        )
    }

    /// The caller-facing error for a failure that is not retried.
    pub(crate) fn into_retrieval_error(self) -> RetrievalError {
        let operation = self.operation.name();
        let Self {
            class,
            code,
            source,
            ..
        } = self;
        match class {
            Class::NotFound => RetrievalError::NotFound { operation, source },
            Class::AccessDenied => RetrievalError::AccessDenied {
                operation,
                code,
                source,
            },
            Class::Kms => RetrievalError::Kms {
                operation,
                code,
                source,
            },
            Class::InvalidRequest => RetrievalError::InvalidRequest {
                operation,
                code,
                source,
            },
            Class::Malformed => RetrievalError::MalformedResponse {
                operation,
                reason: code,
            },
            Class::Throttled | Class::Transient | Class::ExpiredIterator | Class::Unexpected => {
                RetrievalError::Unexpected {
                    operation,
                    code,
                    source,
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

/// Classifies a failed SDK call through the workspace's single classifier.
pub(crate) fn classify<E>(operation: Operation, error: SdkError<E, HttpResponse>) -> CallError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    CallError::from_kinesis(operation, kinesis_common::classify(operation.name(), error))
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
        let error = CallError::new(
            Operation::GetRecords,
            Class::AccessDenied,
            "AccessDeniedException",
            "no",
        )
        .into_retrieval_error();
        assert!(error.is_fatal());
        assert_eq!(error.operation(), Some("GetRecords"));
        assert_eq!(
            error.to_string(),
            "GetRecords: access denied (AccessDeniedException)"
        );
        assert_eq!(
            std::error::Error::source(&error).map(ToString::to_string),
            Some("no".to_owned())
        );
        let exhausted = RetrievalError::RetriesExhausted {
            operation: "GetRecords",
            attempts: 3,
            elapsed: Duration::from_secs(1),
            source: "throttled".into(),
        };
        assert!(!exhausted.is_fatal());
    }
}
