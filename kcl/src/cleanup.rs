//! Lease cleanup: finished leases (checkpoint SHARD_END) are deleted once they are no longer
//! needed, with the Java KCL's rule (`LeaseCleanupManager`): every child shard has a lease
//! whose checkpoint moved past TRIM_HORIZON (its processing began, so it will never wait on
//! this parent again), and this lease's own parents' leases are gone (deletion goes down the
//! lineage in order).
//!
//! Every cleanup interval the worker looks at the finished leases of the last scan that are
//! its own, unowned, or left by a holder that stopped renewing them for longer than the
//! failover time plus one cleanup interval (finished leases are not renewed, so their holder
//! had a whole interval to clean them up itself). The delete is conditional on the lease being
//! unchanged since the scan, so of several workers cleaning up one lease exactly one deletes
//! it. Along the way it repairs what a crash may have left: `childShardIds` missing on the
//! parent (read from ListShards and written, as the Java KCL does), and child leases that were
//! never created (the children would otherwise wait forever).

use std::collections::HashMap;
use std::time::Duration;

use kinesis_common::{ErrorChain, ListShards, Shard, ShardListing};
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::consumer::ShardContext;
use crate::coordinator::ScanSnapshot;
use crate::lease::{Checkpoint, Lease};
use crate::retrieval::{Class, children_of};
use crate::shard_sync::child_lease;

/// Runs cleanup passes every cleanup interval until `cancel` fires.
pub(crate) async fn run<A: ListShards>(context: ShardContext<A>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            () = sleep(context.config.cleanup_interval) => {}
        }
        let Some(snapshot) = context.coordinator.last_scan() else {
            continue;
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            deleted = pass(&context, &snapshot) => if deleted > 0 {
                info!(deleted, "lease cleanup pass");
            },
        }
    }
}

/// One pass over `snapshot` (the taker's last scan; re-read when older than half the cleanup
/// interval and a finished lease is in sight, so deletion does not wait for the next take
/// cycle); returns how many leases this worker deleted.
pub(crate) async fn pass<A: ListShards>(
    context: &ShardContext<A>,
    snapshot: &ScanSnapshot,
) -> usize {
    let me = context.coordinator.worker_id().to_owned();
    let finished_in_sight = snapshot.leases.iter().any(|(lease, _)| lease.is_finished())
        || !context.coordinator.finished().is_empty();
    if !finished_in_sight {
        return 0;
    }
    let fresh;
    let leases: Vec<(Lease, Duration)> = {
        let age = tokio::time::Instant::now()
            .into_std()
            .saturating_duration_since(snapshot.at);
        if age > context.config.cleanup_interval / 2 {
            match context.store.list().await {
                Ok(leases) => {
                    // Idle since the snapshot only if the counter did not move since.
                    let seen: HashMap<&str, (u64, Duration)> = snapshot
                        .leases
                        .iter()
                        .map(|(lease, idle)| {
                            (lease.lease_key.as_str(), (lease.lease_counter, *idle + age))
                        })
                        .collect();
                    fresh = leases
                        .into_iter()
                        .map(|lease| {
                            let idle = match seen.get(lease.lease_key.as_str()) {
                                Some((counter, idle)) if *counter == lease.lease_counter => *idle,
                                _ => Duration::ZERO,
                            };
                            (lease, idle)
                        })
                        .collect();
                    fresh
                }
                Err(error) => {
                    debug!(error = %ErrorChain(&error), "lease cleanup scan failed");
                    return 0;
                }
            }
        } else {
            snapshot.leases.clone()
        }
    };
    let by_key: HashMap<&str, &Lease> = leases
        .iter()
        .map(|(lease, _)| (lease.lease_key.as_str(), lease))
        .collect();
    // Finished leases this worker holds that are gone or someone else's now.
    for key in context.coordinator.finished().keys() {
        match by_key.get(key.as_str()) {
            Some(lease) if lease.is_finished() && lease.is_held_by(&me) => {}
            _ => context.coordinator.forget_finished(key),
        }
    }
    let patience = context
        .coordinator
        .config()
        .failover_time()
        .saturating_add(context.config.cleanup_interval);
    let mut deleted = 0;
    for (lease, idle) in &leases {
        if !lease.is_finished() || !eligible(lease, *idle, &me, patience) {
            continue;
        }
        match clean(context, lease, &by_key).await {
            Ok(true) => {
                deleted += 1;
                context.coordinator.forget_finished(&lease.lease_key);
            }
            Ok(false) => {}
            Err(reason) => {
                debug!(lease_key = %lease.lease_key, %reason, "finished lease kept for now")
            }
        }
    }
    if deleted > 0 {
        metrics::counter!("LeaseCleanup.Deleted", "table" => context.store.table_name().to_owned())
            .increment(deleted as u64);
    }
    deleted
}

