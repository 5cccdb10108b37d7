//! The raw layer under the producer: one PutRecords call and what became of each entry, with
//! every error classified in one place.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregation_proto::KinesisRecord;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;

use crate::stream::StreamId;

/// What retrying can do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Throttling: retry later, and slow the shard down.
    Throttled,
    /// A transient failure (5xx, timeout, connection): retry later.
    Transient,
    /// Retrying cannot help (validation, access denied, missing stream, KMS problems).
    Never,
}

/// A failure, of one entry or of the whole call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) retry: Retry,
}

/// What became of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryOutcome {
    /// Shared by every user record inside the Kinesis record.
    Stored {
        shard_id: Arc<str>,
        sequence_number: Arc<str>,
    },
    Failed(Failure),
}

/// What became of one call.
#[derive(Debug)]
pub(crate) struct CallOutcome {
    pub(crate) started: Instant,
    pub(crate) duration: Duration,
    /// One outcome per entry, in order; the same failure for all when the whole call failed.
    pub(crate) entries: Vec<EntryOutcome>,
    /// Set when the whole call failed.
    pub(crate) call_failure: Option<Failure>,
}

/// Classifies a per-entry error code from a PutRecords response.
pub(crate) fn classify_entry_code(code: &str) -> Retry {
    match code {
        "ProvisionedThroughputExceededException" | "KMSThrottlingException" => Retry::Throttled,
        "InternalFailure" | "InternalFailureException" | "ServiceUnavailable" => Retry::Transient,
        _ => Retry::Never,
    }
}

/// Classifies a whole-call error.
fn classify_call_error<E>(error: &SdkError<E>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let server_error = error
        .raw_response()
        .is_some_and(|response| response.status().is_server_error());
    let message = aws_sdk_kinesis::error::DisplayErrorContext(error).to_string();
    match error {
        SdkError::ServiceError(context) => {
            let code = context.err().code().unwrap_or("Unknown").to_owned();
            let retry = match code.as_str() {
                "ProvisionedThroughputExceededException"
                | "KMSThrottlingException"
                | "ThrottlingException"
                | "LimitExceededException"
                | "RequestLimitExceeded" => Retry::Throttled,
                "InternalFailure" | "InternalFailureException" | "ServiceUnavailable" => {
                    Retry::Transient
                }
                _ if server_error => Retry::Transient,
                _ => Retry::Never,
            };
            let message = context.err().message().map_or(message, str::to_owned);
            Failure {
                code,
                message,
                retry,
            }
        }
        SdkError::TimeoutError(_) => Failure {
            code: "Timeout".into(),
            message,
            retry: Retry::Transient,
        },
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => Failure {
            code: "ConnectionError".into(),
            message,
            retry: Retry::Transient,
        },
        _ => Failure {
            code: "RequestError".into(),
            message,
            retry: Retry::Never,
        },
    }
}

/// Sends `records` in one PutRecords call, bounded by `timeout`.
pub(crate) async fn put_records(
    client: &Client,
    stream: &StreamId,
    records: &[&KinesisRecord],
    timeout: Duration,
) -> CallOutcome {
    let started = Instant::now();
    let entries: Result<Vec<_>, _> = records
        .iter()
        .map(|r| {
            PutRecordsRequestEntry::builder()
                .partition_key(&r.partition_key)
                .set_explicit_hash_key(r.explicit_hash_key.clone())
                .data(Blob::new(r.data.to_vec()))
                .build()
        })
        .collect();
    let whole = |failure: Failure, started: Instant| CallOutcome {
        started,
        duration: started.elapsed(),
        entries: vec![EntryOutcome::Failed(failure.clone()); records.len()],
        call_failure: Some(failure),
    };
    let entries = match entries {
        Ok(entries) => entries,
        Err(error) => {
            return whole(
                Failure {
                    code: "InvalidEntry".into(),
                    message: error.to_string(),
                    retry: Retry::Never,
                },
                started,
            );
        }
    };
    let request = stream
        .apply(
            client.put_records(),
            |b, v| b.stream_name(v),
            |b, v| b.stream_arn(v),
        )
        .set_records(Some(entries));
    let response = match tokio::time::timeout(timeout, request.send()).await {
        Err(_) => {
            return whole(
                Failure {
                    code: "Timeout".into(),
                    message: format!("PutRecords took longer than {timeout:?}"),
                    retry: Retry::Transient,
                },
                started,
            );
        }
        Ok(Err(error)) => return whole(classify_call_error(&error), started),
        Ok(Ok(response)) => response,
    };
    let mut outcomes: Vec<EntryOutcome> = response
        .records()
        .iter()
        .map(|entry| {
            match (
                entry.error_code(),
                entry.shard_id(),
                entry.sequence_number(),
            ) {
                (None, Some(shard_id), Some(sequence_number)) => EntryOutcome::Stored {
                    shard_id: shard_id.into(),
                    sequence_number: sequence_number.into(),
                },
                (code, _, _) => {
                    let code = code.unwrap_or("MissingResult").to_owned();
                    EntryOutcome::Failed(Failure {
                        retry: classify_entry_code(&code),
                        message: entry.error_message().unwrap_or_default().to_owned(),
                        code,
                    })
                }
            }
        })
        .collect();
    // A response with fewer entries than sent leaves the rest unknown: retry them.
    outcomes.resize(
        records.len(),
        EntryOutcome::Failed(Failure {
            code: "MissingResult".into(),
            message: "PutRecords returned fewer results than records sent".into(),
            retry: Retry::Transient,
        }),
    );
    CallOutcome {
        started,
        duration: started.elapsed(),
        entries: outcomes,
        call_failure: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_codes() {
        assert_eq!(
            classify_entry_code("ProvisionedThroughputExceededException"),
            Retry::Throttled
        );
        assert_eq!(classify_entry_code("InternalFailure"), Retry::Transient);
        assert_eq!(
            classify_entry_code("KMSAccessDeniedException"),
            Retry::Never
        );
    }
}
