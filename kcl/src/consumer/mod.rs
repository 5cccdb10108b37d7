//! One shard's consumer, for one holding of its lease: waits for its parents, then feeds its
//! processor batch after batch until the shard ends, the lease is lost or handed over, or the
//! worker shuts down.
//!
//! - Records are delivered only while the holding is valid (renewed recently enough that no
//!   other worker may take it yet); an unrenewed holding pauses delivery until a renewal gets
//!   through.
//! - A read error never ends the consumer: the source retries from where it was (it never
//!   repeats or skips a record), the consumer keeps going. A shard Kinesis says does not
//!   exist (`ResourceNotFoundException`, a shard past retention or a deleted stream) is
//!   treated as ended, as the Java KCL does, so its children proceed.
//! - A processor call that goes the processor timeout without a sign of progress (each
//!   checkpoint call starts the timeout again: see `watchdog.rs`), or a processor that asks
//!   for it ([`Checkpointer::request_restart`]), ends the consumer with
//!   [`Ended::ProcessorFailed`]; a panic ends its task. Either way the scheduler starts the
//!   shard over from its last checkpoint after a backoff.

mod latest;
mod parents;
mod shard_end;
mod watchdog;

pub(crate) use latest::LatestStarts;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aggregation_proto::HashRange;
use kinesis_common::{
    Backoff, ConsumerApi, ErrorChain, Jitter, ListShards, ReadShard, ShardListing,
};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::InitialPosition;
use crate::checkpointer::Checkpointer;
use crate::coordinator::{HeldRef, LeaseCoordinator};
use crate::lease::store::LeaseStore;
use crate::lease::{Checkpoint, Lease};
use crate::metrics::ConsumerMetrics;
use crate::processor::{InitializeInput, ProcessRecordsInput, ShardRecordProcessor};
use crate::retrieval::{
    BudgetReader, Charge, ChildShard, Class, Counters, FanOutReader, MAX_ANSWER_BYTES,
    MAX_EVENT_BYTES, PollingReader, RecordsBudget, RetrievalError, RetrievalStats, ShardBatch,
    StartingPosition, StreamId, children_of, estimate,
};
use crate::scheduler::{ShardPhase, StatusBoard, WorkerConfig};
use watchdog::Watchdog;

/// Why a consumer must stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Another worker holds the lease now.
    LeaseLost,
    /// This worker is shutting down gracefully.
    Shutdown,
    /// Another worker asked for the lease: checkpoint, then hand it over.
    Handoff,
}

/// How a consumer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// SHARD_END is stored (or was already).
    ShardEnd,
    LeaseLost,
    Shutdown,
    /// The processor checkpointed; release the lease to complete the handoff.
    HandedOff,
    /// A processor call went the processor timeout without a checkpoint call, or the
    /// processor asked to be replaced.
    ProcessorFailed,
}

/// How the shards are read by enhanced fan-out: the calls and the registered consumer.
#[derive(Clone)]
pub(crate) struct FanOutPlan {
    pub(crate) api: Arc<dyn ConsumerApi>,
    pub(crate) consumer_arn: String,
}

impl std::fmt::Debug for FanOutPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOutPlan")
            .field("consumer_arn", &self.consumer_arn)
            .finish_non_exhaustive()
    }
}

/// One shard's source: polling or enhanced fan-out, the application's choice. Everything
/// after `next_batch` is the same code for both.
enum ShardSource<A> {
    Polling(PollingReader<A>),
    FanOut(FanOutReader),
}

impl<A: ListShards + ReadShard> ShardSource<A> {
    /// The next batch and its charge to the worker's memory budget, to keep until the
    /// processor is done with the batch.
    async fn next_batch(&mut self) -> Result<(ShardBatch, Charge), RetrievalError> {
        let charged = match self {
            Self::Polling(driver) => driver.next_charged().await,
            Self::FanOut(driver) => driver.next_charged().await,
        }?;
        Ok((charged.batch, charged.charge))
    }

