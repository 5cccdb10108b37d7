//! The producer handle and its builder.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aggregation_proto::{RecordError, UserRecord};
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::retry::RetryConfig;
use tokio::sync::oneshot;

use crate::budget::{Budget, Refused};
use crate::config::{ProducerConfig, record_charge};
use crate::error::{ConfigError, SendError, TrySendError};
use crate::inbox::{InboxSender, Place, inbox};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::pipeline::{Command, Incoming, Pipeline};
use crate::receipt::{Receipt, RecordResult};
use crate::shard_map::ShardMap;
use crate::stream::StreamId;

/// Records queued for the pipeline and not yet taken (see [`crate::inbox`]).
const INBOX_RECORDS: usize = 4 * 1024;

/// Sends user records to one Kinesis stream: aggregated per predicted shard, batched into
/// PutRecords calls, rate limited per shard, retried with jittered backoff until their TTL, and
/// each answered through a [`Receipt`].
///
/// Cheap to clone; all clones share one pipeline task.
///
/// # Dropping
/// When the last clone is dropped, the pipeline keeps running in the background until every
/// record already accepted is resolved (sent, or failed by its TTL), then stops; receipts
/// still resolve. If the tokio runtime itself shuts down first, outstanding receipts resolve to
/// [`RecordFailure::ShuttingDown`](crate::RecordFailure::ShuttingDown). Call
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
}

#[derive(Debug)]
struct Shared {
    inbox: InboxSender,
    budget: Arc<Budget>,
    closed: AtomicBool,
    metrics: Arc<Metrics>,
    max_record_size: usize,
}

impl Producer {
    /// A builder for a producer writing to `stream` (a name, or an ARN starting with `arn:`).
    pub fn builder(stream: impl Into<StreamId>) -> ProducerBuilder {
        ProducerBuilder {
            stream: stream.into(),
            client: None,
            config: ProducerConfig::default(),
        }
    }

    /// Accepts a record, waiting while the producer holds its maximum of outstanding records or
    /// bytes. The returned receipt resolves once Kinesis stored the record or it failed.
    ///
    /// # Errors
    /// [`SendError::Invalid`] for a record Kinesis would refuse (bad key, too large),
    /// [`SendError::ShuttingDown`] after [`shutdown`](Self::shutdown). The record is returned.
    ///
    /// # Cancel safety
    /// Cancel-safe: if the future is dropped while waiting for room, the record was not taken.
    pub async fn send(&self, record: UserRecord) -> Result<Receipt, SendError> {
        let (reply, receipt) = Receipt::channel();
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
        let (hash_key, charge) = match self.check(&record) {
            Ok(checked) => checked,
            Err(error) => {
                return Err(SendError::Invalid {
                    error,
                    record: Box::new(record),
                });
            }
        };
        // The queue slot first, then the charge: either wait can be cancelled without leaking
        // the other.
        let Ok(place) = self.shared.inbox.place().await else {
            return Err(SendError::ShuttingDown(Box::new(record)));
        };
        if self.shared.budget.charge(charge).await.is_err() {
            return Err(SendError::ShuttingDown(Box::new(record)));
        }
        self.enqueue(place, record, hash_key, charge, reply)
            .map_err(|record| SendError::ShuttingDown(Box::new(record)))
    }

    /// Like [`send`](Self::send) but never waits: [`TrySendError::Full`] when the producer is at
    /// its outstanding limit.
    ///
    /// # Errors
    /// See [`TrySendError`]; the record is returned.
    pub fn try_send(&self, record: UserRecord) -> Result<Receipt, TrySendError> {
        let (hash_key, charge) = match self.check(&record) {
            Ok(checked) => checked,
            Err(error) => {
                return Err(SendError::Invalid {
                    error,
                    record: Box::new(record),
                }
                .into());
            }
        };
        let taken = self
            .shared
            .inbox
            .try_place()
            .and_then(|place| self.shared.budget.try_charge(charge).map(|()| place));
        let place = match taken {
            Ok(place) => place,
            Err(Refused::Full) => return Err(TrySendError::Full(Box::new(record))),
            Err(Refused::Closed) => return Err(SendError::ShuttingDown(Box::new(record)).into()),
        };
        let (reply, receipt) = Receipt::channel();
        self.enqueue(place, record, hash_key, charge, Some(reply))
            .map(|()| receipt)
            .map_err(|record| SendError::ShuttingDown(Box::new(record)).into())
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
        let sent = place.send(Incoming {
            record,
            hash_key,
            reply,
            charge,
        });
        if sent.is_err() {
            self.shared.budget.release(1, charge as usize);
        }
        sent
    }

    /// Sends everything accepted before this call at once (linger ignored) and waits until all
    /// of it is resolved. Records sent meanwhile are not waited for.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropping the future stops the waiting, not the sending.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.shared.inbox.send_control(Command::Flush(tx)) {
            let _ = rx.await;
        }
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

    /// The producer's counters now.
    pub fn metrics(&self) -> MetricsSnapshot {
        let pending = self.shared.budget.outstanding_records();
        self.shared.metrics.snapshot(pending as u64)
    }

    /// Validates the record and returns its hash key and size (data plus partition key).
    fn check(&self, record: &UserRecord) -> Result<(u128, u32), RecordError> {
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

/// Configures a [`Producer`]. Defaults follow the KPL unless noted.
#[derive(Debug)]
#[must_use]
pub struct ProducerBuilder {
    stream: StreamId,
    client: Option<Client>,
    config: ProducerConfig,
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.config.$name = value;
            self
        }
    };
}

