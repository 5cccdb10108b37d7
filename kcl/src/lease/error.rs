//! [`LeaseError`] and the one place that decides which DynamoDB failures are worth retrying.
//!
//! Every SDK error of the lease table goes through [`from_sdk`], which sorts it into a
//! [`LeaseErrorKind`]:
//!
//! - a failed condition (the SDK's `ConditionalCheckFailedException`) is
//!   [`LeaseErrorKind::LeaseLost`]: somebody else changed the lease; re-read it, never retry the
//!   write;
//! - throttling (`ProvisionedThroughputExceededException`, `ThrottlingException`,
//!   `RequestLimitExceeded`, `LimitExceededException`, HTTP 429) is
//!   [`LeaseErrorKind::Throttling`];
//! - server errors (HTTP 5xx, `InternalServerError`, `ServiceUnavailable`), transaction
//!   conflicts, timeouts, connection failures and unreadable responses are
//!   [`LeaseErrorKind::Transient`];
//! - everything else (validation, access denied, bad credentials, missing table, a request the
//!   SDK could not build) is [`LeaseErrorKind::Fatal`].

use std::fmt;
use std::time::Duration;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{BoxError, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::describe_table::DescribeTableError;
use aws_sdk_dynamodb::operation::get_item::GetItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::scan::ScanError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_continuous_backups::UpdateContinuousBackupsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;

use super::codec::MalformedLease;
use super::model::InvalidCheckpoint;

/// What a [`LeaseError`] means for the caller: give up the lease, retry, or stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LeaseErrorKind {
    /// A conditional write failed: another worker took the lease or the caller's copy is stale.
    /// Stop processing the shard and re-read the lease; retrying the same write cannot succeed.
    LeaseLost,
    /// DynamoDB throttled the request. Retry after a backoff, more slowly.
    Throttling,
    /// A server error, timeout or connection failure. Retry with backoff. A write that ended
    /// this way may or may not have been applied.
    Transient,
    /// Retrying will not help (validation, permissions, missing table, malformed row).
    Fatal,
}

impl LeaseErrorKind {
    /// Whether retrying the same request can succeed ([`Throttling`](Self::Throttling) or
    /// [`Transient`](Self::Transient)).
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Throttling | Self::Transient)
    }
}

impl fmt::Display for LeaseErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::LeaseLost => "lease lost",
            Self::Throttling => "throttled",
            Self::Transient => "transient",
            Self::Fatal => "fatal",
        })
    }
}

/// Why a [`LeaseTable`](super::LeaseTable) operation failed. [`LeaseError::kind`] says what to
/// do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// A conditional write failed: the stored lease no longer has the caller's counter (or
    /// owner). The lease is someone else's now, or the caller's copy is stale.
    #[error("lease {lease_key} lost: its counter or owner changed")]
    LeaseLost {
        /// The lease.
        lease_key: String,
    },
    /// A DynamoDB request failed. The SDK error is the [`source`](std::error::Error::source).
    #[error("DynamoDB {operation} on table {table} failed ({kind})")]
    Dynamo {
        /// The DynamoDB operation (`UpdateItem`, `Scan`, ...).
        operation: &'static str,
        /// The lease table.
        table: String,
        /// Retryable or not.
        kind: LeaseErrorKind,
        /// The SDK error.
        #[source]
        source: BoxError,
    },
    /// The lease table does not exist (DynamoDB's `ResourceNotFoundException`). Fatal.
    #[error(
        "DynamoDB {operation} on table {table} failed: no such table (check the application name and the region)"
    )]
    TableNotFound {
        /// The DynamoDB operation (`Scan`, `GetItem`, ...).
        operation: &'static str,
        /// The lease table.
        table: String,
        /// The SDK error.
        #[source]
        source: BoxError,
    },
    /// The table holds an item that is not a valid lease.
    #[error("table {table} holds a malformed lease")]
    Malformed {
        /// The lease table.
        table: String,
        /// Which item and attribute.
        #[source]
        source: MalformedLease,
    },
    /// A checkpoint to be written is not a sentinel or a decimal sequence number.
    #[error("cannot write lease {lease_key}: bad checkpoint")]
    InvalidCheckpoint {
        /// The lease.
        lease_key: String,
        /// The rejected checkpoint.
        #[source]
        source: InvalidCheckpoint,
    },
    /// An argument that cannot be written (an empty lease key or worker id, a counter at its
    /// maximum).
    #[error("cannot write lease {lease_key:?}: {reason}")]
    InvalidInput {
        /// The lease.
        lease_key: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The table did not become ACTIVE in time.
    #[error("table {table} not ACTIVE after {waited:?} (last status: {last_status})")]
    TableNotActive {
        /// The lease table.
        table: String,
        /// How long we waited.
        waited: Duration,
        /// The last status DescribeTable reported (`NOT_FOUND` when it never appeared).
        last_status: String,
    },
}

