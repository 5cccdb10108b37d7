//! The renew loop: every renew interval, renew every held lease, concurrently (bounded).
//!
//! - Success: the stored copy replaces the held one, and the holding is valid for the
//!   failover time (less a margin) from when the renewal was sent (see [`super::state`]).
//! - A failed condition ([`LeaseError::LeaseLost`](crate::lease::LeaseError::LeaseLost)): the
//!   lease is re-read once. If this worker still owns it at exactly the next counter and the
//!   holding is still valid, this renewal or an earlier one whose answer was lost was applied
//!   (the SDK retried a request that had gone through, as the Java KCL also checks), so the
//!   lease is kept, valid from the earliest of those writes (see [`super::state`] for why a
//!   holding that ran out is dropped instead). If another worker asked for it (this worker is
//!   its `checkpointOwner`), the copy is adopted, the handoff is published and the renewal is
//!   retried with the new copy. Otherwise it is dropped at once.
//! - Any other failure (transport, throttling, timeout): retried next interval. The lease is
//!   never dropped for that: once it has gone unrenewed for too long the holding is paused
//!   (no records are delivered) before any other worker may take it, and the next renewal
//!   that gets through either resumes it or finds it taken.
//!
//! A lease with a write in flight (a checkpoint, a release) is skipped this cycle: that write
//! bumps the counter itself, and two writes expecting one counter would fail each other.

use std::sync::Arc;

use kinesis_common::ErrorChain;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, trace, warn};

use super::error::within;
use super::later;
use super::state::{Conflict, DropReason, HeldRef, Shared, Wrote, may_have_applied};

/// Runs until `cancel` fires; a cycle in progress is finished first.
pub(crate) async fn run(shared: Arc<Shared>, cancel: CancellationToken) {
    let interval = shared.config.renew_interval();
    let mut next = Instant::now();
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            () = sleep_until(next) => {}
        }
        let started = Instant::now();
        renew_all(&shared).await;
        next = later(started, interval);
    }
    debug!("renewer stopped");
}

/// Renews every held lease once.
pub(crate) async fn renew_all(shared: &Arc<Shared>) {
    let leases = shared.held_refs();
    metrics::gauge!("CurrentLeases", "table" => shared.store.table_name().to_owned())
        .set(leases.len() as f64);
    if leases.is_empty() {
        return;
    }
    let permits = Arc::new(Semaphore::new(
        shared.config.max_concurrent_requests().get(),
    ));
    let mut renewals = JoinSet::new();
    for held in leases {
        let shared = shared.clone();
        let permits = permits.clone();
        renewals.spawn(
            async move {
                // The semaphore is never closed.
                let Ok(_permit) = permits.acquire_owned().await else {
                    return;
                };
                renew_one(&shared, held).await;
            }
            .instrument(Span::current()),
        );
    }
    while renewals.join_next().await.is_some() {}
}

async fn renew_one(shared: &Shared, held: HeldRef) {
    let Ok(_write) = held.write_lock.clone().try_lock_owned() else {
        trace!(lease_key = %held.key, "write in flight; renewal skipped");
        return;
    };
    // Once for the copy held, and again (twice at most) with a copy adopted after a failed
    // condition: another worker asked for the lease, or an unanswered write of this worker's
    // moved the counter.
    for _ in 0..3 {
        let Some((lease, renewed_at)) = shared.current(&held) else {
            return;
        };
        let limit = shared.config.renew_interval();
        let sent_at = shared.clock.now();
        let table = shared.store.table_name();
        let result = within("UpdateItem", table, limit, shared.store.renew(&lease)).await;
        match result {
            Ok(renewed) => {
                trace!(lease_key = %held.key, counter = renewed.lease_counter, "lease renewed");
                shared.with_stats(|stats| stats.renewals += 1);
                shared.after_write(&held, renewed, sent_at, DropReason::Lost);
                return;
            }
            Err(err) if err.is_lease_lost() => {
                let reread = match timeout(limit, shared.store.get(&held.key)).await {
                    Ok(Ok(stored)) => Ok(stored),
                    _ => Err(()),
                };
                match shared.resolve_conflict(&held, &lease, reread, sent_at, &Wrote::Counter) {
                    Conflict::Applied(stored, moved_at) => {
                        debug!(
                            lease_key = %held.key,
                            counter = stored.lease_counter,
                            "renewal applied although its condition failed (an unanswered or retried request); kept"
                        );
                        shared.with_stats(|stats| stats.renewals += 1);
                        shared.after_write(&held, *stored, moved_at, DropReason::Lost);
                        return;
                    }
                    Conflict::Retry => continue,
                    Conflict::Lost => return,
                    Conflict::Unreadable => {
                        shared.with_stats(|stats| stats.renew_failures += 1);
                        warn!(lease_key = %held.key, "renewal failed its condition and the lease could not be re-read; retrying next interval");
                        return;
                    }
                }
            }
            Err(err) => {
                if may_have_applied(&err) {
                    shared.unanswered(&held, lease.lease_counter, sent_at);
                }
                shared.with_stats(|stats| stats.renew_failures += 1);
                metrics::counter!("RenewLease.Failures", "table" => shared.store.table_name().to_owned()).increment(1);
                let unrenewed = shared.clock.now().saturating_duration_since(renewed_at);
                if unrenewed >= shared.validity_span() {
                    warn!(
                        lease_key = %held.key,
                        error = %ErrorChain(&err),
                        unrenewed_for = ?unrenewed,
                        "renewal failed; delivery paused until a renewal gets through"
                    );
                } else {
                    warn!(
                        lease_key = %held.key,
                        error = %ErrorChain(&err),
                        unrenewed_for = ?unrenewed,
                        "renewal failed; retrying next interval"
                    );
                }
                return;
            }
        }
    }
}
