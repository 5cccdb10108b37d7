//! The take loop: every take interval (or at once when woken), scan the lease table, judge
//! expiry, plan with [`plan_takes`] and take, concurrently (bounded); in between, follow the
//! handoffs this worker asked for ([`super::handoff`]).

use std::collections::HashMap;
use std::sync::Arc;

use kinesis_common::ErrorChain;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, info, warn};

use super::error::within;
use super::expiry::ExpiryTracker;
use super::handoff;
use super::later;
use super::plan::{TakeInput, TakeReason, plan_takes};
use super::snapshot::ScanSnapshot;
use super::state::Shared;
use super::stats::TakeCycleStats;
use crate::lease::{Lease, LeaseError};

/// Runs until `cancel` fires; a cycle whose takes have started is finished first.
pub(crate) async fn run(shared: Arc<Shared>, cancel: CancellationToken) {
    let interval = shared.config.take_interval();
    let poll = shared.config.handoff_poll_interval();
    let mut tracker = ExpiryTracker::new(shared.config.failover_time());
    let mut next = Instant::now();
    // Kept across take cycles: a take interval shorter than the poll interval must not starve
    // the polls.
    let mut next_poll = later(Instant::now(), poll);
    loop {
        let pending = !shared.pending().is_empty();
        if !pending {
            next_poll = later(Instant::now(), poll);
        }
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            () = sleep_until(next_poll), if pending => {
                handoff::poll(&shared).await;
                next_poll = later(Instant::now(), poll);
                continue;
            }
            () = shared.wake_taker.notified() => {}
            () = sleep_until(next) => {}
        }
        let started = Instant::now();
        take_cycle(&shared, &mut tracker, &cancel).await;
        next = later(started, interval);
    }
    debug!("taker stopped");
}

