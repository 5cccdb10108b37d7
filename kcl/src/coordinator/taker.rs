//! The take loop: every take interval, scan the lease table, judge expiry, plan with
//! [`plan_takes`] and take, concurrently (bounded).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, info, warn};

use super::error::{Chain, timed_out};
use super::expiry::ExpiryTracker;
use super::later;
use super::plan::{TakeInput, TakeReason, plan_takes};
use super::state::Shared;
use super::stats::TakeCycleStats;

/// Runs until `cancel` fires; a cycle whose takes have started is finished first.
pub(crate) async fn run(shared: Arc<Shared>, cancel: CancellationToken) {
    let interval = shared.config.take_interval();
    let mut tracker = ExpiryTracker::new(shared.config.failover_time());
    let mut next = Instant::now();
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
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
    let scan = match timeout(scan_limit, shared.store.list()).await {
        Ok(scan) => scan,
        Err(_) => Err(timed_out("Scan", shared.store.table_name(), scan_limit)),
    };
    let leases = match scan {
        Ok(leases) => leases,
        Err(err) => {
            warn!(error = %Chain(&err), "lease table scan failed");
            shared.with_stats(|stats| stats.scan_failures += 1);
            return None;
        }
    };
    let now = shared.clock.now();
    tracker.observe(&leases, now);
    let held = shared.held_keys();
    let expired = tracker.expired(&leases, &shared.worker_id, &held, now);
    let not_takeable = shared.not_takeable(now);
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
        planned: plan.takes.len(),
        ..TakeCycleStats::default()
    };
    if cancel.is_cancelled() {
        return None;
    }

    let by_key: HashMap<&str, &crate::lease::Lease> = leases
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
                let limit = shared.config.renew_interval();
                let result =
                    match timeout(limit, shared.store.take(&lease, &shared.worker_id)).await {
                        Ok(result) => result,
                        Err(_) => Err(timed_out("UpdateItem", shared.store.table_name(), limit)),
                    };
                let stolen = matches!(planned.reason, TakeReason::Stolen { .. });
                match result {
                    Ok(taken) => {
                        info!(
                            lease_key = %taken.lease_key,
                            counter = taken.lease_counter,
                            reason = ?planned.reason,
                            "lease taken"
                        );
                        shared.insert_taken(taken);
                        Some(stolen)
                    }
                    Err(err) if err.is_lease_lost() => {
                        debug!(lease_key = %lease.lease_key, "lease changed before the take; skipped");
                        None
                    }
                    Err(err) => {
                        warn!(lease_key = %lease.lease_key, error = %Chain(&err), "take failed");
                        None
                    }
                }
            }
            .instrument(Span::current()),
        );
    }
    while let Some(result) = takes.join_next().await {
        match result {
            Ok(Some(stolen)) => {
                cycle.taken += 1;
                cycle.stolen += usize::from(stolen);
            }
            Ok(None) | Err(_) => cycle.failed += 1,
        }
    }

    shared.with_stats(|stats| {
        stats.take_cycles += 1;
        stats.taken += cycle.taken as u64;
        stats.stolen += cycle.stolen as u64;
        stats.take_failures += cycle.failed as u64;
        stats.last_take = Some(cycle);
    });
    if cycle.planned > 0 {
        info!(
            leases = cycle.leases,
            live_workers = cycle.live_workers,
            target = cycle.target,
            needed = cycle.needed,
            expired = cycle.expired_seen,
            taken = cycle.taken,
            stolen = cycle.stolen,
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
