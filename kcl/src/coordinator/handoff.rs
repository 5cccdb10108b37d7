//! Graceful handoffs, the taker's side (the Java KCL 3.x's `checkpointOwner` protocol).
//!
//! ```text
//!  taker T                         lease row                          holder H
//!  request_handoff ──────► leaseOwner=T, checkpointOwner=H
//!                                    │      H's next renewal fails its owner condition; H
//!                                    │      re-reads, finds itself checkpointOwner, adopts
//!                                    │      the copy and keeps renewing it; its processor
//!                                    │      gets shutdown_requested and checkpoints
//!                          checkpointOwner removed  ◄──────────────── release (let go)
//!  poll sees no checkpointOwner
//!  take ─────────────────► leaseOwner=T, counter+1: T processes from H's last checkpoint
//! ```
//!
//! The request carries an id (`handoffRequestId`, this crate's attribute) that the holder's
//! renewals and release keep and that any take or withdrawal removes: T takes only a lease
//! that still carries its request's id, so a lease taken and asked for again in between (by
//! another process with T's worker id, which `leaseOwner` cannot tell apart) is never mistaken
//! for the holder letting go.
//!
//! T re-reads the leases it asked for every [`handoff_poll_interval`]. It takes the lease
//! without waiting further once the holder let go (seen within the validity span of a read
//! that still found it held: a let-go state older than that may be another process's with
//! T's id, which took it as expired), once the [`handoff_timeout`] (at least the failover
//! time) has passed (a holder that ignores `checkpointOwner`, like the Java KCL 2.x, keeps
//! processing until T's take makes its next renewal fail), or once the counter stood still
//! for the failover time (the holder died). It gives up when the lease went to someone else,
//! was finished, or is gone.
//!
//! [`handoff_poll_interval`]: super::CoordinatorConfig::handoff_poll_interval
//! [`handoff_timeout`]: super::CoordinatorConfig::handoff_timeout

use kinesis_common::ErrorChain;
use tokio::time::timeout;
use tracing::{debug, info, warn};

use super::error::within;
use super::plan::TakeReason;
use super::state::Shared;
use super::taker::{not_written, take};
use crate::lease::Lease;

/// Asks the holder of `lease` (as scanned) to hand it over; returns whether the request was
/// written.
pub(crate) async fn request(shared: &Shared, lease: &Lease) -> bool {
    let limit = shared.config.renew_interval();
    let sent_at = shared.clock.now();
    let table = shared.store.table_name();
    let request = shared.store.request_handoff(lease, &shared.worker_id);
    let result = within("UpdateItem", table, limit, request).await;
    match result {
        Ok(stored) => {
            info!(
                lease_key = %stored.lease_key,
                from = ?stored.checkpoint_owner,
                "handoff requested"
            );
            shared.add_pending(stored, shared.clock.now(), sent_at);
            true
        }
        Err(err) => {
            not_written(lease, "handoff request", &err);
            false
        }
    }
}

