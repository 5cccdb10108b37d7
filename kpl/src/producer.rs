//! The producer handle.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aggregation_proto::{RecordError, UserRecord};
use tokio::sync::oneshot;

use crate::budget::{Budget, Refused};
use crate::builder::ProducerBuilder;
use crate::client::StreamId;
use crate::config::record_charge;
use crate::error::{FlushError, FlushReport, SendError, TrySendError};
use crate::health::Health;
use crate::inbox::{InboxSender, Place};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::pipeline::{Command, Incoming};
use crate::receipt::{Receipt, RecordResult};
use crate::streams::{ShareLimit, StreamRegistry, StreamShare};

/// Sends user records to Kinesis: aggregated per predicted shard, batched into PutRecords
/// calls, rate limited per shard, retried with jittered backoff until their TTL, and each
/// answered through a [`Receipt`].
///
/// Cheap to clone; all clones share one pipeline task, one memory budget and one set of
/// metrics. A handle writes to one stream; [`for_stream`](Self::for_stream) makes a handle for
/// another stream on the same pipeline.
///
/// # Order
/// With [`ProducerBuilder::ordered`], records of one partition key (one hash key) are stored in
/// the order they were sent, through retries, throttling, reshards and timeouts.
///
/// # Dropping
/// When the last clone is dropped, the pipeline keeps running in the background until every
/// record already accepted is resolved (sent, or failed by its TTL), then stops; receipts
/// still resolve. If the tokio runtime itself shuts down first, outstanding receipts resolve to
/// [`FailureReason::ShuttingDown`](crate::FailureReason::ShuttingDown). Call
/// [`shutdown`](Self::shutdown) to wait for the drain.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use kpl::{Producer, UserRecord};
///
/// let config = aws_config::load_from_env().await;
/// let producer = Producer::builder("my-stream").sdk_config(&config).build().await?;
/// let receipt = producer.send(UserRecord::new("customer-42", "hello")).await?;
/// let stored = receipt.await?;
/// println!("{} {} {:?}", stored.shard_id, stored.sequence_number, stored.sub_sequence_number);
/// producer.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Producer {
    shared: Arc<Shared>,
    stream: usize,
    share: Arc<StreamShare>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) inbox: InboxSender,
    pub(crate) budget: Arc<Budget>,
    pub(crate) closed: AtomicBool,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) max_record_size: usize,
    pub(crate) health: Arc<Health>,
    pub(crate) registry: Arc<StreamRegistry>,
    /// One stream's most, while there are several (`None`: no limit).
    pub(crate) share_limit: Option<ShareLimit>,
}

impl Producer {
    /// A builder for a producer writing to `stream` (a name, or an ARN starting with `arn:`).
    pub fn builder(stream: impl Into<StreamId>) -> ProducerBuilder {
        ProducerBuilder::new(stream.into())
    }

    pub(crate) fn from_shared(shared: Arc<Shared>, stream: usize, share: Arc<StreamShare>) -> Self {
        Self {
            shared,
            stream,
            share,
        }
    }

