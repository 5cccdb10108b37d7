//! [`FanOutSource`]: a [`RecordSource`] over SubscribeToShard, with bounded demand.

use std::fmt;
use std::sync::Arc;

use aggregation_proto::HashRange;
use kinesis_common::{ConsumerApi, SdkKinesis};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{Instrument, Span, info_span};

use super::config::FanOutConfig;
use super::subscriber::Subscriber;
use crate::retrieval::budget::{Charge, Charged, Reader};
use crate::retrieval::error::RetrievalError;
use crate::retrieval::fetcher::caught_up;
use crate::retrieval::source::{RecordSource, source_accessors};
use crate::retrieval::stats::Counters;
use crate::retrieval::types::{ShardBatch, StartingPosition, StreamId};

/// Reads one shard through an enhanced fan-out consumer (SubscribeToShard): the Java KCL's
/// `FanOutRecordsPublisher`.
///
/// - **Records**: every event goes through the same deaggregation, per-sub-record hash-range
///   filter and skip-at-or-below-position as [`PollingSource`](crate::retrieval::PollingSource),
///   so both deliver exactly the same user records; one event is one [`ShardBatch`], with the
///   event's `MillisBehindLatest`.
/// - **Resubscription**: the service ends every subscription after 5 minutes; the source opens
///   the next one at once, `AFTER_SEQUENCE_NUMBER` of the last `ContinuationSequenceNumber`.
///   After a failure (ResourceInUse while the previous subscription of the shard is still open,
///   throttling, a dropped connection, no event within the
///   [`read_timeout`](FanOutConfig::read_timeout), a server error) it does the same after a
///   jittered backoff. Nothing is delivered twice or skipped.
/// - **Shard end**: the event without a continuation ends the shard, with its `ChildShards`
///   (or ListShards' answer when it has none); every later
///   [`next_batch`](RecordSource::next_batch) repeats it, empty, without calling Kinesis.
/// - **Flow control**: the subscription is read by a task that first reserves room in a
///   channel of one batch, then reads one event. While the processor is busy, one batch waits
///   and the task reads nothing more, so the HTTP stream's window fills and the service stops
///   sending: demand pauses instead of buffering. Memory per shard is at most two decoded
///   events (the one being processed and the one waiting; the service caps an event at what
///   the shard read in about a second, 2 MiB at the 2 MiB/s per-shard fan-out limit, plus the
///   deaggregated views, which share those buffers) and the connection's receive buffers.
///   Under a [`Scheduler`](crate::Scheduler) both count against the worker-wide
///   [`batch_memory_budget`](crate::SchedulerBuilder::batch_memory_budget).
///
/// No call is made before the first `next_batch`. Dropping the source aborts its task, which
/// closes the subscription.
///
/// # Examples
///
/// ```no_run
/// use kcl::retrieval::{FanOutConfig, FanOutSource, RecordSource, StartingPosition};
///
/// # async fn example(client: aws_sdk_kinesis::Client) -> Result<(), Box<dyn std::error::Error>> {
/// let config = FanOutConfig::default();
/// let consumer = kcl::retrieval::register_stream_consumer(
///     &client, &"orders".into(), "my-app", &config,
/// ).await?;
/// let mut source = FanOutSource::new(
///     client,
///     "orders".into(),
///     consumer.consumer_arn,
///     "shardId-000000000000".into(),
///     None,
///     StartingPosition::TrimHorizon,
///     config,
/// );
/// loop {
///     let batch = source.next_batch().await?;
///     println!("{} records", batch.records.len());
///     if batch.shard_end.is_some() {
///         break;
///     }
/// }
/// # Ok(())
/// # }
/// ```
pub struct FanOutSource {
    driver: FanOutReader,
    stream: StreamId,
    shard_id: String,
}

impl FanOutSource {
    /// A source for `shard_id` of `stream` through the registered consumer `consumer_arn`
    /// (see [`register_stream_consumer`](crate::retrieval::register_stream_consumer)), starting
    /// at `position`. `hash_range` filters each sub-record as in polling. The client's own
    /// retries are turned off for these calls; the source retries by [`FanOutConfig`]'s rules.
    pub fn new(
        client: aws_sdk_kinesis::Client,
        stream: StreamId,
        consumer_arn: String,
        shard_id: String,
        hash_range: Option<HashRange>,
        position: StartingPosition,
        config: FanOutConfig,
    ) -> Self {
        let api: Arc<dyn ConsumerApi> =
            Arc::new(SdkKinesis::new(&client).with_timeouts(config.timeouts()));
        let span = info_span!("fan_out", stream = %stream, shard_id = %shard_id);
        let driver = FanOutReader::new(
            api,
            stream.clone(),
            consumer_arn,
            shard_id.clone(),
            hash_range,
            position,
            config,
            span,
        );
        Self {
            driver,
            stream,
            shard_id,
        }
    }
}