    fn stats(&self) -> RetrievalStats {
        self.counters().snapshot()
    }

    fn counters(&self) -> &Arc<Counters> {
        match self {
            Self::Polling(driver) => &driver.counters,
            Self::FanOut(driver) => &driver.counters,
        }
    }
}

/// What a consumer needs from its worker.
#[derive(Debug)]
pub(crate) struct ShardContext<A> {
    pub(crate) api: A,
    /// `Some` when the application reads by enhanced fan-out (else polling through `api`).
    pub(crate) fan_out: Option<FanOutPlan>,
    pub(crate) stream: StreamId,
    pub(crate) store: Arc<dyn LeaseStore>,
    pub(crate) coordinator: LeaseCoordinator,
    pub(crate) config: Arc<WorkerConfig>,
    pub(crate) metrics: Arc<ConsumerMetrics>,
    pub(crate) status: Arc<StatusBoard>,
    /// Leases still at `LATEST` this worker has read (see `latest.rs`).
    pub(crate) latest_starts: Arc<LatestStarts>,
    /// The worker-wide memory budget of decoded batches.
    pub(crate) budget: Arc<RecordsBudget>,
}

impl<A: Clone> Clone for ShardContext<A> {
    fn clone(&self) -> Self {
        Self {
            api: self.api.clone(),
            fan_out: self.fan_out.clone(),
            stream: self.stream.clone(),
            store: self.store.clone(),
            coordinator: self.coordinator.clone(),
            config: self.config.clone(),
            metrics: self.metrics.clone(),
            status: self.status.clone(),
            latest_starts: self.latest_starts.clone(),
            budget: self.budget.clone(),
        }
    }
}

/// Runs `processor` over the holding until it ends (see the [module docs](self)).
pub(crate) async fn run_consumer<A, P>(
    context: ShardContext<A>,
    holding: HeldRef,
    processor: P,
    stop: watch::Receiver<Option<Stop>>,
) -> Ended
where
    A: ListShards + ReadShard + Clone,
    P: ShardRecordProcessor,
{
    let span = info_span!("shard", shard = %holding.key);
    Consumer {
        key: holding.key.clone(),
        context,
        holding,
        processor,
        stop,
    }
    .run()
    .instrument(span)
    .await
}

struct Consumer<A, P> {
    key: String,
    context: ShardContext<A>,
    holding: HeldRef,
    processor: P,
    stop: watch::Receiver<Option<Stop>>,
}

