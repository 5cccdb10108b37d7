//! [`PollingSource`]: a [`RecordSource`] over GetRecords, with optional prefetching.

use std::fmt;
use std::sync::Arc;

use aggregation_proto::HashRange;
use kinesis_common::{Bounded, ListShards, ReadShard, SdkKinesis};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{Instrument, Span, info_span};

use super::budget::{Charged, Reader};
use super::config::PollingConfig;
use super::error::RetrievalError;
use super::fetcher::Fetcher;
use super::source::{RecordSource, source_accessors};
use super::stats::Counters;
use super::types::{ShardBatch, StartingPosition, StreamId};

/// Reads one shard with GetShardIterator and GetRecords: the Java KCL's
/// `PollingRecordsFetcher` and `PrefetchRecordsPublisher`.
///
/// - **Position**: starts at the [`StartingPosition`]; `AfterSequence` skips every user
///   record at or below the checkpoint, so it resumes inside an aggregate. An expired
///   iterator is replaced at the last delivered record (`AT_SEQUENCE_NUMBER` and skip):
///   nothing is delivered twice or lost.
/// - **Records**: every Kinesis record is deaggregated; with a hash range, each sub-record
///   outside it is dropped on its own (an aggregate written before a reshard may hold records
///   of the sibling shard). Records share one buffer per Kinesis record, without copying.
/// - **Pacing**: while behind, calls follow each other (at most one per
///   [`min_time_between_calls`](PollingConfig::min_time_between_calls)); once caught up
///   (`MillisBehindLatest` under [`caught_up_threshold`](PollingConfig::caught_up_threshold),
///   or no records at the tip), at most one call per
///   [`idle_time_between_reads`](PollingConfig::idle_time_between_reads), so a shard that
///   receives a few records a second costs one call per idle interval. The batch is handed
///   out at once; the wait comes before the next call.
/// - **Failures**: throttling and transient failures are retried with jittered backoff,
///   visible only in [`stats`](Self::stats) and tracing; see [`RetrievalError`] for the rest.
/// - **Shard end**: the batch that reaches a closed shard's end carries its children; every
///   later [`next_batch`](RecordSource::next_batch) returns an empty batch with the same
///   children, without calling Kinesis.
/// - **Prefetch** (default on): the first `next_batch` spawns a task that makes the next
///   GetRecords call while the caller processes the current batch, through a channel of one
///   batch, so at most about two batches are in memory. Dropping the source aborts the task.
///
/// No call is made before the first `next_batch` (for `LATEST`, "now" is that first call).
/// Calls run in a `polling` tracing span with the stream and shard, under the span that was
/// current when the source was created.
///
/// # Examples
///
/// ```no_run
/// use kcl::retrieval::{PollingConfig, PollingSource, RecordSource, StartingPosition};
///
/// # async fn example(client: aws_sdk_kinesis::Client) -> Result<(), kcl::retrieval::RetrievalError> {
/// let mut source = PollingSource::new(
///     client,
///     "orders".into(),
///     "shardId-000000000000".into(),
///     None,
///     StartingPosition::TrimHorizon,
///     PollingConfig::default(),
/// );
/// loop {
///     let batch = source.next_batch().await?;
///     for record in &batch.records {
///         println!("{:?} {:?}", record.sequence_number(), record.sub_sequence_number());
///     }
///     if batch.shard_end.is_some() {
///         break;
///     }
/// }
/// # Ok(())
/// # }
/// ```
pub struct PollingSource {
    driver: PollingReader<Bounded<SdkKinesis>>,
    stream: StreamId,
    shard_id: String,
}