source_accessors!(FanOutSource);

impl fmt::Debug for FanOutSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FanOutSource")
            .field("stream", &self.stream)
            .field("shard_id", &self.shard_id)
            .finish_non_exhaustive()
    }
}

impl RecordSource for FanOutSource {
    /// See [`RecordSource::next_batch`]; cancel safe (the batch stays in the channel).
    fn next_batch(&mut self) -> impl Future<Output = Result<ShardBatch, RetrievalError>> + Send {
        self.driver.next_batch()
    }
}

type BatchResult = Result<Charged, RetrievalError>;

/// Runs a [`Subscriber`] in its reading task (shared by [`FanOutSource`] and the shard
/// consumer; unit tests drive it over a fake API).
pub(crate) struct FanOutReader {
    state: State,
    /// The worker's memory budget, moved into the reading task when it starts.
    budget: Option<(Reader, std::time::Duration)>,
    pub(crate) counters: Arc<Counters>,
    span: Span,
}

enum State {
    /// Not started yet (the task starts with the first call).
    Idle(Box<Subscriber>),
    Reading {
        rx: mpsc::Receiver<BatchResult>,
        _task: AbortOnDrop,
    },
    /// Only while the task is being started.
    Starting,
}

impl FanOutReader {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        api: Arc<dyn ConsumerApi>,
        stream: StreamId,
        consumer_arn: String,
        shard_id: String,
        hash_range: Option<HashRange>,
        position: StartingPosition,
        config: FanOutConfig,
        span: Span,
    ) -> Self {
        let counters = Arc::new(Counters::default());
        let subscriber = Subscriber::new(
            api,
            stream,
            consumer_arn,
            shard_id,
            hash_range,
            position,
            config,
            Arc::clone(&counters),
        );
        Self {
            state: State::Idle(Box::new(subscriber)),
            budget: None,
            counters,
            span,
        }
    }

    /// Charges its batches to `reader`'s budget; an event less than `caught_up_threshold`
    /// behind the tip counts as caught up (the next event is read without a reservation).
    pub(crate) fn with_budget(
        mut self,
        reader: Reader,
        caught_up_threshold: std::time::Duration,
    ) -> Self {
        self.budget = Some((reader, caught_up_threshold));
        self
    }

    /// The next batch, its charge given back at once.
    pub(crate) async fn next_batch(&mut self) -> Result<ShardBatch, RetrievalError> {
        self.next_charged().await.map(|charged| charged.batch)
    }

    /// The next batch with its charge, to keep until the processor is done with it.
    pub(crate) async fn next_charged(&mut self) -> BatchResult {
        if matches!(self.state, State::Idle(_)) {
            self.start();
        }
        match &mut self.state {
            State::Reading { rx, .. } => rx
                .recv()
                .await
                .unwrap_or(Err(RetrievalError::PrefetchStopped)),
            State::Idle(_) | State::Starting => Err(RetrievalError::PrefetchStopped),
        }
    }

    fn start(&mut self) {
        let State::Idle(subscriber) = std::mem::replace(&mut self.state, State::Starting) else {
            return;
        };
        let (tx, rx) = mpsc::channel(1);
        let budget = self.budget.take();
        let task = tokio::spawn(read(*subscriber, tx, budget).instrument(self.span.clone()));
        self.state = State::Reading {
            rx,
            _task: AbortOnDrop(task),
        };
    }
}

/// The reading task: reserves room for one batch, and only then reads the next event, so it
/// never holds a second finished batch and never reads while the consumer is behind (the
/// flow-control rule of [`FanOutSource`]). With a budget, a reader behind the tip also
/// reserves room for an event before it reads one (see `budget.rs`).
async fn read(
    mut subscriber: Subscriber,
    tx: mpsc::Sender<BatchResult>,
    mut budget: Option<(Reader, std::time::Duration)>,
) {
    while let Ok(permit) = tx.reserve().await {
        let mut charge = match &budget {
            Some((reader, _)) => reader.before_read().await,
            None => Charge::none(),
        };
        let result = subscriber.next().await.map(|batch| {
            if let Some((reader, threshold)) = &mut budget {
                let tip = caught_up(
                    batch.kinesis_records,
                    batch.millis_behind_latest,
                    *threshold,
                );
                reader.after_read(&mut charge, &batch, tip);
            }
            Charged { batch, charge }
        });
        permit.send(result);
    }
}

/// Aborts the task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