impl LeaseError {
    /// What this error means for the caller.
    pub fn kind(&self) -> LeaseErrorKind {
        match self {
            Self::LeaseLost { .. } => LeaseErrorKind::LeaseLost,
            Self::Dynamo { kind, .. } => *kind,
            Self::TableNotFound { .. }
            | Self::Malformed { .. }
            | Self::InvalidCheckpoint { .. }
            | Self::InvalidInput { .. } => LeaseErrorKind::Fatal,
            Self::TableNotActive { .. } => LeaseErrorKind::Transient,
        }
    }

    /// Whether retrying the same operation can succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    /// Whether this is [`LeaseError::LeaseLost`].
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, Self::LeaseLost { .. })
    }
}

/// An operation error of the DynamoDB SDK, with the typed "condition failed" check of the
/// operations that take a condition.
pub(crate) trait DynamoServiceError:
    ProvideErrorMetadata + std::error::Error + Send + Sync + 'static
{
    /// Whether this is the operation's `ConditionalCheckFailedException`.
    fn is_condition_failed(&self) -> bool {
        false
    }
}

impl DynamoServiceError for UpdateItemError {
    fn is_condition_failed(&self) -> bool {
        self.is_conditional_check_failed_exception()
    }
}

impl DynamoServiceError for PutItemError {
    fn is_condition_failed(&self) -> bool {
        self.is_conditional_check_failed_exception()
    }
}

impl DynamoServiceError for DeleteItemError {
    fn is_condition_failed(&self) -> bool {
        self.is_conditional_check_failed_exception()
    }
}

impl DynamoServiceError for GetItemError {}
impl DynamoServiceError for TransactWriteItemsError {}
impl DynamoServiceError for ScanError {}
impl DynamoServiceError for CreateTableError {}
impl DynamoServiceError for DescribeTableError {}
impl DynamoServiceError for UpdateContinuousBackupsError {}

/// Classifies an SDK error.
pub(crate) fn classify<E: DynamoServiceError>(err: &SdkError<E, HttpResponse>) -> LeaseErrorKind {
    match err {
        SdkError::ServiceError(service) => {
            if service.err().is_condition_failed() {
                LeaseErrorKind::LeaseLost
            } else {
                classify_service_error(service.err().code(), Some(service.raw().status().as_u16()))
            }
        }
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => LeaseErrorKind::Transient,
        SdkError::DispatchFailure(failure) if failure.is_user() => LeaseErrorKind::Fatal,
        SdkError::DispatchFailure(_) => LeaseErrorKind::Transient,
        SdkError::ConstructionFailure(_) => LeaseErrorKind::Fatal,
        // `SdkError` is non-exhaustive; an unknown failure is not retried blindly.
        _ => LeaseErrorKind::Fatal,
    }
}

/// Whether DynamoDB refused the request for want of a permission (`AccessDeniedException`).
pub(crate) fn is_access_denied<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    service_code(err) == Some("AccessDeniedException")
}

/// The error code of a service error (none for a failure before or outside the service).
fn service_code<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Option<&str> {
    match err {
        SdkError::ServiceError(service) => service.err().code(),
        _ => None,
    }
}

