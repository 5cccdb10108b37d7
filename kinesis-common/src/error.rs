//! The one place that decides what a failed Kinesis call means, and the one way the workspace
//! writes an error with its causes on a line ([`ErrorChain`]).
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
/// service's (or the client's) message.
///
/// The message is where the failure's text lives: the service's message, or the client-side
/// error with all its causes (`dispatch failure: io error: connection refused`), since callers
/// hand it on alone (a producer's record fails with it). So the SDK error it was classified
/// from is kept for inspection ([`sdk_error`](Self::sdk_error)) but is not its
/// [`source`](std::error::Error::source), which would say the same again; the source is a
/// cause given with [`with_source`](Self::with_source).
#[derive(Debug, thiserror::Error)]
#[error("{operation} failed ({code}): {message}")]
pub struct KinesisError {
    operation: &'static str,
    class: ErrorClass,
    code: String,
    message: String,
    #[source]
    source: Option<BoxError>,
    sdk_error: Option<BoxError>,
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
            sdk_error: None,
        }
    }

    /// The same error with `source` as its cause: an error whose text the message does not
    /// already hold.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The same error keeping `error`, the SDK error it was classified from and whose text the
    /// message already holds, for [`sdk_error`](Self::sdk_error) (not as its source).
    pub fn with_sdk_error(mut self, error: impl Into<BoxError>) -> Self {
        self.sdk_error = Some(error.into());
        self
    }

    /// The SDK error this error was classified from, if it was (downcast it to the operation's
    /// `SdkError` for the raw response).
    pub fn sdk_error(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.sdk_error.as_deref()
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
                .map_or_else(|| ErrorChain(&error).to_string(), str::to_owned);
            (class, code, message)
        }
        // A client-side failure: named by its kind, described by its error chain.
        client_side => {
            let (class, code) = match client_side {
                SdkError::TimeoutError(_) => (ErrorClass::Transient, "Timeout"),
                SdkError::DispatchFailure(_) => (ErrorClass::Transient, "DispatchFailure"),
                SdkError::ResponseError(_) => (ErrorClass::Transient, "ResponseError"),
                SdkError::ConstructionFailure(_) => {
                    (ErrorClass::InvalidRequest, "ConstructionFailure")
                }
                _ => (ErrorClass::Unexpected, "Unknown"),
            };
            (class, code.to_owned(), ErrorChain(&error).to_string())
        }
    };
    KinesisError::new(operation, class, code, message).with_sdk_error(error)
}

/// Displays an error and its sources on one line, `": "`-separated (`a: b: c`): what to act on
/// is often in a source, and `Display` of a library error leaves its source out. A source whose
/// text the line already holds is left out, so an error that repeats its source's message
/// shows it once.
///
/// ```
/// use kinesis_common::ErrorChain;
/// #[derive(Debug, thiserror::Error)]
/// #[error("reading shard-1 failed")]
/// struct Read(#[source] std::io::Error);
/// let error = Read(std::io::Error::other("connection reset"));
/// assert_eq!(ErrorChain(&error).to_string(), "reading shard-1 failed: connection reset");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ErrorChain<E>(pub E);

impl<E: std::error::Error> fmt::Display for ErrorChain<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = self.0.to_string();
        let mut source = self.0.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            source = cause.source();
        }
        f.write_str(&line)
    }
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

    /// An error over another, as thiserror writes one: its own text, then `#[source]`.
    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: String,
        #[source]
        source: Option<BoxError>,
    }

    fn layer(text: &str, source: Option<BoxError>) -> Layer {
        Layer {
            text: text.to_owned(),
            source,
        }
    }

    #[test]
    fn the_chain_joins_each_source_once() {
        let plain = layer("a", Some(layer("b", Some(layer("c", None).into())).into()));
        assert_eq!(ErrorChain(&plain).to_string(), "a: b: c");
        assert_eq!(ErrorChain(layer("alone", None)).to_string(), "alone");
        // An error that repeats its source's message (`{source}` in its own text) shows it
        // once; a source with no text adds nothing.
        let repeating = layer(
            "sync failed: connection reset",
            Some(layer("connection reset", Some(layer("", None).into())).into()),
        );
        assert_eq!(
            ErrorChain(&repeating).to_string(),
            "sync failed: connection reset"
        );
        // A cause below a repeated one still shows.
        let deeper = layer(
            "sync failed: timed out",
            Some(layer("timed out", Some(layer("after 5s", None).into())).into()),
        );
        assert_eq!(
            ErrorChain(&deeper).to_string(),
            "sync failed: timed out: after 5s"
        );
        // Through a trait object too (boxed sources, `&dyn Error` callers).
        let boxed: BoxError = Box::new(plain);
        assert_eq!(ErrorChain(&*boxed).to_string(), "a: b: c");
    }

    /// Classified SDK errors, on their own and under a caller's error, print each cause once:
    /// the text lives in the message, the SDK error is kept but is not the source.
    #[test]
    fn a_classified_sdk_error_prints_each_cause_once() {
        use aws_sdk_kinesis::error::{ConnectorError, ErrorMetadata};
        use aws_sdk_kinesis::operation::list_shards::ListShardsError;
        use aws_sdk_kinesis::types::error::ResourceNotFoundException;

        const MISSING: &str = "Stream s under account 1 not found.";
        let response = |status: u16| {
            HttpResponse::new(
                status
                    .try_into()
                    .unwrap_or_else(|_| panic!("status {status}")),
                "".into(),
            )
        };
        let dispatch: SdkError<ListShardsError, HttpResponse> =
            SdkError::dispatch_failure(ConnectorError::io("connection refused".into()));
        let not_found: SdkError<ListShardsError, HttpResponse> = SdkError::service_error(
            ListShardsError::ResourceNotFoundException(
                ResourceNotFoundException::builder()
                    .message(MISSING)
                    .meta(
                        ErrorMetadata::builder()
                            .code("ResourceNotFoundException")
                            .message(MISSING)
                            .build(),
                    )
                    .build(),
            ),
            response(400),
        );
        let timeout: SdkError<ListShardsError, HttpResponse> =
            SdkError::timeout_error("read timed out");
        for (sdk_error, line, once) in [
            (
                dispatch,
                "ListShards failed (DispatchFailure): dispatch failure: io error: connection refused",
                "connection refused",
            ),
            (
                not_found,
                "ListShards failed (ResourceNotFoundException): Stream s under account 1 not found.",
                "not found",
            ),
            (
                timeout,
                "ListShards failed (Timeout): request has timed out: read timed out",
                "read timed out",
            ),
        ] {
            let error = classify("ListShards", sdk_error);
            assert_eq!(ErrorChain(&error).to_string(), line);
            let wrapped = layer("shard sync failed", Some(error.into()));
            let text = ErrorChain(&wrapped).to_string();
            assert_eq!(text, format!("shard sync failed: {line}"));
            assert_eq!(text.matches(once).count(), 1, "{text}");
            // The same line whether or not the formatter skips repeats: nothing repeats.
            let mut plain = wrapped.to_string();
            let mut source = std::error::Error::source(&wrapped);
            while let Some(cause) = source {
                plain = format!("{plain}: {cause}");
                source = cause.source();
            }
            assert_eq!(plain, text);
        }
        let error = classify(
            "ListShards",
            SdkError::<ListShardsError, HttpResponse>::timeout_error("slow"),
        );
        assert!(std::error::Error::source(&error).is_none());
        assert!(
            error
                .sdk_error()
                .and_then(|e| e.downcast_ref::<SdkError<ListShardsError, HttpResponse>>())
                .is_some(),
            "the SDK error is kept for inspection"
        );
    }
}