impl<A, P> Consumer<A, P>
where
    A: ListShards + ReadShard + Clone,
    P: ShardRecordProcessor,
{
    async fn run(mut self) -> Ended {
        let Some(lease) = self.context.coordinator.holding_lease(&self.holding) else {
            return Ended::LeaseLost;
        };
        if lease.is_finished() {
            return Ended::ShardEnd;
        }
        // Children only after every parent is finished: per-key order across reshards.
        if let Some(reason) = parents::wait(&self.context, &lease, &mut self.stop).await {
            return match reason {
                Stop::LeaseLost => Ended::LeaseLost,
                Stop::Shutdown => Ended::Shutdown,
                Stop::Handoff => Ended::HandedOff,
            };
        }
        // The latest copy: an earlier consumer of this holding may have checkpointed since.
        let Some(lease) = self.context.coordinator.holding_lease(&self.holding) else {
            return Ended::LeaseLost;
        };
        let Some((lease, position)) = latest::starting_position(
            &self.context.coordinator,
            &self.holding,
            &self.context.latest_starts,
            lease,
        )
        .await
        else {
            return Ended::LeaseLost;
        };
        let mut source = self.source(&lease, position);
        self.context
            .metrics
            .reading(&self.key, Arc::clone(source.counters()));
        let mut checkpointer = Checkpointer::new(
            self.context.coordinator.clone(),
            self.holding.clone(),
            lease.checkpoint.clone(),
            lease.pending_checkpoint.clone(),
        );
        info!(checkpoint = %lease.checkpoint, "shard processing starts");
        self.context
            .status
            .phase(&self.key, ShardPhase::Initializing);
        let input = InitializeInput {
            shard_id: self.key.clone(),
            checkpoint: lease.checkpoint.clone(),
            pending_checkpoint: lease.pending_checkpoint.clone(),
            pending_checkpoint_state: lease.pending_checkpoint_state.clone(),
        };
        let limit = self.context.config.processor_timeout;
        let mut watchdog = Watchdog::new(limit, &mut checkpointer);
        if bounded(limit, self.processor.initialize(input))
            .await
            .is_err()
        {
            return self.processor_timed_out("initialize");
        }
        self.context.status.phase(&self.key, ShardPhase::Processing);
        let mut counted = (0, 0);
        loop {
            let next = tokio::select! {
                biased;
                reason = wait_stop(&mut self.stop) => return self.stopped(reason, &mut checkpointer).await,
                batch = source.next_batch() => batch,
            };
            self.count_retrieval(&source, &mut counted);
            // The batch's charge goes back once the processor is done with it (the end of
            // this turn of the loop).
            let (batch, _charge) = match next {
                Ok(charged) => charged,
                Err(RetrievalError::NotFound { operation, .. }) => {
                    warn!(
                        operation,
                        "Kinesis says the shard does not exist (past retention, or the stream was deleted): treating it as ended"
                    );
                    match self.find_children().await {
                        Ok(children) => (
                            ShardBatch {
                                shard_end: Some(children),
                                ..ShardBatch::empty()
                            },
                            Charge::none(),
                        ),
                        Err(reason) => return self.stopped(reason, &mut checkpointer).await,
                    }
                }
                Err(error) => {
                    // The source backs off before its next call and resumes where it was.
                    warn!(error = %ErrorChain(&error), "reading the shard failed; retrying");
                    self.context.status.retrieval_failing(&self.key);
                    continue;
                }
            };
            if let Err(reason) = self.wait_until_valid().await {
                return self.stopped(reason, &mut checkpointer).await;
            }
            let requested = *self.stop.borrow();
            if let Some(reason) = requested {
                return self.stopped(reason, &mut checkpointer).await;
            }
            let behind = batch.millis_behind_latest;
            if let Some(last) = batch.records.last() {
                checkpointer.delivered(
                    last.sequence_number().unwrap_or("0"),
                    last.sub_sequence_number().unwrap_or(0),
                );
                let records = batch.records.len();
                let bytes: usize = batch.records.iter().map(|r| r.data().len()).sum();
                self.context.status.delivering(&self.key, records);
                let started = Instant::now();
                let input = ProcessRecordsInput {
                    records: batch.records,
                    millis_behind_latest: behind,
                };
                if let Err(ended) = self.process(input, &mut checkpointer, &mut watchdog).await {
                    return ended;
                }
                self.context.metrics.processed(
                    &self.key,
                    records,
                    bytes,
                    started.elapsed(),
                    behind,
                );
                self.context.status.processed(&self.key, behind);
            } else if batch.shard_end.is_none() {
                if let Some(behind) = behind {
                    self.context.metrics.behind(&self.key, behind);
                }
                self.context.status.read_nothing(&self.key, behind);
                if self.context.config.process_empty_batches {
                    let input = ProcessRecordsInput {
                        records: Vec::new(),
                        millis_behind_latest: behind,
                    };
                    if let Err(ended) = self.process(input, &mut checkpointer, &mut watchdog).await
                    {
                        return ended;
                    }
                }
            }
            if let Some(children) = batch.shard_end {
                drop(_charge);
                return shard_end::finish(&mut self, &mut checkpointer, &mut watchdog, children)
                    .await;
            }
        }
    }

    /// A source for `lease`; `latest` is where a lease at `LATEST` starts (see `latest.rs`).
    fn source(&self, lease: &Lease, latest: StartingPosition) -> ShardSource<A> {
        let position = match &lease.checkpoint {
            Checkpoint::TrimHorizon | Checkpoint::ShardEnd => StartingPosition::TrimHorizon,
            Checkpoint::Latest => latest,
            Checkpoint::AtTimestamp => match self.context.config.initial {
                InitialPosition::AtTimestamp(at) => StartingPosition::AtTimestamp(at),
                _ => StartingPosition::TrimHorizon,
            },
            Checkpoint::Sequence {
                sequence_number,
                sub_sequence_number,
            } => StartingPosition::AfterSequence {
                sequence_number: sequence_number.clone(),
                sub_sequence_number: *sub_sequence_number,
            },
        };
        // A malformed stored range disables the per-record filter rather than dropping
        // records: delivering a stray record beats losing one, but it must be visible.
        let hash_range = lease.hash_key_range.as_ref().and_then(|(start, end)| {
            HashRange::from_decimal(start, end)
                .inspect_err(|error| warn!(%error, "lease has an unusable hash range; records are not filtered"))
                .ok()
        });
        let config = &self.context.config;
        if let Some(plan) = &self.context.fan_out {
            let span = info_span!("fan_out", stream = %self.context.stream, shard_id = %self.key);
            // An event holds about a second of the shard: 2 MiB, and a shard takes 1,000
            // records a second (twice that allowed for).
            let ceiling = estimate(MAX_EVENT_BYTES, 2_000, 2_000);
            let reader = BudgetReader::new(self.context.budget.clone(), ceiling);
            return ShardSource::FanOut(
                FanOutReader::new(
                    plan.api.clone(),
                    self.context.stream.clone(),
                    plan.consumer_arn.clone(),
                    self.key.clone(),
                    hash_range,
                    position,
                    config.fan_out.clone(),
                    span,
                )
                .with_budget(reader, config.polling.caught_up_threshold),
            );
        }
        let span = info_span!("polling", stream = %self.context.stream, shard_id = %self.key);
        // The most one answer may decode to: 10 MiB of data in up to `max_records` records.
        let records = usize::try_from(config.polling.max_records).unwrap_or(0);
        let ceiling = estimate(MAX_ANSWER_BYTES, records, records);
        let reader = BudgetReader::new(self.context.budget.clone(), ceiling);
        ShardSource::Polling(
            PollingReader::new(
                self.context.api.clone(),
                self.context.stream.clone(),
                self.key.clone(),
                hash_range,
                position,
                config.polling.clone(),
                span,
            )
            .with_budget(reader),
        )
    }

    /// Publishes the source's throttling and expired-iterator counts since the last call.
    fn count_retrieval(&self, source: &ShardSource<A>, counted: &mut (u64, u64)) {
        let stats = source.stats();
        self.context.metrics.retrieval(
            &self.key,
            stats.throttled.saturating_sub(counted.0),
            stats.expired_iterators.saturating_sub(counted.1),
        );
        *counted = (stats.throttled, stats.expired_iterators);
    }

    /// Waits while the holding is paused (not renewed in time); `Err` when told to stop or
    /// the holding ended.
    async fn wait_until_valid(&mut self) -> Result<(), Stop> {
        let coordinator = &self.context.coordinator;
        if coordinator.is_valid(&self.holding) {
            return Ok(());
        }
        warn!("lease not renewed in time: delivery paused until a renewal gets through");
        self.context.status.phase(&self.key, ShardPhase::Paused);
        let valid = tokio::select! {
            biased;
            reason = wait_stop(&mut self.stop) => return Err(reason),
            valid = coordinator.wait_valid(&self.holding) => valid,
        };
        if !valid {
            return Err(Stop::LeaseLost);
        }
        info!("lease renewed again: delivery resumes");
        self.context.status.phase(&self.key, ShardPhase::Processing);
        Ok(())
    }

    /// The children of this shard, from ListShards, retried with backoff; none when the
    /// stream itself is gone.
    async fn find_children(&mut self) -> Result<Vec<ChildShard>, Stop> {
        let mut backoff = Backoff::new(
            self.context.config.retry_min,
            self.context.config.retry_max,
            Jitter::Stretch,
        );
        loop {
            let listing = ShardListing::After(self.key.clone());
            match self
                .context
                .api
                .list_shards(&self.context.stream, &listing)
                .await
            {
                Ok(shards) => return Ok(children_of(&self.key, shards)),
                Err(error) if error.class() == Class::NotFound => {
                    return Ok(Vec::new());
                }
                Err(error) => {
                    warn!(
                        code = error.code(),
                        "listing the shard's children failed; retrying"
                    );
                }
            }
            self.pause(backoff.next_delay()).await?;
        }
    }

    /// Sleeps, unless told to stop first.
    async fn pause(&mut self, wait: Duration) -> Result<(), Stop> {
        tokio::select! {
            biased;
            reason = wait_stop(&mut self.stop) => Err(reason),
            () = tokio::time::sleep(wait) => Ok(()),
        }
    }

    async fn stopped(&mut self, stop: Stop, checkpointer: &mut Checkpointer) -> Ended {
        let limit = Some(self.context.config.shutdown_timeout);
        match stop {
            Stop::LeaseLost => {
                debug!("lease lost");
                let _ = bounded(limit, self.processor.lease_lost()).await;
                Ended::LeaseLost
            }
            Stop::Shutdown => {
                self.context
                    .status
                    .phase(&self.key, ShardPhase::ShuttingDown);
                // The worker hands the leases back in the rest of the shutdown timeout.
                let renew = self.context.coordinator.config().renew_interval();
                let limit = Some(self.context.config.processors_shutdown_time(renew));
                if bounded(limit, self.processor.shutdown_requested(checkpointer))
                    .await
                    .is_err()
                {
                    warn!(timeout = ?limit, "shutdown_requested did not return in time");
                }
                Ended::Shutdown
            }
            Stop::Handoff => {
                self.context.status.phase(&self.key, ShardPhase::HandingOff);
                if bounded(limit, self.processor.shutdown_requested(checkpointer))
                    .await
                    .is_err()
                {
                    warn!(timeout = ?limit, "shutdown_requested did not return in time; handing over anyway");
                }
                info!(checkpoint = %checkpointer.last_checkpoint(), "checkpointed for the handoff");
                Ended::HandedOff
            }
        }
    }

    /// One `process_records` call under the watchdog; `Err` ends the consumer: the call
    /// made no progress in time, or the processor asked to be replaced.
    async fn process(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
        watchdog: &mut Watchdog,
    ) -> Result<(), Ended> {
        let call = self.processor.process_records(input, checkpointer);
        if watchdog.watch(call).await.is_err() {
            return Err(self.processor_timed_out("process_records"));
        }
        match checkpointer.take_restart_request() {
            Some(reason) => Err(self.processor_gave_up(&reason)),
            None => Ok(()),
        }
    }

    fn processor_gave_up(&self, reason: &str) -> Ended {
        warn!(
            reason,
            "the processor asked to be replaced; the shard starts over from its last checkpoint after a backoff"
        );
        self.context.metrics.processor_failed(&self.key);
        Ended::ProcessorFailed
    }

    fn processor_timed_out(&self, call: &'static str) -> Ended {
        error!(
            call,
            timeout = ?self.context.config.processor_timeout,
            "processor call made no progress (no checkpoint) within the processor timeout; the shard starts over from its last checkpoint after a backoff"
        );
        self.context.metrics.processor_failed(&self.key);
        Ended::ProcessorFailed
    }
}

/// `future`, abandoned after `limit` (if any).
async fn bounded<T>(limit: Option<Duration>, future: impl Future<Output = T>) -> Result<T, ()> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, future).await.map_err(|_| ()),
        None => Ok(future.await),
    }
}

pub(crate) async fn wait_stop(stop: &mut watch::Receiver<Option<Stop>>) -> Stop {
    loop {
        if let Some(reason) = *stop.borrow_and_update() {
            return reason;
        }
        if stop.changed().await.is_err() {
            // The scheduler is gone: treat as a shutdown.
            return Stop::Shutdown;
        }
    }
}
