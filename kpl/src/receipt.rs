//! The answer every record gets: a future that resolves once Kinesis accepted it or it failed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::error::RecordFailure;

/// One PutRecords attempt for a record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Attempt {
    /// Time between the record being ready to send (or the previous attempt) and this attempt.
    pub delay: Duration,
    /// How long the PutRecords call took.
    pub duration: Duration,
    /// The error code, for a failed attempt (`ProvisionedThroughputExceededException`,
    /// `InternalFailure`, or the whole call's error).
    pub error_code: Option<String>,
    /// The error message, for a failed attempt.
    pub error_message: Option<String>,
}

impl Attempt {
    /// Whether this attempt succeeded.
    pub fn is_success(&self) -> bool {
        self.error_code.is_none()
    }
}

/// A record accepted by Kinesis.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordSuccess {
    /// The shard that stored it (shared by every record of the same Kinesis record).
    pub shard_id: Arc<str>,
    /// The sequence number of the Kinesis record that carried it (shared likewise).
    pub sequence_number: Arc<str>,
    /// Its index inside that Kinesis record when aggregated (what a consumer sees as its
    /// sub-sequence number); `None` when it went alone.
    pub sub_sequence_number: Option<u64>,
    /// Every attempt, the last one successful.
    pub attempts: Vec<Attempt>,
}

/// What a receipt resolves to.
pub type RecordResult = Result<RecordSuccess, RecordFailure>;

/// Resolves when the record it belongs to is accepted by Kinesis or has failed for good.
///
/// Dropping a receipt does not cancel the record: it is still sent (fire and forget; for a
/// producer that never reads receipts, [`Producer::send_detached`](crate::Producer::send_detached)
/// skips making them).
///
/// # Cancel safety
/// Awaiting is cancel-safe: the outcome stays in the receipt until it is awaited again.
#[derive(Debug)]
#[must_use = "a receipt tells whether the record reached Kinesis; drop it explicitly to fire and forget"]
pub struct Receipt {
    rx: oneshot::Receiver<RecordResult>,
}

impl Receipt {
    pub(crate) fn channel() -> (oneshot::Sender<RecordResult>, Self) {
        let (tx, rx) = oneshot::channel();
        (tx, Self { rx })
    }
}

impl Future for Receipt {
    type Output = RecordResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|result| {
            result.unwrap_or(Err(RecordFailure::ShuttingDown {
                attempts: Vec::new(),
            }))
        })
    }
}
