//! The one place that decides what a failed Kinesis call means.
//!
//! Every failed call, and every per-entry error code of a PutRecords answer, is sorted into an
//! [`ErrorClass`]:
//!
//! | class | codes | what to do |
//! |---|---|---|
//! | [`Throttled`](ErrorClass::Throttled) | `ProvisionedThroughputExceededException`, `KMSThrottlingException`, `ThrottlingException`, `LimitExceededException`, `RequestLimitExceeded`, `TooManyRequestsException`, HTTP 429 | slow down, retry |
//! | [`Transient`](ErrorClass::Transient) | `InternalFailure`, `ServiceUnavailable`, `ResourceInUseException`, `ExpiredNextTokenException`, HTTP 5xx, timeouts, connection failures, unreadable responses | retry after a backoff |
//! | [`ExpiredIterator`](ErrorClass::ExpiredIterator) | `ExpiredIteratorException` | get a new shard iterator |
//! | [`NotFound`](ErrorClass::NotFound) | `ResourceNotFoundException` | the stream or shard is gone |
//! | [`AccessDenied`](ErrorClass::AccessDenied) | `AccessDeniedException`, `KMSAccessDeniedException`, bad or expired credentials | fix the credentials or policy |
//! | [`Kms`](ErrorClass::Kms) | `KMSDisabledException`, `KMSInvalidStateException`, `KMSNotFoundException`, `KMSOptInRequired` | fix the stream's KMS key |
//! | [`InvalidRequest`](ErrorClass::InvalidRequest) | `InvalidArgumentException`, `ValidationException`, `SerializationException`, requests the SDK cannot build | fix the request |
//! | [`Malformed`](ErrorClass::Malformed) | an answer the caller cannot use | report it |
//! | [`Unexpected`](ErrorClass::Unexpected) | anything else | report it |

use std::fmt;
use std::time::Duration;

use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};

/// A boxed error, the source of a [`KinesisError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a failed Kinesis call (or a failed PutRecords entry) means.
// Not `#[non_exhaustive]`: the workspace matches on it exhaustively, so a new class must be
// handled everywhere it is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Too many requests or too much data for the shard or account: slow down and retry.
    Throttled,
    /// A failure retrying can fix: 5xx, timeouts, connection problems.
    Transient,
    /// The shard iterator expired: get a new one and go on.
    ExpiredIterator,
    /// The stream or shard does not exist (any more).
    NotFound,
    /// The credentials may not do this.
    AccessDenied,
    /// The stream's KMS key cannot be used.
    Kms,
    /// The request is invalid and retrying it cannot help.
    InvalidRequest,
    /// The answer cannot be used.
    Malformed,
    /// Anything else.
    Unexpected,
}

impl ErrorClass {
    /// Whether the same call may succeed if made again later ([`Throttled`](Self::Throttled)
    /// and [`Transient`](Self::Transient)).
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Throttled | Self::Transient)
    }
}

/// Classifies a service error code (the exact `__type` the service returned, or a PutRecords
/// entry's `ErrorCode`); `None` for a code this crate does not know.
///
/// ```
/// use kinesis_common::{ErrorClass, classify_code};
/// assert_eq!(classify_code("ProvisionedThroughputExceededException"), Some(ErrorClass::Throttled));
/// assert_eq!(classify_code("InternalFailure"), Some(ErrorClass::Transient));
/// assert_eq!(classify_code("SomethingNew"), None);
/// ```
pub fn classify_code(code: &str) -> Option<ErrorClass> {
    Some(match code {
        "ProvisionedThroughputExceededException"
        | "KMSThrottlingException"
        | "ThrottlingException"
        | "LimitExceededException"
        | "RequestLimitExceeded"
        | "TooManyRequestsException" => ErrorClass::Throttled,
        "InternalFailure"
        | "InternalFailureException"
        | "InternalServerError"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "ResourceInUseException"
        | "ExpiredNextTokenException" => ErrorClass::Transient,
        "ExpiredIteratorException" => ErrorClass::ExpiredIterator,
        "ResourceNotFoundException" => ErrorClass::NotFound,
        "AccessDeniedException"
        | "KMSAccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "MissingAuthenticationToken"
        | "IncompleteSignature"
        | "IncompleteSignatureException"
        | "ExpiredTokenException" => ErrorClass::AccessDenied,
        "KMSDisabledException"
        | "KMSInvalidStateException"
        | "KMSNotFoundException"
        | "KMSOptInRequired" => ErrorClass::Kms,
        "InvalidArgumentException" | "ValidationException" | "SerializationException" => {
            ErrorClass::InvalidRequest
        }
        _ => return None,
    })
}

/// A failed Kinesis call, classified: the operation, what it means, the error code and the
/// service's (or the client's) message. The SDK error, when there is one, is the
/// [`source`](std::error::Error::source); `Display` does not repeat it.
#[derive(Debug, thiserror::Error)]
#[error("{operation} failed ({code}): {message}")]
pub struct KinesisError {
    operation: &'static str,
    class: ErrorClass,
    code: String,
    message: String,
    #[source]
    source: Option<BoxError>,
}

