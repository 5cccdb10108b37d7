//! Waiting for a child's parents: a parent is done when its lease is at SHARD_END, or gone
//! (deleted by lease cleanup after its children started, or never leased: trimmed, or before
//! the application's initial position), or not a lease this application can read.

use tokio::sync::watch;
use tracing::{debug, warn};

use super::{ShardContext, Stop, wait_stop};
use crate::lease::{Lease, LeaseError};
use crate::scheduler::ShardPhase;

/// Polls the parents' leases until each is done; `Some(stop)` if told to stop first.
pub(super) async fn wait<A>(
    context: &ShardContext<A>,
    lease: &Lease,
    stop: &mut watch::Receiver<Option<Stop>>,
) -> Option<Stop> {
    let mut logged = false;
    loop {
        let mut pending = Vec::new();
        for parent in &lease.parent_shard_ids {
            match context.store.get(parent).await {
                Ok(Some(parent_lease)) if !parent_lease.is_finished() => {
                    pending.push(parent.clone());
                }
                Ok(_) => {}
                Err(LeaseError::Malformed { .. }) => {
                    warn!(%parent, "the parent's row is not a lease this worker can read; not waiting for it");
                }
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
        context.status.phase(
            &lease.lease_key,
            ShardPhase::WaitingOnParents {
                parents: pending.clone(),
            },
        );
        tokio::select! {
            reason = wait_stop(stop) => return Some(reason),
            () = tokio::time::sleep(context.config.parent_poll_interval) => {}
        }
    }
}
