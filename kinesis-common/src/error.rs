//! The one place that decides what a failed Kinesis call means.
//!
//! Every failed call, and every per-entry error code of a PutRecords answer, is sorted into an
//! [`ErrorClass`] by [`classify_error`] (whole calls: the operation, the code and the message)
//! or [`classify_code`] (the code alone, for PutRecords entries and event-stream errors). The
//! table is on [`classify_error`].

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

/// Classifies a service error code alone (the exact `__type` the service returned, or a
/// PutRecords entry's `ErrorCode`); `None` for a code this crate does not know. A whole call's
/// error is classified by [`classify_error`], which also reads the operation and the message.
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
        | "ExpiredNextTokenException"
        | "ExpiredTokenException"
        | "RequestExpired"
        | "RequestTimeTooSkewed" => ErrorClass::Transient,
        "ExpiredIteratorException" => ErrorClass::ExpiredIterator,
        "ResourceNotFoundException" => ErrorClass::NotFound,
        "AccessDeniedException"
        | "KMSAccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "MissingAuthenticationToken"
        | "IncompleteSignature"
        | "IncompleteSignatureException" => ErrorClass::AccessDenied,
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

/// Classifies a failed call of `operation` from its error code and message: the rows that
/// depend on the operation or the message first, then [`classify_code`]. `None` for a code
/// this crate does not know. The one table of the workspace, first matching row wins:
///
/// | code | operation | message | class | why |
/// |---|---|---|---|---|
/// | `ExpiredTokenException`, `RequestExpired`, `RequestTimeTooSkewed` | any | any | [`Transient`](ErrorClass::Transient) | the SDK's credential provider refreshes the token (or corrects the clock) before a later attempt: a fleet meets it at every token rotation, a Lambda function after a thaw |
/// | `InvalidSignatureException` | any | `Signature expired`, `Signature not yet current` | [`Transient`](ErrorClass::Transient) | the request was signed long before it was sent (a clock jump, a frozen process): signed again, it passes |
/// | `ResourceInUseException` | `CreateStream` | any | [`InvalidRequest`](ErrorClass::InvalidRequest) | the stream exists: retrying cannot create it (elsewhere it is a stream being updated, a consumer being registered by another worker, a subscription still open: wait and retry) |
/// | `ProvisionedThroughputExceededException`, `KMSThrottlingException`, `ThrottlingException`, `LimitExceededException`, `RequestLimitExceeded`, `TooManyRequestsException`, HTTP 429 | any | any | [`Throttled`](ErrorClass::Throttled) | slow down, retry |
/// | `InternalFailure`, `ServiceUnavailable`, `ResourceInUseException`, `ExpiredNextTokenException`, HTTP 5xx, timeouts, connection failures, unreadable responses | any | any | [`Transient`](ErrorClass::Transient) | retry after a backoff (`ResourceInUse`: a stream being updated, a subscription still open) |
/// | `ExpiredIteratorException` | any | any | [`ExpiredIterator`](ErrorClass::ExpiredIterator) | get a new shard iterator |
/// | `ResourceNotFoundException` | any | any | [`NotFound`](ErrorClass::NotFound) | the stream or shard is gone |
/// | `AccessDeniedException`, `KMSAccessDeniedException`, `UnrecognizedClientException`, `InvalidSignatureException` (other messages), `MissingAuthenticationToken`, `IncompleteSignature` | any | any | [`AccessDenied`](ErrorClass::AccessDenied) | fix the credentials or policy |
/// | `KMSDisabledException`, `KMSInvalidStateException`, `KMSNotFoundException`, `KMSOptInRequired` | any | any | [`Kms`](ErrorClass::Kms) | fix the stream's KMS key |
/// | `InvalidArgumentException`, `ValidationException`, `SerializationException`, requests the SDK cannot build | any | any | [`InvalidRequest`](ErrorClass::InvalidRequest) | fix the request |
/// | an answer the caller cannot use | | | [`Malformed`](ErrorClass::Malformed) | report it |
/// | anything else | | | [`Unexpected`](ErrorClass::Unexpected) | report it |
///
///
/// Transient and throttled failures are retried by the callers within their own bounds (a
/// record's TTL, `build()`'s `list_shards_timeout`); everything else is reported at once.
///
/// ```
/// use kinesis_common::{ErrorClass, classify_error};
/// // Credentials rotate, clocks jump: signed again, the call passes.
/// assert_eq!(classify_error("PutRecords", "ExpiredTokenException", ""), Some(ErrorClass::Transient));
/// assert_eq!(
///     classify_error("PutRecords", "InvalidSignatureException", "Signature expired: 20261207T101010Z is now earlier than 20261207T102010Z"),
///     Some(ErrorClass::Transient),
/// );
/// assert_eq!(
///     classify_error("PutRecords", "InvalidSignatureException", "The request signature we calculated does not match"),
///     Some(ErrorClass::AccessDenied),
/// );
/// assert_eq!(classify_error("CreateStream", "ResourceInUseException", ""), Some(ErrorClass::InvalidRequest));
/// assert_eq!(classify_error("RegisterStreamConsumer", "ResourceInUseException", ""), Some(ErrorClass::Transient));
/// ```
pub fn classify_error(operation: &str, code: &str, message: &str) -> Option<ErrorClass> {
    match (code, operation) {
        ("InvalidSignatureException", _) if signature_is_stale(message) => {
            Some(ErrorClass::Transient)
        }
        ("ResourceInUseException", "CreateStream") => Some(ErrorClass::InvalidRequest),
        _ => classify_code(code),
    }
}

/// Whether an `InvalidSignatureException` message says the signature's time is off (signed too
/// long ago or ahead of the service's clock) rather than wrong.
fn signature_is_stale(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("signature expired") || message.contains("signature not yet current")
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
            let text = context.err().message().unwrap_or_default();
            let class = classify_error(operation, &code, text).unwrap_or_else(|| {
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
        // Stale credentials and signatures: retried (the SDK refreshes and signs again).
        for code in [
            "ExpiredTokenException",
            "RequestExpired",
            "RequestTimeTooSkewed",
        ] {
            assert_eq!(classify_code(code), Some(ErrorClass::Transient), "{code}");
            assert_eq!(
                classify_error("PutRecords", code, "x"),
                Some(ErrorClass::Transient)
            );
        }
        for message in [
            "Signature expired: 20261207T100000Z is now earlier than 20261207T100500Z (20261207T101000Z - 5 min.)",
            "Signature not yet current: 20261207T110000Z is still later than 20261207T100500Z",
        ] {
            for operation in ["PutRecords", "ListShards", "GetRecords"] {
                assert_eq!(
                    classify_error(operation, "InvalidSignatureException", message),
                    Some(ErrorClass::Transient),
                    "{operation}: {message}"
                );
            }
        }
        assert_eq!(
            classify_error("PutRecords", "InvalidSignatureException", "does not match"),
            Some(ErrorClass::AccessDenied)
        );
        for permanent in [
            "AccessDeniedException",
            "KMSDisabledException",
            "ResourceNotFoundException",
        ] {
            assert!(
                !classify_error("PutRecords", permanent, "").is_some_and(ErrorClass::is_retryable),
                "{permanent}"
            );
        }
        assert_eq!(
            classify_error("CreateStream", "ResourceInUseException", ""),
            Some(ErrorClass::InvalidRequest)
        );
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