/// Classifies a DynamoDB error response by its error code, falling back on the HTTP status.
pub(crate) fn classify_service_error(code: Option<&str>, status: Option<u16>) -> LeaseErrorKind {
    match code {
        Some(
            "ProvisionedThroughputExceededException"
            | "ThrottlingException"
            | "Throttling"
            | "RequestLimitExceeded"
            | "LimitExceededException"
            | "TooManyRequestsException",
        ) => LeaseErrorKind::Throttling,
        Some(
            "InternalServerError"
            | "InternalFailure"
            | "ServiceUnavailable"
            | "ServiceUnavailableException"
            | "TransactionConflictException"
            | "TransactionCanceledException"
            | "TransactionInProgressException"
            | "ReplicatedWriteConflictException"
            | "RequestTimeout"
            | "RequestTimeoutException",
        ) => LeaseErrorKind::Transient,
        Some("ConditionalCheckFailedException") => LeaseErrorKind::LeaseLost,
        Some(
            "ValidationException"
            | "AccessDeniedException"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "IncompleteSignature"
            | "MissingAuthenticationToken"
            | "ExpiredTokenException"
            | "ResourceNotFoundException"
            | "ResourceInUseException"
            | "SerializationException"
            | "ItemCollectionSizeLimitExceededException",
        ) => LeaseErrorKind::Fatal,
        _ => match status {
            Some(429) => LeaseErrorKind::Throttling,
            Some(500..=599) => LeaseErrorKind::Transient,
            _ => LeaseErrorKind::Fatal,
        },
    }
}

