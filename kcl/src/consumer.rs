//! One shard's consumer: waits for its parents, then feeds its processor batch after batch
//! until the shard ends, the lease is lost, or the worker shuts down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregation_proto::HashRange;
use tokio::sync::watch;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::checkpointer::Checkpointer;
use crate::coordinator::LeaseCoordinator;
use crate::lease::{Checkpoint, Lease, LeaseTable};
use crate::metrics::ConsumerMetrics;
use crate::processor::{InitializeInput, ProcessRecordsInput, ShardRecordProcessor};
use crate::retrieval::{PollingConfig, PollingSource, RecordSource, StartingPosition, StreamId};
use crate::scheduler::InitialPosition;
use crate::shard_sync::create_child_leases;

/// Why a consumer must stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Another worker holds the lease now.
    LeaseLost,
    /// This worker is shutting down gracefully.
    Shutdown,
}

/// What a consumer needs from its worker.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerContext {
    pub(crate) kinesis: aws_sdk_kinesis::Client,
    pub(crate) stream: StreamId,
    pub(crate) table: LeaseTable,
    pub(crate) coordinator: LeaseCoordinator,
    pub(crate) polling: PollingConfig,
    pub(crate) initial: InitialPosition,
    pub(crate) parent_poll_interval: Duration,
    pub(crate) metrics: Arc<ConsumerMetrics>,
}

/// How a consumer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    ShardEnd,
    LeaseLost,
    Shutdown,
    /// The lease was already at SHARD_END: nothing to do.
    AlreadyFinished,
}

pub(crate) async fn run_consumer<P: ShardRecordProcessor>(
    context: ConsumerContext,
    lease: Lease,
    mut processor: P,
    mut stop: watch::Receiver<Option<Stop>>,
) -> Ended {
    let span = info_span!("shard", shard = %lease.lease_key);
    async move {
        if lease.checkpoint == Checkpoint::ShardEnd {
            return Ended::AlreadyFinished;
        }
        // Children only after every parent is finished: per-key order across reshards.
        if let Some(stop) = wait_for_parents(&context, &lease, &mut stop).await {
            return stopped(stop, &mut processor, None).await;
        }
        let position = match &lease.checkpoint {
            Checkpoint::TrimHorizon => StartingPosition::TrimHorizon,
            Checkpoint::Latest => StartingPosition::Latest,
            Checkpoint::AtTimestamp => match context.initial {
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
            Checkpoint::ShardEnd => return Ended::AlreadyFinished,
        };
        // A malformed stored range disables the per-record filter rather than dropping
        // records: delivering a stray record beats losing one, but it must be visible.
        let hash_range = lease.hash_key_range.as_ref().and_then(|(start, end)| {
            HashRange::from_decimal(start, end)
                .inspect_err(|error| warn!(%error, "lease has an unusable hash range; records are not filtered"))
                .ok()
        });
        let mut source = PollingSource::new(
            context.kinesis.clone(),
            context.stream.clone(),
            lease.lease_key.clone(),
            hash_range,
            position,
            context.polling.clone(),
        );
        let mut checkpointer = Checkpointer::new(
            lease.lease_key.clone(),
            context.coordinator.clone(),
            context.table.clone(),
            lease.checkpoint.clone(),
        );
        info!(checkpoint = %lease.checkpoint, "shard processing starts");
        processor
            .initialize(InitializeInput {
                shard_id: lease.lease_key.clone(),
                checkpoint: lease.checkpoint.clone(),
            })
            .await;
        loop {
            let batch = tokio::select! {
                biased;
                reason = wait_stop(&mut stop) => return stopped(reason, &mut processor, Some(&mut checkpointer)).await,
                batch = source.next_batch() => batch,
            };
            let batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    // Retryable problems are retried inside the source; this one is not.
                    warn!(%error, "reading the shard failed; the lease is handed back");
                    return stopped(Stop::Shutdown, &mut processor, Some(&mut checkpointer)).await;
                }
            };
            let requested = *stop.borrow();
            if let Some(reason) = requested {
                return stopped(reason, &mut processor, Some(&mut checkpointer)).await;
            }
            if let Some(last) = batch.records.last() {
                checkpointer.delivered(last.sequence_number().unwrap_or("0"), last.sub_sequence_number().unwrap_or(0));
                let started = Instant::now();
                let records = batch.records.len();
                let bytes: usize = batch.records.iter().map(|r| r.data().len()).sum();
                processor
                    .process_records(
                        ProcessRecordsInput {
                            records: batch.records,
                            millis_behind_latest: batch.millis_behind_latest,
                        },
                        &mut checkpointer,
                    )
                    .await;
                context.metrics.processed(&lease.lease_key, records, bytes, started.elapsed(), batch.millis_behind_latest);
            } else if let Some(behind) = batch.millis_behind_latest {
                context.metrics.behind(&lease.lease_key, behind);
            }
            if let Some(children) = batch.shard_end {
                if let Err(error) = create_child_leases(&context.table, &children).await {
                    warn!(%error, "creating child leases failed; shard sync will retry");
                }
                checkpointer.shard_end_reached();
                processor.shard_ended(&mut checkpointer).await;
                if *checkpointer.last_checkpoint() != Checkpoint::ShardEnd {
                    warn!("shard_ended returned without checkpointing SHARD_END: the children will not start");
                }
                info!("shard ended");
                return Ended::ShardEnd;
            }
        }
    }
    .instrument(span)
    .await
}

async fn stopped<P: ShardRecordProcessor>(
    stop: Stop,
    processor: &mut P,
    checkpointer: Option<&mut Checkpointer>,
) -> Ended {
    match (stop, checkpointer) {
        (Stop::LeaseLost, Some(_)) => {
            debug!("lease lost");
            processor.lease_lost().await;
            Ended::LeaseLost
        }
        (Stop::Shutdown, Some(checkpointer)) => {
            processor.shutdown_requested(checkpointer).await;
            Ended::Shutdown
        }
        (Stop::LeaseLost, None) => Ended::LeaseLost,
        (Stop::Shutdown, None) => Ended::Shutdown,
    }
}

async fn wait_stop(stop: &mut watch::Receiver<Option<Stop>>) -> Stop {
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

/// Polls the parents' leases until each is at SHARD_END or gone; `Some(stop)` if told to stop
/// first.
async fn wait_for_parents(
    context: &ConsumerContext,
    lease: &Lease,
    stop: &mut watch::Receiver<Option<Stop>>,
) -> Option<Stop> {
    let mut logged = false;
    loop {
        let mut pending = Vec::new();
        for parent in &lease.parent_shard_ids {
            match context.table.get(parent).await {
                Ok(Some(parent_lease)) if parent_lease.checkpoint != Checkpoint::ShardEnd => {
                    pending.push(parent.clone())
                }
                Ok(_) => {}
                Err(error) => {
                    warn!(%error, %parent, "reading a parent lease failed");
                    pending.push(parent.clone());
                }
            }
        }
        if pending.is_empty() {
            return None;
        }
        if !logged {
            debug!(?pending, "waiting for parent shards to finish");
            logged = true;
        }
        tokio::select! {
            reason = wait_stop(stop) => return Some(reason),
            () = tokio::time::sleep(context.parent_poll_interval) => {}
        }
    }
}