/// Re-reads every lease this worker waits on and takes those that are ready.
pub(crate) async fn poll(shared: &Shared) {
    let limit = shared.config.renew_interval();
    for (key, pending) in shared.pending() {
        let sent_at = shared.clock.now();
        let stored = match timeout(limit, shared.store.get(&key)).await {
            Ok(Ok(stored)) => stored,
            Ok(Err(err)) => {
                debug!(lease_key = %key, error = %ErrorChain(&err), "reading a handed-over lease failed");
                continue;
            }
            Err(_) => continue,
        };
        let Some(stored) = stored else {
            shared.drop_pending(&key);
            continue;
        };
        // The request's id goes with every state of this handoff (the holder renewing, then
        // letting go); any take or withdrawal removes it, another request replaces it.
        let another_request = stored.handoff_request_id != pending.lease.handoff_request_id;
        if !stored.is_owned_by(&shared.worker_id) || stored.is_finished() || another_request {
            shared.drop_pending(&key);
            continue;
        }
        let now = shared.clock.now();
        shared.update_pending(stored.clone(), now, sent_at);
        let counter_since = if stored.lease_counter == pending.lease.lease_counter {
            pending.counter_since
        } else {
            now
        };
        // Let go of, as seen within the validity span of a read that still found it held: no
        // other process can have taken it since (a take waits until the counter stood still
        // for the failover time), not even one with this worker's id, to which a take looks
        // exactly like a release. A let-go older than that is judged by its counter alone.
        let let_go = stored.checkpoint_owner.is_none()
            && pending
                .held_seen_at
                .is_some_and(|at| now.saturating_duration_since(at) < shared.validity_span());
        if stored.checkpoint_owner.is_none()
            && !let_go
            && pending.lease.checkpoint_owner.is_none()
            && stored.lease_counter != pending.lease.lease_counter
        {
            // Let go of, and renewed since by a process with this worker's id: not ours to
            // take (the taker's scans report it).
            shared.drop_pending(&key);
            continue;
        }
        // Forced only once the holder, if it never saw the request, cannot be delivering any
        // more (its renewals all failed since, or it would have seen it).
        let timed_out = stored.checkpoint_owner.is_some()
            && now.saturating_duration_since(pending.requested_at)
                >= shared
                    .config
                    .handoff_timeout()
                    .max(shared.config.failover_time());
        let holder_dead =
            now.saturating_duration_since(counter_since) > shared.config.failover_time();
        if !(let_go || timed_out || holder_dead) {
            continue;
        }
        let reason = TakeReason::Expired {
            owner: stored.holder().unwrap_or_default().to_owned(),
            idle: now.saturating_duration_since(counter_since),
        };
        let taken = take(shared, &stored, &reason).await;
        if !taken {
            // Whatever changed the lease since the read, a let-go state seen next must be
            // preceded by the holder seen holding it again.
            shared.forget_held_seen(&key);
        }
        if taken {
            shared.with_stats(|stats| {
                if let_go {
                    stats.handoffs_completed += 1;
                } else {
                    stats.handoffs_forced += 1;
                }
            });
            if let_go {
                info!(lease_key = %key, waited = ?now.saturating_duration_since(pending.requested_at), "handoff completed");
            } else {
                warn!(
                    lease_key = %key,
                    holder = ?stored.checkpoint_owner,
                    waited = ?now.saturating_duration_since(pending.requested_at),
                    "handoff not answered; lease taken anyway"
                );
            }
        }
    }
}

/// Withdraws every handoff this worker waits on (it is leaving): the holder keeps its lease,
/// or, if it let go already, the lease is released for anyone to take.
pub(crate) async fn cancel_all(shared: &Shared) {
    let limit = shared.config.renew_interval();
    for (key, pending) in shared.take_pending() {
        let stored = match timeout(limit, shared.store.get(&key)).await {
            Ok(Ok(Some(stored))) => stored,
            _ => pending.lease,
        };
        if !stored.is_owned_by(&shared.worker_id) {
            continue;
        }
        let result = if stored.checkpoint_owner.is_some() {
            timeout(limit, shared.store.cancel_handoff(&stored)).await
        } else {
            timeout(limit, shared.store.release(&stored)).await
        };
        match result {
            Ok(Ok(_)) => info!(lease_key = %key, "handoff withdrawn"),
            Ok(Err(err)) => {
                debug!(lease_key = %key, error = %ErrorChain(&err), "withdrawing a handoff failed")
            }
            Err(_) => debug!(lease_key = %key, "withdrawing a handoff timed out"),
        }
    }
}

/// Withdraws a handoff asked for under this worker's id that this process does not wait on,
/// whose holder stopped renewing (see the taker).
pub(crate) async fn withdraw_orphan(shared: &Shared, lease: &Lease) {
    let limit = shared.config.renew_interval();
    match timeout(limit, shared.store.cancel_handoff(lease)).await {
        Ok(Ok(_)) => warn!(
            lease_key = %lease.lease_key,
            holder = ?lease.checkpoint_owner,
            "withdrew a handoff asked for under this worker id that this process was not waiting on, from a holder that stopped renewing"
        ),
        Ok(Err(err)) => {
            debug!(lease_key = %lease.lease_key, error = %ErrorChain(&err), "withdrawing an orphaned handoff failed")
        }
        Err(_) => debug!(lease_key = %lease.lease_key, "withdrawing an orphaned handoff timed out"),
    }
}