    /// A handle on the same pipeline (budget, metrics, calls) that writes to `stream`. Its
    /// shard map is listed when its first record arrives; records wait for it (bounded by their
    /// TTL), and fail as `Rejected` if the stream cannot be listed (it does not exist, access
    /// is denied).
    ///
    /// ```no_run
    /// # async fn demo(producer: kpl::Producer) -> Result<(), Box<dyn std::error::Error>> {
    /// let audit = producer.for_stream("audit-log");
    /// audit.send(kpl::UserRecord::new("user-7", "logged in")).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn for_stream(&self, stream: impl Into<StreamId>) -> Producer {
        let (stream, share) = self.shared.registry.index_of(&stream.into());
        Self {
            shared: self.shared.clone(),
            stream,
            share,
        }
    }

    /// The stream this handle writes to.
    pub fn stream(&self) -> Arc<StreamId> {
        self.shared
            .registry
            .get(self.stream)
            .unwrap_or_else(|| Arc::new(StreamId::from("")))
    }

    /// Accepts a record, waiting while the producer holds its maximum of outstanding records or
    /// bytes. The returned receipt resolves once Kinesis stored the record or it failed.
    ///
    /// # Errors
    /// [`SendError::Invalid`] for a record Kinesis would refuse (bad key, too large),
    /// [`SendError::ShuttingDown`] after [`shutdown`](Self::shutdown),
    /// [`SendError::Stopped`] if the pipeline failed. The record is returned.
    ///
    /// # Cancel safety
    /// Cancel-safe: if the future is dropped while waiting for room, the record was not taken.
    pub async fn send(&self, record: UserRecord) -> Result<Receipt, SendError> {
        let (reply, receipt) = Receipt::channel(&self.shared.health);
        self.send_with(record, Some(reply)).await.map(|()| receipt)
    }

    /// Like [`send`](Self::send), without a receipt: for fire-and-forget producers (logs,
    /// metrics) that would drop it anyway, this saves its allocation and the pipeline's
    /// check of it. The record is still sent, retried and bounded by its TTL; its outcome
    /// shows in [`metrics`](Self::metrics) (`user_records_put`, `user_records_failed`, errors
    /// by code), and failures are also logged (`tracing` warn, once per pipeline pass).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    ///
    /// # Cancel safety
    /// As [`send`](Self::send).
    pub async fn send_detached(&self, record: UserRecord) -> Result<(), SendError> {
        self.send_with(record, None).await
    }

    async fn send_with(
        &self,
        record: UserRecord,
        reply: Option<oneshot::Sender<RecordResult>>,
    ) -> Result<(), SendError> {
        let (record, hash_key, charge) = self.check(record)?;
        // With several streams, this stream's share first: a stuck stream's senders wait here
        // without taking the others' room in the budget.
        if let Some(limit) = self
            .shared
            .share_limit
            .filter(|_| self.shared.registry.len() > 1)
        {
            let registry = &self.shared.registry;
            let budget = &self.shared.budget;
            let room = self
                .share
                .wait_for_room(
                    limit,
                    charge as usize,
                    || registry.len() > 1,
                    || budget.is_closed(),
                    || self.nudge(),
                )
                .await;
            if !room {
                return Err(self.refused(record));
            }
        }
        // The queue slot first, then the charge: either wait can be cancelled without leaking
        // the other.
        let Ok(place) = self.shared.inbox.place().await else {
            return Err(self.refused(record));
        };
        if self
            .shared
            .budget
            .charge(charge, || self.nudge())
            .await
            .is_err()
        {
            return Err(self.refused(record));
        }
        self.enqueue(place, record, hash_key, charge, reply)
            .map_err(|record| self.refused(record))
    }

    /// Tells the pipeline a sender waits for room: what lingers must go (with a long linger,
    /// nothing else would wake it).
    fn nudge(&self) {
        let _ = self.shared.inbox.send_control(Command::SendersWaiting);
    }

    /// The error for a record refused because the pipeline is gone: why, if it failed.
    fn refused(&self, record: UserRecord) -> SendError {
        match self.shared.health.failure() {
            Some(cause) => SendError::Stopped {
                cause,
                record: Box::new(record),
            },
            None => SendError::ShuttingDown(Box::new(record)),
        }
    }

    /// Like [`send`](Self::send) but never waits: [`TrySendError::Full`] when the producer is at
    /// its outstanding limit.
    ///
    /// # Errors
    /// See [`TrySendError`]; the record is returned.
    pub fn try_send(&self, record: UserRecord) -> Result<Receipt, TrySendError> {
        let (record, hash_key, charge) = self.check(record)?;
        if self.shared.share_limit.is_some_and(|limit| {
            self.shared.registry.len() > 1 && self.share.over(limit, charge as usize)
        }) {
            return Err(TrySendError::Full(Box::new(record)));
        }
        let taken = self
            .shared
            .inbox
            .try_place()
            .and_then(|place| self.shared.budget.try_charge(charge).map(|()| place));
        let place = match taken {
            Ok(place) => place,
            Err(Refused::Full) => return Err(TrySendError::Full(Box::new(record))),
            Err(Refused::Closed) => return Err(self.refused(record).into()),
        };
        let (reply, receipt) = Receipt::channel(&self.shared.health);
        self.enqueue(place, record, hash_key, charge, Some(reply))
            .map(|()| receipt)
            .map_err(|record| self.refused(record).into())
    }

    /// Hands a charged record to the pipeline through its place in the inbox; gives the record
    /// and its charge back if the producer is shutting down.
    fn enqueue(
        &self,
        place: Place<'_>,
        record: UserRecord,
        hash_key: u128,
        charge: u32,
        reply: Option<oneshot::Sender<RecordResult>>,
    ) -> Result<(), UserRecord> {
        if self.shared.closed.load(Ordering::Acquire) {
            self.shared.budget.release(1, charge as usize);
            return Err(record);
        }
        // Before the pipeline can see it: it releases the share once the record is answered.
        self.share.charge(charge as usize);
        let sent = place.send(Incoming {
            record,
            hash_key,
            reply,
            charge,
            stream: self.stream,
        });
        if sent.is_err() {
            self.shared.budget.release(1, charge as usize);
            self.share.release(1, charge as usize);
        }
        sent
    }

    /// Sends everything accepted before this call at once (linger ignored) and waits until all
    /// of it is resolved; reports what became of it. Records sent meanwhile are not waited for.
    /// Flushes every stream of the pipeline.
    ///
    /// # Errors
    /// [`FlushError::Stopped`] if the pipeline failed (its records were not stored). After a
    /// normal [`shutdown`](Self::shutdown) there is nothing to flush: an empty report.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropping the future stops the waiting, not the sending.
    pub async fn flush(&self) -> Result<FlushReport, FlushError> {
        let (tx, rx) = oneshot::channel();
        if !self.shared.inbox.send_control(Command::Flush(tx)) {
            return self.flush_after_stop();
        }
        match rx.await {
            Ok(report) => Ok(report),
            Err(_) => self.flush_after_stop(),
        }
    }

    fn flush_after_stop(&self) -> Result<FlushReport, FlushError> {
        match self.shared.health.failure() {
            Some(cause) => Err(FlushError::Stopped { cause }),
            None => Ok(FlushReport::default()),
        }
    }

    /// [`flush`](Self::flush), bounded by `limit` (for a Lambda function that must return in
    /// time).
    ///
    /// # Errors
    /// [`FlushError::TimedOut`] when `limit` ran out first (the records are still being sent),
    /// or as for [`flush`](Self::flush).
    ///
    /// # Cancel safety
    /// As [`flush`](Self::flush).
    pub async fn flush_timeout(&self, limit: Duration) -> Result<FlushReport, FlushError> {
        tokio::time::timeout(limit, self.flush())
            .await
            .unwrap_or(Err(FlushError::TimedOut(limit)))
    }

    /// Stops accepting records, sends everything buffered, and waits until every record is
    /// resolved and the pipeline has stopped. Later `send`s fail with `ShuttingDown`.
    pub async fn shutdown(&self) {
        self.shared.closed.store(true, Ordering::Release);
        let (tx, rx) = oneshot::channel();
        if self.shared.inbox.send_control(Command::Shutdown(tx)) {
            let _ = rx.await;
        }
    }

    /// Records accepted and not yet resolved (one atomic read).
    pub fn outstanding_records(&self) -> usize {
        self.shared.budget.outstanding_records()
    }

    /// The producer's counters now, over every stream.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared
            .metrics
            .snapshot(self.outstanding_records() as u64)
    }

    /// Makes the pipeline panic (tests of the failure path).
    #[cfg(test)]
    pub(crate) fn shared_inbox_crash(&self) -> bool {
        self.shared.inbox.send_control(Command::Crash)
    }

    /// Validates the record and returns it with its hash key and charge; an invalid record comes
    /// back in [`SendError::Invalid`].
    fn check(&self, record: UserRecord) -> Result<(UserRecord, u128, u32), SendError> {
        match self.validate(&record) {
            Ok((hash_key, charge)) => Ok((record, hash_key, charge)),
            Err(error) => Err(SendError::Invalid {
                error,
                record: Box::new(record),
            }),
        }
    }

    /// The record's hash key and charge, or why it cannot be sent.
    fn validate(&self, record: &UserRecord) -> Result<(u128, u32), RecordError> {
        let hash_key = record.validate()?;
        let size = record.partition_key.len() + record.data.len();
        if size > self.shared.max_record_size {
            return Err(RecordError::RecordTooLarge {
                size,
                max_size: self.shared.max_record_size,
            });
        }
        // max_record_size is at most 10 MiB, so the charge always fits.
        Ok((
            hash_key,
            u32::try_from(record_charge(size)).unwrap_or(u32::MAX),
        ))
    }
}