/// Whether this worker may clean up `lease`: its own, unowned, or abandoned.
fn eligible(lease: &Lease, idle: Duration, me: &str, patience: Duration) -> bool {
    match lease.holder() {
        None => true,
        Some(holder) if holder == me => true,
        Some(_) => idle > patience,
    }
}

/// Deletes `lease` if the rule allows; `Ok(false)` if another worker deleted or changed it
/// first; `Err` says why it is kept.
async fn clean<A: ListShards>(
    context: &ShardContext<A>,
    lease: &Lease,
    by_key: &HashMap<&str, &Lease>,
) -> Result<bool, String> {
    let key = lease.lease_key.as_str();
    if let Some(parent) = lease
        .parent_shard_ids
        .iter()
        .find(|parent| by_key.contains_key(parent.as_str()))
    {
        return Err(format!("its parent {parent} still has a lease"));
    }
    let mut children = lease.child_shard_ids.clone();
    let mut listed = None;
    if children.is_empty() {
        let shards = list_after(context, key).await?;
        let found = children_of(key, shards.clone());
        if !found.is_empty() {
            children = found.iter().map(|child| child.shard_id.clone()).collect();
            context
                .store
                .update_child_shards(key, &children)
                .await
                .map_err(|error| ErrorChain(&error).to_string())?;
            info!(lease_key = %key, ?children, "recorded the children of a finished lease");
        }
        listed = Some(shards);
    }
    let mut waiting = Vec::new();
    for child in &children {
        match by_key.get(child.as_str()) {
            Some(child_lease) => {
                if matches!(
                    child_lease.checkpoint,
                    Checkpoint::TrimHorizon | Checkpoint::AtTimestamp
                ) {
                    waiting.push(child.clone());
                }
            }
            None => {
                // A crash between the SHARD_END checkpoint and the children's leases (or an
                // older worker): create the child, or it waits on nothing forever.
                let shards = match &listed {
                    Some(shards) => shards.clone(),
                    None => list_after(context, key).await?,
                };
                if let Some(missing) = children_of(key, shards)
                    .into_iter()
                    .find(|found| &found.shard_id == child)
                {
                    let created = context
                        .store
                        .create_if_absent(&child_lease(&missing))
                        .await
                        .map_err(|error| ErrorChain(&error).to_string())?;
                    if created {
                        warn!(lease_key = %key, %child, "created the missing lease of a finished shard's child");
                    }
                }
                waiting.push(child.clone());
            }
        }
    }
    if !waiting.is_empty() {
        return Err(format!("children not started yet: {waiting:?}"));
    }
    let deleted = context
        .store
        .delete_if_unchanged(lease)
        .await
        .map_err(|error| ErrorChain(&error).to_string())?;
    if deleted {
        info!(lease_key = %key, ?children, "finished lease deleted: its children are being processed");
    }
    Ok(deleted)
}

async fn list_after<A: ListShards>(
    context: &ShardContext<A>,
    key: &str,
) -> Result<Vec<Shard>, String> {
    match context
        .api
        .list_shards(&context.stream, &ShardListing::After(key.to_owned()))
        .await
    {
        Ok(shards) => Ok(shards),
        // The stream is gone: nothing will ever need this lease.
        Err(error) if error.class() == Class::NotFound => Ok(Vec::new()),
        Err(error) => Err(format!("ListShards failed ({})", error.code())),
    }
}