impl KinesisError {
    /// An error from parts (fakes in tests build them this way too).
    pub fn new(
        operation: &'static str,
        class: ErrorClass,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            operation,
            class,
            code: code.into(),
            message: message.into(),
            source: None,
        }
    }

    /// The same error with `source` as its cause.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The call took longer than `limit`.
    pub fn timeout(operation: &'static str, limit: Duration) -> Self {
        Self::new(
            operation,
            ErrorClass::Transient,
            "Timeout",
            format!("no answer within {limit:?}"),
        )
    }

    /// The Kinesis operation that failed (`PutRecords`, `ListShards`, ...).
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// What the failure means.
    pub fn class(&self) -> ErrorClass {
        self.class
    }

    /// The service's error code, or a name for a client-side failure (`Timeout`,
    /// `DispatchFailure`, `ResponseError`, `ConstructionFailure`).
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The service's message, or the client-side error's description.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether making the call again later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.class.is_retryable()
    }
}

/// Classifies a failed SDK call of `operation`: the single place that decides retry or give up.
pub fn classify<E>(operation: &'static str, error: SdkError<E, HttpResponse>) -> KinesisError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (class, code, message) = match &error {
        SdkError::ServiceError(context) => {
            let code = context.err().code().unwrap_or("Unknown").to_owned();
            let class = classify_code(&code).unwrap_or_else(|| {
                match error.raw_response().map(|r| r.status().as_u16()) {
                    Some(429) => ErrorClass::Throttled,
                    Some(500..=599) => ErrorClass::Transient,
                    _ => ErrorClass::Unexpected,
                }
            });
            let message = context
                .err()
                .message()
                .map_or_else(|| context_text(&error), str::to_owned);
            (class, code, message)
        }
        SdkError::TimeoutError(_) => (
            ErrorClass::Transient,
            "Timeout".into(),
            context_text(&error),
        ),
        SdkError::DispatchFailure(_) => (
            ErrorClass::Transient,
            "DispatchFailure".into(),
            context_text(&error),
        ),
        SdkError::ResponseError(_) => (
            ErrorClass::Transient,
            "ResponseError".into(),
            context_text(&error),
        ),
        SdkError::ConstructionFailure(_) => (
            ErrorClass::InvalidRequest,
            "ConstructionFailure".into(),
            context_text(&error),
        ),
        _ => (
            ErrorClass::Unexpected,
            "Unknown".into(),
            context_text(&error),
        ),
    };
    KinesisError::new(operation, class, code, message).with_source(error)
}

/// The error with its whole chain of causes, on one line.
fn context_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Throttled => "throttled",
            Self::Transient => "transient",
            Self::ExpiredIterator => "expired iterator",
            Self::NotFound => "not found",
            Self::AccessDenied => "access denied",
            Self::Kms => "KMS key unusable",
            Self::InvalidRequest => "invalid request",
            Self::Malformed => "malformed answer",
            Self::Unexpected => "unexpected",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified() {
        for (code, class) in [
            (
                "ProvisionedThroughputExceededException",
                ErrorClass::Throttled,
            ),
            ("KMSThrottlingException", ErrorClass::Throttled),
            ("LimitExceededException", ErrorClass::Throttled),
            ("InternalFailure", ErrorClass::Transient),
            ("ServiceUnavailable", ErrorClass::Transient),
            ("ExpiredIteratorException", ErrorClass::ExpiredIterator),
            ("ResourceNotFoundException", ErrorClass::NotFound),
            ("AccessDeniedException", ErrorClass::AccessDenied),
            ("KMSAccessDeniedException", ErrorClass::AccessDenied),
            ("KMSDisabledException", ErrorClass::Kms),
            ("InvalidArgumentException", ErrorClass::InvalidRequest),
            ("ValidationException", ErrorClass::InvalidRequest),
        ] {
            assert_eq!(classify_code(code), Some(class), "{code}");
        }
        assert_eq!(classify_code("SomethingNew"), None);
        assert!(ErrorClass::Throttled.is_retryable());
        assert!(ErrorClass::Transient.is_retryable());
        assert!(!ErrorClass::ExpiredIterator.is_retryable());
        assert!(!ErrorClass::NotFound.is_retryable());
    }

    #[test]
    fn errors_keep_their_parts_and_source() {
        let error = KinesisError::new(
            "ListShards",
            ErrorClass::NotFound,
            "ResourceNotFoundException",
            "Stream s not found",
        )
        .with_source("the SDK error");
        assert_eq!(
            error.to_string(),
            "ListShards failed (ResourceNotFoundException): Stream s not found"
        );
        assert_eq!(error.class(), ErrorClass::NotFound);
        assert!(!error.is_retryable());
        assert_eq!(
            std::error::Error::source(&error).map(ToString::to_string),
            Some("the SDK error".to_owned())
        );
        let timeout = KinesisError::timeout("PutRecords", Duration::from_secs(6));
        assert!(timeout.is_retryable());
        assert_eq!(timeout.code(), "Timeout");
    }
}