/// One taking cycle. Returns its figures, or `None` when the scan failed or `cancel` fired
/// before any take was sent.
pub(crate) async fn take_cycle(
    shared: &Arc<Shared>,
    tracker: &mut ExpiryTracker,
    cancel: &CancellationToken,
) -> Option<TakeCycleStats> {
    let scan_limit = shared.config.take_interval();
    let table = shared.store.table_name();
    let scan = within("Scan", table, scan_limit, shared.store.list()).await;
    let leases = match scan {
        Ok(leases) => leases,
        Err(err) => {
            warn!(error = %ErrorChain(&err), "lease table scan failed");
            shared.with_stats(|stats| stats.scan_failures += 1);
            // What stood still while the table was unreachable proves nothing.
            tracker.reset();
            metrics::counter!("TakeLeases.Failures", "table" => shared.store.table_name().to_owned()).increment(1);
            return None;
        }
    };
    let now = shared.clock.now();
    tracker.observe(&leases, now);
    shared.watch_foreign(&leases);
    let held = shared.held_keys();
    let mut expired = tracker.expired(&leases, &shared.worker_id, &held, now);
    // A lease this worker asked for, let go of by its holder but not taken yet, is this
    // worker's own unheld lease for the tracker; it counts as this worker's load.
    let pending = shared.pending();
    expired.retain(|key, _| !pending.contains_key(key));
    // Handoffs asked for under this worker's id that this process is not waiting on: its own
    // request whose answer was lost, another process's with the same id, or an earlier run's.
    // Taking the lease would look to such a process exactly like the holder letting go, and it
    // would take it too: it is never taken here. While its holder renews, the holder answers
    // the request (and lets go to this id; the lease then expires as any own unheld lease).
    // Once the counter stood still for the failover time, the request is withdrawn, so the
    // lease goes back to its dead holder and expires for everyone, and a process waiting on
    // it sees it leave.
    let mut others_requests = Vec::new();
    let mut withdraw = Vec::new();
    for lease in &leases {
        if lease.is_owned_by(&shared.worker_id)
            && lease.is_handoff_pending()
            && !lease.is_held_by(&shared.worker_id)
            && !pending.contains_key(&lease.lease_key)
        {
            others_requests.push(lease.lease_key.clone());
            if expired.contains_key(&lease.lease_key) {
                withdraw.push(lease.clone());
            }
        }
    }
    let mut not_takeable = shared.not_takeable(now);
    not_takeable.extend(others_requests);
    let takeable: Vec<String> = leases
        .iter()
        .filter(|lease| {
            !lease.is_finished()
                && !not_takeable.contains(&lease.lease_key)
                && (lease.holder().is_none() || expired.contains_key(&lease.lease_key))
        })
        .map(|lease| lease.lease_key.clone())
        .collect();
    shared.publish_scan(ScanSnapshot {
        at: now,
        leases: leases
            .iter()
            .map(|lease| {
                let idle = tracker.idle(&lease.lease_key, now).unwrap_or_default();
                (lease.clone(), idle)
            })
            .collect(),
        takeable: takeable.clone(),
    });
    let plan = plan_takes(&TakeInput {
        worker_id: &shared.worker_id,
        leases: &leases,
        expired: &expired,
        failover_time: shared.config.failover_time(),
        max_leases: shared.config.max_leases_for_worker(),
        not_takeable: &not_takeable,
    });
    let mut cycle = TakeCycleStats {
        leases: plan.leases,
        live_workers: plan.live_workers,
        target: plan.target,
        needed: plan.needed,
        expired_seen: plan.expired,
        takeable: takeable.len(),
        planned: plan.takes.len(),
        ..TakeCycleStats::default()
    };
    if cancel.is_cancelled() {
        return None;
    }

    let by_key: HashMap<&str, &Lease> = leases
        .iter()
        .map(|lease| (lease.lease_key.as_str(), lease))
        .collect();
    let permits = Arc::new(Semaphore::new(
        shared.config.max_concurrent_requests().get(),
    ));
    let mut takes = JoinSet::new();
    for planned in plan.takes {
        let Some(&lease) = by_key.get(planned.lease_key.as_str()) else {
            continue;
        };
        let lease = lease.clone();
        let shared = shared.clone();
        let permits = permits.clone();
        takes.spawn(
            async move {
                // The semaphore is never closed.
                let _permit = permits.acquire_owned().await.ok();
                let steal = matches!(planned.reason, TakeReason::Stolen { .. });
                if steal && shared.config.graceful_handoff() {
                    return handoff::request(&shared, &lease)
                        .await
                        .then_some(Taken::Handoff);
                }
                take(&shared, &lease, &planned.reason)
                    .await
                    .then_some(if steal { Taken::Stolen } else { Taken::Free })
            }
            .instrument(Span::current()),
        );
    }
    while let Some(result) = takes.join_next().await {
        match result {
            Ok(Some(Taken::Free)) => cycle.taken += 1,
            Ok(Some(Taken::Stolen)) => {
                cycle.taken += 1;
                cycle.stolen += 1;
            }
            Ok(Some(Taken::Handoff)) => cycle.handoffs_requested += 1,
            Ok(None) | Err(_) => cycle.failed += 1,
        }
    }

    for lease in &withdraw {
        handoff::withdraw_orphan(shared, lease).await;
    }

    shared.with_stats(|stats| {
        stats.take_cycles += 1;
        stats.taken += cycle.taken as u64;
        stats.stolen += cycle.stolen as u64;
        stats.take_failures += cycle.failed as u64;
        stats.handoffs_requested += cycle.handoffs_requested as u64;
        stats.last_take = Some(cycle);
    });
    metrics::counter!("StolenLeases", "table" => shared.store.table_name().to_owned())
        .increment(cycle.stolen as u64);
    metrics::counter!("TakeLeases.Failures", "table" => shared.store.table_name().to_owned())
        .increment(cycle.failed as u64);
    metrics::gauge!("NeededLeases", "table" => shared.store.table_name().to_owned())
        .set(cycle.needed as f64);
    // Beside CurrentLeases, what an on-call engineer asks first: does this worker hold its share?
    metrics::gauge!("TargetLeases", "table" => shared.store.table_name().to_owned())
        .set(cycle.target as f64);
    metrics::gauge!("NumWorkers", "table" => shared.store.table_name().to_owned())
        .set(cycle.live_workers as f64);
    metrics::gauge!("TotalLeases", "table" => shared.store.table_name().to_owned())
        .set(cycle.leases as f64);
    if cycle.planned > 0 {
        info!(
            leases = cycle.leases,
            live_workers = cycle.live_workers,
            target = cycle.target,
            needed = cycle.needed,
            expired = cycle.expired_seen,
            taken = cycle.taken,
            stolen = cycle.stolen,
            handoffs_requested = cycle.handoffs_requested,
            failed = cycle.failed,
            "take cycle"
        );
    } else {
        debug!(
            leases = cycle.leases,
            live_workers = cycle.live_workers,
            target = cycle.target,
            needed = cycle.needed,
            expired = cycle.expired_seen,
            "take cycle"
        );
    }
    Some(cycle)
}

/// What one planned take came to.
enum Taken {
    Free,
    Stolen,
    Handoff,
}

/// Takes `lease` (conditional on the copy's counter); on success it becomes a holding.
pub(crate) async fn take(shared: &Shared, lease: &Lease, reason: &TakeReason) -> bool {
    let limit = shared.config.renew_interval();
    let sent_at = shared.clock.now();
    let table = shared.store.table_name();
    let result = within(
        "UpdateItem",
        table,
        limit,
        shared.store.take(lease, &shared.worker_id),
    )
    .await;
    match result {
        Ok(taken) => {
            info!(
                lease_key = %taken.lease_key,
                counter = taken.lease_counter,
                reason = ?reason,
                checkpoint = %taken.checkpoint,
                "lease taken"
            );
            shared.insert_taken(taken, sent_at);
            metrics::counter!("TakenLeases", "table" => shared.store.table_name().to_owned())
                .increment(1);
            true
        }
        Err(err) => {
            not_written(lease, "take", &err);
            false
        }
    }
}

/// Logs why a conditional write to `lease` (`what`: "take", "handoff request") was not made:
/// the lease changed since the scan (expected: skipped), or the call failed.
pub(super) fn not_written(lease: &Lease, what: &str, err: &LeaseError) {
    if err.is_lease_lost() {
        debug!(lease_key = %lease.lease_key, "lease changed before the {what}; skipped");
    } else {
        warn!(lease_key = %lease.lease_key, error = %ErrorChain(err), "{what} failed");
    }
}