impl ProducerBuilder {
    /// Builds the Kinesis client from an SDK config (region, credentials, endpoint override).
    pub fn sdk_config(mut self, config: &aws_config::SdkConfig) -> Self {
        self.client = Some(Client::new(config));
        self
    }

    /// Uses this Kinesis client's configuration. The producer turns off the client's own
    /// retries: it retries itself, per record, bounded by the record TTL.
    pub fn client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    setter!(
        /// Aggregate user records into KPL-format records (default on).
        aggregation: bool);
    setter!(
        /// Largest aggregate, in bytes of data plus partition key (default 51,200, the KPL's
        /// AggregationMaxSize).
        max_aggregate_size: usize);
    setter!(
        /// Most user records per aggregate (default unlimited).
        max_aggregate_count: usize);
    setter!(
        /// Most Kinesis records per PutRecords call (default and maximum 500).
        max_batch_records: usize);
    setter!(
        /// Most bytes per PutRecords call (default and maximum 5 MiB). A record larger than
        /// this (on a stream whose MaxRecordSize was raised) goes in a call of its own, which
        /// Kinesis accepts up to 10 MiB.
        max_batch_bytes: usize);
    setter!(
        /// How long a record may wait for others to share its aggregate and call (default
        /// 100 ms, the KPL's RecordMaxBufferedTime). Not waited out while over three quarters
        /// of the outstanding budget is taken: then no more records can come to fill the
        /// batch, so what is ready goes at once.
        linger: Duration);
    setter!(
        /// How long a record may take to be stored, counted from when the pipeline takes it
        /// (normally microseconds after `send`), before it fails with `Expired` (default 30 s).
        record_ttl: Duration);
    setter!(
        /// Per-shard send rate as a percentage of the shard limits (default 150).
        rate_limit_percent: u32);
    setter!(
        /// Most records accepted and not yet resolved; `send` waits beyond it (default 100,000).
        max_outstanding_records: usize);
    setter!(
        /// Memory budget for records accepted and not yet resolved; `send` waits beyond it
        /// (default 64 MiB). Each record counts [`record_charge`](crate::record_charge)`(size)`:
        /// twice its data plus partition key, plus 512 bytes of bookkeeping. Measured peak RSS
        /// of a producing process stays within twice this plus 32 MiB (BENCHMARKS.md).
        max_outstanding_bytes: usize);
    setter!(
        /// Largest user record accepted, data plus partition key (default 1 MiB; up to 10 MiB
        /// for streams whose MaxRecordSize was raised). Records over 5 MiB go in a PutRecords
        /// call of their own; [`max_outstanding_bytes`](Self::max_outstanding_bytes) must hold
        /// [`record_charge`](crate::record_charge) of it.
        max_record_size: usize);
    setter!(
        /// Most PutRecords calls in flight (default 24, the KPL's MaxConnections).
        max_concurrent_requests: usize);
    setter!(
        /// Keep each shard's records in order: one Kinesis record in flight per shard, and
        /// retries go before later records (default off).
        preserve_shard_order: bool);
    setter!(
        /// Fail a throttled record at once with `Throttled` instead of retrying (default off).
        fail_if_throttled: bool);
    setter!(
        /// Smallest retry backoff envelope (default 100 ms).
        min_backoff: Duration);
    setter!(
        /// Largest retry backoff envelope (default 5 s).
        max_backoff: Duration);
    setter!(
        /// How often the shard map is refreshed without a reason (default 60 s).
        shard_map_refresh_interval: Duration);
    setter!(
        /// Timeout of one PutRecords call (default 6 s, the KPL's RequestTimeout).
        request_timeout: Duration);

    /// Checks the settings, lists the stream's shards, and starts the pipeline task.
    ///
    /// # Errors
    /// [`ConfigError`] for unusable settings or a missing client; [`BuildError::Stream`] when
    /// the stream's shards cannot be listed.
    pub async fn build(self) -> Result<Producer, BuildError> {
        self.config.validate()?;
        let client = self.client.ok_or(ConfigError::MissingClient)?;
        let client = Client::from_conf(
            client
                .config()
                .to_builder()
                .retry_config(RetryConfig::disabled())
                .build(),
        );
        tokio::runtime::Handle::try_current().map_err(|_| ConfigError::NoRuntime)?;
        let map = ShardMap::fetch(&client, &self.stream)
            .await
            .map_err(|e| BuildError::Stream(e.to_string()))?;
        let config = self.config;
        let metrics = Arc::new(Metrics::default());
        let (inbox, rx) = inbox(INBOX_RECORDS);
        let budget = Arc::new(Budget::new(
            config.max_outstanding_records,
            config.max_outstanding_bytes,
        ));
        let shared = Shared {
            inbox,
            budget: budget.clone(),
            closed: AtomicBool::new(false),
            metrics: metrics.clone(),
            max_record_size: config.max_record_size,
        };
        let pipeline =
            Pipeline::new(config, client, self.stream, rx, budget, metrics).with_map(map);
        tokio::spawn(pipeline.run());
        Ok(Producer {
            shared: Arc::new(shared),
        })
    }
}

/// Why [`ProducerBuilder::build`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A setting cannot work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The stream's shards could not be listed: check the stream name, region, endpoint and
    /// credentials.
    #[error("cannot list the stream's shards: {0}")]
    Stream(String),
}
