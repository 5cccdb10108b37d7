//! A shard's end, retried with backoff (the Java KCL's `ShutdownTask` with reason SHARD_END):
//! until durable when the services fail, at most `max_shard_end_attempts` calls when the
//! processor does not store SHARD_END:
//!
//! 1. the children's leases are created (at TRIM_HORIZON). A merge child is created only once
//!    its other parent has a lease too, or is gone from the stream: otherwise the child could
//!    start before that parent is read (a missing parent lease counts as finished);
//! 2. `childShardIds` is written on this lease (the Java KCL writes it, and its lease cleanup
//!    reads it);
//! 3. the processor's `shard_ended` must checkpoint SHARD_END.
//!
//! Children are created only by a holder whose holding is valid and whose parent lease is still
//! stored, held by this worker and not finished: a stale holder (a paused process, or one whose
//! lease moved without it noticing yet) would otherwise create, after the parent was finished
//! and cleaned up, a child lease that was already processed to its end and deleted, sending it
//! back to TRIM_HORIZON. Each child is created by one transaction that also
//! checks the parent's lease (stored, unfinished, this worker's), so a late request creates
//! nothing; a table policy without `dynamodb:ConditionCheckItem` falls back to the Java KCL's
//! unfenced create, with a warning.
//!
//! If any step fails, or `shard_ended` returns without SHARD_END stored, the whole sequence is
//! tried again after a backoff, until it is durable or the lease is lost: the children never
//! wait on a parent that nobody will finish. Failures of the services (DynamoDB, ListShards, a
//! checkpoint write the processor made that did not go through) are retried for as long as it
//! takes. A processor that returns from `shard_ended` without a checkpoint call, stores
//! something other than SHARD_END, or stalls past the processor timeout, is given
//! [`max_shard_end_attempts`](crate::SchedulerBuilder::max_shard_end_attempts) calls: then the
//! worker logs an error, counts it, and stops calling it (the shard stays held and unfinished
//! until the lease is lost, handed over or released; the next holder tries again). The Java
//! KCL retries such a processor forever.

use std::collections::BTreeSet;

use kinesis_common::{ListShards, ReadShard, ShardListing};
use tracing::{error, info, warn};

use super::watchdog::Watchdog;
use super::{Consumer, Ended, ShardContext, Stop, bounded, wait_stop};
use crate::checkpointer::Checkpointer;
use crate::coordinator::HeldRef;
use crate::lease::{Checkpoint, LeaseError};
use crate::processor::ShardRecordProcessor;
use crate::retrieval::ChildShard;
use crate::scheduler::ShardPhase;
use crate::shard_sync::child_lease;