/// Turns an SDK error of `operation` into a [`LeaseError`]: a failed condition on a write to
/// `lease_key` becomes [`LeaseError::LeaseLost`], a missing table
/// [`LeaseError::TableNotFound`], everything else [`LeaseError::Dynamo`] with its
/// [`LeaseErrorKind`].
pub(crate) fn from_sdk<E: DynamoServiceError>(
    operation: &'static str,
    table: &str,
    lease_key: Option<&str>,
    err: SdkError<E, HttpResponse>,
) -> LeaseError {
    if service_code(&err) == Some("ResourceNotFoundException") {
        return LeaseError::TableNotFound {
            operation,
            table: table.to_owned(),
            source: Box::new(err),
        };
    }
    let kind = classify(&err);
    match (kind, lease_key) {
        (LeaseErrorKind::LeaseLost, Some(lease_key)) => LeaseError::LeaseLost {
            lease_key: lease_key.to_owned(),
        },
        // A failed condition without a lease cannot happen (only lease writes have
        // conditions); report it as the failure it would be.
        (LeaseErrorKind::LeaseLost, None) => LeaseError::Dynamo {
            operation,
            table: table.to_owned(),
            kind: LeaseErrorKind::Fatal,
            source: Box::new(err),
        },
        (kind, _) => LeaseError::Dynamo {
            operation,
            table: table.to_owned(),
            kind,
            source: Box::new(err),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_errors_are_classified_by_code() {
        use LeaseErrorKind::*;
        let cases = [
            ("ProvisionedThroughputExceededException", 400, Throttling),
            ("ThrottlingException", 400, Throttling),
            ("RequestLimitExceeded", 400, Throttling),
            ("LimitExceededException", 400, Throttling),
            ("InternalServerError", 500, Transient),
            ("ServiceUnavailable", 503, Transient),
            ("TransactionConflictException", 400, Transient),
            ("ConditionalCheckFailedException", 400, LeaseLost),
            ("ValidationException", 400, Fatal),
            ("AccessDeniedException", 400, Fatal),
            ("UnrecognizedClientException", 400, Fatal),
            ("ResourceNotFoundException", 400, Fatal),
        ];
        for (code, status, kind) in cases {
            assert_eq!(
                classify_service_error(Some(code), Some(status)),
                kind,
                "{code}"
            );
        }
    }

    #[test]
    fn a_refused_permission_is_told_from_other_failures() {
        use aws_sdk_dynamodb::error::ErrorMetadata;
        use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
        let answer = |code: &str| {
            let error =
                TransactWriteItemsError::generic(ErrorMetadata::builder().code(code).build());
            SdkError::service_error(error, aws_smithy_runtime_api_shim::response(400))
        };
        assert!(is_access_denied(&answer("AccessDeniedException")));
        assert!(!is_access_denied(&answer("TransactionCanceledException")));
        assert!(!is_access_denied(&answer("ValidationException")));
        let timeout: SdkError<TransactWriteItemsError, HttpResponse> =
            SdkError::timeout_error("no answer");
        assert!(!is_access_denied(&timeout));
    }

    #[test]
    fn a_missing_table_is_told_from_other_fatal_failures() {
        use aws_sdk_dynamodb::error::ErrorMetadata;
        let answer = |code: &str| {
            let error = ScanError::generic(ErrorMetadata::builder().code(code).build());
            from_sdk(
                "Scan",
                "app",
                None,
                SdkError::service_error(error, aws_smithy_runtime_api_shim::response(400)),
            )
        };
        let missing = answer("ResourceNotFoundException");
        assert!(
            matches!(missing, LeaseError::TableNotFound { .. }),
            "{missing:?}"
        );
        assert_eq!(missing.kind(), LeaseErrorKind::Fatal);
        assert!(missing.to_string().contains("no such table"), "{missing}");
        let denied = answer("AccessDeniedException");
        assert!(matches!(denied, LeaseError::Dynamo { .. }), "{denied:?}");
        assert_eq!(denied.kind(), LeaseErrorKind::Fatal);
    }

    #[test]
    fn unknown_codes_fall_back_on_the_status() {
        use LeaseErrorKind::*;
        assert_eq!(
            classify_service_error(Some("Brand new"), Some(502)),
            Transient
        );
        assert_eq!(classify_service_error(None, Some(500)), Transient);
        assert_eq!(classify_service_error(None, Some(429)), Throttling);
        assert_eq!(classify_service_error(Some("Brand new"), Some(400)), Fatal);
        assert_eq!(classify_service_error(None, None), Fatal);
    }

    #[test]
    fn retryable_kinds() {
        assert!(LeaseErrorKind::Throttling.is_retryable());
        assert!(LeaseErrorKind::Transient.is_retryable());
        assert!(!LeaseErrorKind::LeaseLost.is_retryable());
        assert!(!LeaseErrorKind::Fatal.is_retryable());
    }

    #[test]
    fn typed_condition_failure_is_lease_lost() {
        use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
        use aws_smithy_runtime_api_shim::response;

        let err = UpdateItemError::ConditionalCheckFailedException(
            ConditionalCheckFailedException::builder()
                .message("The conditional request failed")
                .build(),
        );
        let sdk_err = SdkError::service_error(err, response(400));
        let lease_err = from_sdk("UpdateItem", "t", Some("shard-1"), sdk_err);
        assert!(lease_err.is_lease_lost());
        assert_eq!(lease_err.kind(), LeaseErrorKind::LeaseLost);
        assert_eq!(
            lease_err.to_string(),
            "lease shard-1 lost: its counter or owner changed"
        );
    }

    #[test]
    fn timeouts_are_transient_and_keep_their_source() {
        let sdk_err: SdkError<UpdateItemError, HttpResponse> =
            SdkError::timeout_error("read timed out");
        let lease_err = from_sdk("UpdateItem", "leases", Some("shard-1"), sdk_err);
        assert_eq!(lease_err.kind(), LeaseErrorKind::Transient);
        assert!(lease_err.is_retryable());
        assert_eq!(
            lease_err.to_string(),
            "DynamoDB UpdateItem on table leases failed (transient)"
        );
        assert!(std::error::Error::source(&lease_err).is_some());
    }

    #[test]
    fn construction_failures_are_fatal() {
        let sdk_err: SdkError<ScanError, HttpResponse> =
            SdkError::construction_failure("missing table name");
        assert_eq!(classify(&sdk_err), LeaseErrorKind::Fatal);
    }

    /// Builds raw HTTP responses for service errors without naming the runtime API crate.
    mod aws_smithy_runtime_api_shim {
        use aws_sdk_dynamodb::config::http::HttpResponse;

        pub(super) fn response(status: u16) -> HttpResponse {
            let status = status
                .try_into()
                .unwrap_or_else(|_| panic!("bad status {status}"));
            HttpResponse::new(status, "".into())
        }
    }
}
