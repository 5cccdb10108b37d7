//! The answer every record gets: a future that resolves once Kinesis accepted it or it failed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::error::{FailureReason, RecordFailure};
use crate::health::Health;

/// The most attempts a record keeps (the latest ones); [`RecordSuccess::attempt_count`] and
/// [`RecordFailure::attempt_count`] count them all. Bounds a record's memory when its TTL is
/// long and its stream keeps failing.
pub const MAX_KEPT_ATTEMPTS: usize = 16;

/// One PutRecords attempt for a record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Attempt {
    /// Time between the record being ready to send (or the end of its previous attempt) and
    /// this attempt.
    pub delay: Duration,
    /// How long the PutRecords call took.
    pub duration: Duration,
    /// The error code, for a failed attempt (`ProvisionedThroughputExceededException`,
    /// `InternalFailure`, `Timeout`, `Misrouted`, or the whole call's error). Shared by every
    /// record the failure touched.
    pub error_code: Option<Arc<str>>,
    /// The error message, for a failed attempt (shared likewise).
    pub error_message: Option<Arc<str>>,
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
    /// The latest attempts (at most [`MAX_KEPT_ATTEMPTS`]), the last one successful.
    pub attempts: Vec<Attempt>,
    /// How many attempts were made in all.
    pub attempt_count: u32,
    /// An earlier attempt's answer never came (a timeout, a dropped connection) or its
    /// aggregate was stored on a shard other than the one its records belong to (after a
    /// reshard): a consumer may see this record more than once.
    pub possibly_duplicated: bool,
    /// It was sent while the stream's shard map was unknown (ListShards denied or failing):
    /// alone, unaggregated, routed by Kinesis from its own hash key.
    pub without_shard_map: bool,
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
    health: Arc<Health>,
}

impl Receipt {
    pub(crate) fn channel(health: &Arc<Health>) -> (oneshot::Sender<RecordResult>, Self) {
        let (tx, rx) = oneshot::channel();
        (
            tx,
            Self {
                rx,
                health: health.clone(),
            },
        )
    }
}

impl Future for Receipt {
    type Output = RecordResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|result| {
            result.unwrap_or_else(|_| {
                // The pipeline went away holding the record (its runtime shut down, or it
                // failed): nothing was answered, so say why if it is known.
                let reason = match self.health.failure() {
                    Some(cause) => FailureReason::Stopped { cause },
                    None => FailureReason::ShuttingDown,
                };
                // It may have been in a call whose answer never came: say it may be stored.
                Err(RecordFailure::new(reason, None, Vec::new(), 0, true))
            })
        })
    }
}