impl PollingSource {
    /// A source for `shard_id` of `stream`, starting at `position`.
    ///
    /// `hash_range` is the shard's hash-key range: given, every sub-record of an aggregate
    /// whose hash key lies outside it is dropped. The client's own retries are turned off for
    /// these calls; the source retries by [`PollingConfig`]'s rules instead.
    pub fn new(
        client: aws_sdk_kinesis::Client,
        stream: StreamId,
        shard_id: String,
        hash_range: Option<HashRange>,
        position: StartingPosition,
        config: PollingConfig,
    ) -> Self {
        let span = info_span!("polling", stream = %stream, shard_id = %shard_id);
        let api = SdkKinesis::new(&client).with_timeouts(config.timeouts());
        let driver = PollingReader::new(
            api,
            stream.clone(),
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

source_accessors!(PollingSource);

impl fmt::Debug for PollingSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PollingSource")
            .field("stream", &self.stream)
            .field("shard_id", &self.shard_id)
            .field("mode", &self.driver.mode())
            .finish_non_exhaustive()
    }
}

impl RecordSource for PollingSource {
    /// See [`RecordSource::next_batch`]; cancel safe in both modes.
    fn next_batch(&mut self) -> impl Future<Output = Result<ShardBatch, RetrievalError>> + Send {
        self.driver.next_batch()
    }
}

type BatchResult = Result<Charged, RetrievalError>;

/// Runs a [`Fetcher`] inline or in a prefetch task (generic so unit tests drive it over a
/// fake API).
pub(crate) struct PollingReader<A> {
    state: State<A>,
    pub(crate) counters: Arc<Counters>,
    span: Span,
}

enum State<A> {
    /// No prefetching: each call fetches.
    Inline(Box<Fetcher<A>>),
    /// Prefetching, task not started yet (it starts with the first call).
    Idle(Box<Fetcher<A>>),
    Prefetching {
        rx: mpsc::Receiver<BatchResult>,
        _task: AbortOnDrop,
    },
    /// Only while the prefetch task is being started.
    Starting,
}

impl<A: ListShards + ReadShard> PollingReader<A> {
    pub(crate) fn new(
        api: A,
        stream: StreamId,
        shard_id: String,
        hash_range: Option<HashRange>,
        position: StartingPosition,
        config: PollingConfig,
        span: Span,
    ) -> Self {
        let counters = Arc::new(Counters::default());
        let prefetch = config.prefetch;
        let fetcher = Box::new(Fetcher::new(
            api,
            stream,
            shard_id,
            hash_range,
            position,
            config,
            Arc::clone(&counters),
        ));
        let state = if prefetch {
            State::Idle(fetcher)
        } else {
            State::Inline(fetcher)
        };
        Self {
            state,
            counters,
            span,
        }
    }

    fn mode(&self) -> &'static str {
        match self.state {
            State::Inline(_) => "inline",
            State::Idle(_) => "prefetch (not started)",
            State::Prefetching { .. } | State::Starting => "prefetch",
        }
    }

    /// Charges its batches to `reader`'s budget: the batch read ahead waits charged in the
    /// channel, so at most two charged batches per shard.
    pub(crate) fn with_budget(mut self, reader: Reader) -> Self {
        if let State::Inline(fetcher) | State::Idle(fetcher) = &mut self.state {
            fetcher.set_budget(reader);
        }
        self
    }

    /// The next batch, its charge given back at once.
    pub(crate) async fn next_batch(&mut self) -> Result<ShardBatch, RetrievalError> {
        self.next_charged().await.map(|charged| charged.batch)
    }

    /// The next batch with its charge, to keep until the processor is done with it.
    pub(crate) async fn next_charged(&mut self) -> BatchResult {
        if matches!(self.state, State::Idle(_)) {
            self.start_prefetch();
        }
        match &mut self.state {
            State::Inline(fetcher) => fetcher.fetch().instrument(self.span.clone()).await,
            State::Prefetching { rx, .. } => rx
                .recv()
                .await
                .unwrap_or(Err(RetrievalError::PrefetchStopped)),
            State::Idle(_) | State::Starting => Err(RetrievalError::PrefetchStopped),
        }
    }

    fn start_prefetch(&mut self) {
        let State::Idle(fetcher) = std::mem::replace(&mut self.state, State::Starting) else {
            return;
        };
        let (tx, rx) = mpsc::channel(1);
        let task = tokio::spawn(prefetch(*fetcher, tx).instrument(self.span.clone()));
        self.state = State::Prefetching {
            rx,
            _task: AbortOnDrop(task),
        };
    }
}

/// The prefetch task: fetches the next batch as soon as the channel has room for it, so one
/// batch waits while the caller works on another. It reserves the slot before fetching, so it
/// never holds a second finished batch.
async fn prefetch<A: ListShards + ReadShard>(
    mut fetcher: Fetcher<A>,
    tx: mpsc::Sender<BatchResult>,
) {
    while let Ok(permit) = tx.reserve().await {
        permit.send(fetcher.fetch().await);
    }
}

/// Aborts the task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
