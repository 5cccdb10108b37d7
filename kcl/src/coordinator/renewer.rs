//! The renew loop: every renew interval, renew every held lease, concurrently (bounded).
//!
//! - Success: the stored copy replaces the held one.
//! - A failed condition ([`LeaseError::LeaseLost`]): the lease is re-read once. If this worker
//!   still owns it at exactly the next counter, the renewal itself was applied and only its
//!   answer was lost (the SDK retried a request that had gone through, as the Java KCL also
//!   checks), so the lease is kept; otherwise it is dropped at once.
//! - Any other failure (transport, throttling, timeout): retried next interval; once the lease
//!   has gone unrenewed for longer than the failover time it is dropped, since another worker
//!   has likely taken it by then.
//!
//! A lease with a write in flight (a checkpoint, a release) is skipped this cycle: that write
//! bumps the counter itself, and two writes expecting one counter would fail each other.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, trace, warn};

use super::error::{Chain, timed_out};
use super::later;
use super::state::{DropReason, HeldRef, Shared};

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
    let Some((lease, last_renewed)) = shared.current(&held) else {
        return;
    };
    let limit = shared.config.renew_interval();
    let result = match timeout(limit, shared.store.renew(&lease)).await {
        Ok(result) => result,
        Err(_) => Err(timed_out("UpdateItem", shared.store.table_name(), limit)),
    };
    match result {
        Ok(renewed) => {
            trace!(lease_key = %held.key, counter = renewed.lease_counter, "lease renewed");
            shared.with_stats(|stats| stats.renewals += 1);
            shared.after_write(&held, renewed);
        }
        Err(err) if err.is_lease_lost() => {
            let stored = timeout(limit, shared.store.get(&held.key)).await;
            match stored {
                Ok(Ok(Some(stored)))
                    if stored.is_owned_by(&shared.worker_id)
                        && Some(stored.lease_counter) == lease.lease_counter.checked_add(1) =>
                {
                    debug!(
                        lease_key = %held.key,
                        counter = stored.lease_counter,
                        "renewal applied although its condition failed (retried request); kept"
                    );
                    shared.with_stats(|stats| stats.renewals += 1);
                    shared.after_write(&held, stored);
                }
                _ => {
                    shared.remove(&held, DropReason::Lost);
                }
            }
        }
        Err(err) => {
            shared.with_stats(|stats| stats.renew_failures += 1);
            let unrenewed = shared.clock.now().saturating_duration_since(last_renewed);
            if unrenewed > shared.config.failover_time() {
                warn!(lease_key = %held.key, error = %Chain(&err), "renewal failed");
                shared.remove(&held, DropReason::NotRenewed);
            } else {
                warn!(
                    lease_key = %held.key,
                    error = %Chain(&err),
                    unrenewed_for = ?unrenewed,
                    "renewal failed; retrying next interval"
                );
            }
        }
    }
}