/// Why a round of the shard end did not complete.
#[derive(Debug, thiserror::Error)]
enum NotYet {
    #[error("the merge child {child} waits for a lease of its other parent {other}")]
    OtherParentUnleased { child: String, other: String },
    #[error("lease table")]
    Lease(#[from] LeaseError),
    #[error("ListShards failed ({0})")]
    ListShards(String),
    #[error("shard_ended returned without a stored SHARD_END checkpoint")]
    NotCheckpointed,
    #[error("shard_ended checkpointed, but SHARD_END was not stored (the write failed)")]
    NotStored,
    #[error("shard_ended made no progress within the processor timeout")]
    TimedOut,
    #[error("the holding is not valid now (renewals are not getting through)")]
    NotValid,
    #[error("the lease is no longer this worker's (moved, or deleted once finished)")]
    NotHeld,
}

impl NotYet {
    /// Whether the processor failed the shard end (rather than a service): such attempts
    /// are bounded.
    fn is_processors_fault(&self) -> bool {
        matches!(self, Self::NotCheckpointed | Self::TimedOut)
    }
}

pub(super) async fn finish<A, P>(
    consumer: &mut Consumer<A, P>,
    checkpointer: &mut Checkpointer,
    watchdog: &mut Watchdog,
    children: Vec<ChildShard>,
) -> Ended
where
    A: ListShards + ReadShard + Clone,
    P: ShardRecordProcessor,
{
    checkpointer.shard_end_reached();
    consumer
        .context
        .status
        .phase(&consumer.key, ShardPhase::ShardEnding);
    let config = consumer.context.config.clone();
    let mut backoff = kinesis_common::Backoff::new(
        config.retry_min,
        config.retry_max,
        kinesis_common::Jitter::Stretch,
    );
    let mut processor_faults = 0_u32;
    loop {
        if consumer
            .context
            .coordinator
            .holding_lease(&consumer.holding)
            .is_none()
        {
            let _ = bounded(
                Some(config.shutdown_timeout),
                consumer.processor.lease_lost(),
            )
            .await;
            return Ended::LeaseLost;
        }
        match attempt(consumer, checkpointer, watchdog, &children).await {
            Ok(()) => {
                info!(
                    children = ?children.iter().map(|c| &c.shard_id).collect::<Vec<_>>(),
                    "shard ended: SHARD_END stored"
                );
                return Ended::ShardEnd;
            }
            Err(why) => {
                if why.is_processors_fault() {
                    processor_faults += 1;
                    consumer.context.metrics.shard_end_not_stored(&consumer.key);
                    if processor_faults >= config.shard_end_attempts.get() {
                        return abandon(consumer, processor_faults, &why).await;
                    }
                }
                let wait = backoff.next_delay();
                warn!(
                    attempt = backoff.attempts(),
                    retry_in = ?wait,
                    error = %kinesis_common::ErrorChain(&why),
                    "shard end not durable yet; retrying"
                );
                if let Err(stop) = consumer.pause(wait).await {
                    return match stop {
                        super::Stop::LeaseLost => {
                            let _ = bounded(
                                Some(config.shutdown_timeout),
                                consumer.processor.lease_lost(),
                            )
                            .await;
                            Ended::LeaseLost
                        }
                        super::Stop::Shutdown => Ended::Shutdown,
                        super::Stop::Handoff => Ended::HandedOff,
                    };
                }
            }
        }
    }
}

/// Gives up on a processor that does not store SHARD_END: no more calls to it; the holding
/// is kept, unfinished, until the worker stops it (see the module docs).
async fn abandon<A, P>(consumer: &mut Consumer<A, P>, attempts: u32, why: &NotYet) -> Ended
where
    A: ListShards + ReadShard + Clone,
    P: ShardRecordProcessor,
{
    error!(
        attempts,
        error = %why,
        "the processor did not checkpoint SHARD_END in shard_ended (call Checkpointer::checkpoint_shard_end there); \
         giving up: the shard stays unfinished and its child shards are not read until another holder of the lease stores SHARD_END"
    );
    consumer.context.metrics.shard_end_abandoned(&consumer.key);
    consumer
        .context
        .status
        .phase(&consumer.key, ShardPhase::ShardEndFailed);
    match wait_stop(&mut consumer.stop).await {
        Stop::LeaseLost => {
            let limit = Some(consumer.context.config.shutdown_timeout);
            let _ = bounded(limit, consumer.processor.lease_lost()).await;
            Ended::LeaseLost
        }
        Stop::Shutdown => Ended::Shutdown,
        Stop::Handoff => Ended::HandedOff,
    }
}

async fn attempt<A, P>(
    consumer: &mut Consumer<A, P>,
    checkpointer: &mut Checkpointer,
    watchdog: &mut Watchdog,
    children: &[ChildShard],
) -> Result<(), NotYet>
where
    A: ListShards + ReadShard + Clone,
    P: ShardRecordProcessor,
{
    let (context, holding) = (&consumer.context, &consumer.holding);
    if parent_unfinished(context, holding).await? {
        create_children(context, holding, children).await?;
    }
    if !children.is_empty() {
        let ids: Vec<String> = children.iter().map(|c| c.shard_id.clone()).collect();
        consumer
            .context
            .store
            .update_child_shards(&consumer.key, &ids)
            .await?;
    }
    if *checkpointer.last_checkpoint() == Checkpoint::ShardEnd {
        return Ok(());
    }
    let before = checkpointer.last_checkpoint().clone();
    watchdog
        .watch(consumer.processor.shard_ended(checkpointer))
        .await
        .map_err(|_| NotYet::TimedOut)?;
    let after = checkpointer.last_checkpoint();
    if *after == Checkpoint::ShardEnd {
        Ok(())
    } else if watchdog.progressed() && *after == before {
        // It did checkpoint; the write did not go through (the checkpointer keeps its last
        // checkpoint until one is stored).
        Err(NotYet::NotStored)
    } else {
        Err(NotYet::NotCheckpointed)
    }
}

/// Whether the children may still need creating: the stored parent lease is this worker's and
/// not finished (a finished one had its children created before SHARD_END could be stored).
/// Fails when the holding is not valid or the lease is no longer this worker's (see the module
/// docs: a stale holder creates nothing).
async fn parent_unfinished<A>(
    context: &ShardContext<A>,
    holding: &HeldRef,
) -> Result<bool, NotYet> {
    let coordinator = &context.coordinator;
    if !coordinator.is_valid(holding) {
        return Err(NotYet::NotValid);
    }
    match context.store.get(&holding.key).await? {
        Some(stored) if stored.is_held_by(coordinator.worker_id()) => {
            Ok(stored.checkpoint != Checkpoint::ShardEnd)
        }
        _ => Err(NotYet::NotHeld),
    }
}

async fn create_children<A: ListShards>(
    context: &ShardContext<A>,
    holding: &HeldRef,
    children: &[ChildShard],
) -> Result<(), NotYet> {
    let key = holding.key.as_str();
    let store = &context.store;
    if let [child] = children {
        let others: Vec<&String> = child
            .parent_shard_ids
            .iter()
            .filter(|parent| parent.as_str() != key)
            .collect();
        for other in others {
            if store.get(other).await?.is_some() {
                continue;
            }
            // No lease: fine if the other parent is gone from the stream (trimmed), not if it
            // still has records nobody read.
            let listed: BTreeSet<String> = context
                .api
                .list_shards(&context.stream, &ShardListing::All)
                .await
                .map_err(|error| NotYet::ListShards(error.code().to_owned()))?
                .into_iter()
                .map(|shard| shard.shard_id)
                .collect();
            if listed.contains(other) {
                return Err(NotYet::OtherParentUnleased {
                    child: child.shard_id.clone(),
                    other: other.clone(),
                });
            }
        }
    }
    for child in children {
        // Checked again right before each create: the checks above took requests.
        if !context.coordinator.is_valid(holding) {
            return Err(NotYet::NotValid);
        }
        let lease = child_lease(child);
        let worker = context.coordinator.worker_id();
        let created = match store.create_child_lease(key, worker, &lease).await {
            Err(LeaseError::LeaseLost { .. }) => return Err(NotYet::NotHeld),
            other => other?,
        };
        if created {
            info!(child = %child.shard_id, "child lease created");
        }
    }
    Ok(())
}
