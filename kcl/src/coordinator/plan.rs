//! The taking decision as a pure function: [`plan_takes`].
//!
//! # The algorithm
//!
//! Given the last scan of the lease table, the leases this worker judges expired and its id:
//!
//! 0. **Finished leases** (checkpoint `SHARD_END`, waiting for cleanup) are left out of
//!    everything below: never taken, never counted. A lease being handed over (a
//!    `checkpointOwner` is set) counts for its new owner (`leaseOwner`) and is never stolen.
//! 1. **Live workers** are the owners of non-expired leases, plus this worker. (A worker
//!    holding nothing is invisible in the table; it shows up once it holds a lease.)
//! 2. **Target** = ⌈leases / live workers⌉, capped by `max_leases`. **Needed** = target minus
//!    the non-expired leases this worker owns. Nothing needed: nothing is taken or stolen.
//! 3. **Free leases first.** Unowned and expired leases are taken, up to the need, in this
//!    order: leases expired for more than 3 × the failover time (as the Java KCL), oldest first;
//!    then unowned leases; then the other expired leases, oldest first; and within each class
//!    leases that can be processed now before children whose parents are not finished yet
//!    (so a worker limited by `max_leases` does not fill up with children waiting on parents
//!    nobody takes).
//! 4. **Steal the rest in one cycle.** While still under target, take one lease from the most
//!    loaded other worker, provided it owns at least two more than this worker will after the
//!    take; recount and repeat. The Java KCL 2.x steals at most one lease per cycle (slow
//!    rebalancing) and can trade a lease back and forth; here:
//!    - a worker at target never steals, and a worker never steals across an imbalance of one
//!      lease (with 8 leases over 3 workers, 3/3/2 is final);
//!    - a victim never ends up with fewer leases than the stealer, so every steal strictly
//!      lowers the sum of squared lease counts: the fleet cannot oscillate;
//!    - a victim above target is never taken below target. The one exception is a victim
//!      exactly at target when the stealer is two or more below it (7 leases as 3/3/1: target 3,
//!      nobody above it, so the stricter rule would leave 3/3/1 forever); the victim then drops
//!      to target − 1, still at least the stealer's new count, and the result (3/2/2) is final.
//!
//! Ties (which free lease, which victim, which of a victim's leases) are broken by a hash of
//! this worker's id and the lease key or victim id: deterministic for one worker, different
//! across workers, so workers planning at the same moment tend to pick different leases.
//!
//! # Convergence
//!
//! The simulations in this module's tests run fleets of 1 to 6 workers over up to 40 leases
//! from random starts (leases unowned, owned by anyone, or left by a dead worker), and every
//! start with 3 workers and up to 5 leases in every order. When workers take in turn, each
//! seeing the table as the previous one left it, every start is balanced after **one** cycle
//! and nothing moves afterwards. When all workers plan from the same scan and race (a fleet
//! started at once), conditional writes decide the races and convergence takes up to 4 cycles
//! (2 for half of the random starts, 3 or 4 for a fifth), again with no movement once
//! balanced.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;
use std::time::Duration;

use crate::lease::Lease;

/// How many failover times a lease must stand still to be taken before all others.
pub(crate) const VERY_OLD_FAILOVER_MULTIPLIER: u32 = 3;

/// The input of [`plan_takes`]: one scan of the lease table, seen by one worker.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TakeInput<'a> {
    /// This worker's id.
    pub(crate) worker_id: &'a str,
    /// Every lease in the table.
    pub(crate) leases: &'a [Lease],
    /// The owned leases this worker may take as expired, with how long each counter has stood
    /// still (see [`ExpiryTracker::expired`](super::ExpiryTracker::expired)). Keys of unowned
    /// leases are ignored: unowned leases are takeable anyway.
    pub(crate) expired: &'a BTreeMap<String, Duration>,
    /// The failover time (leases idle for more than 3 × this are taken first).
    pub(crate) failover_time: Duration,
    /// The most leases this worker may hold.
    pub(crate) max_leases: Option<NonZeroUsize>,
    /// Leases this worker must not take this cycle (those it holds, those it just released).
    /// They still count towards the target and the owners' loads.
    pub(crate) not_takeable: &'a BTreeSet<String>,
}

/// Why a lease is in a [`TakePlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TakeReason {
    /// Nobody owns it.
    Unowned,
    /// Its owner stopped renewing it.
    Expired {
        /// The owner in the scan.
        owner: String,
        /// How long its counter has stood still.
        idle: Duration,
    },
    /// Taken from a live worker to balance the load.
    Stolen {
        /// The worker it is taken from.
        from: String,
    },
}

/// One lease to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlannedTake {
    /// The lease.
    pub(crate) lease_key: String,
    /// Why.
    pub(crate) reason: TakeReason,
}

/// What one worker should take in one taking cycle, and the figures behind it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct TakePlan {
    /// The leases to take, in order: free leases first, then stolen ones.
    pub(crate) takes: Vec<PlannedTake>,
    /// Leases in the table.
    pub(crate) leases: usize,
    /// Live workers, this one included.
    pub(crate) live_workers: usize,
    /// Leases this worker should hold.
    pub(crate) target: usize,
    /// Non-expired leases this worker owned in the scan.
    pub(crate) owned: usize,
    /// Leases this worker is short of its target.
    pub(crate) needed: usize,
    /// Owned leases judged expired.
    pub(crate) expired: usize,
    /// Unowned leases.
    pub(crate) unowned: usize,
}

impl TakePlan {
    /// How many of [`takes`](Self::takes) are steals.
    #[cfg(test)]
    pub(crate) fn stolen(&self) -> usize {
        self.takes
            .iter()
            .filter(|take| matches!(take.reason, TakeReason::Stolen { .. }))
            .count()
    }
}

/// Decides which leases `input.worker_id` takes this cycle (see the [module docs](self)).
pub(crate) fn plan_takes(input: &TakeInput<'_>) -> TakePlan {
    let me = input.worker_id;
    let unfinished: Vec<&Lease> = input.leases.iter().filter(|l| !l.is_finished()).collect();
    let is_expired =
        |lease: &Lease| lease.holder().is_some() && input.expired.contains_key(&lease.lease_key);
    // Children whose parents still have unfinished leases cannot be processed yet.
    let unfinished_keys: BTreeSet<&str> = unfinished.iter().map(|l| l.lease_key.as_str()).collect();
    let is_blocked = |lease: &Lease| {
        lease
            .parent_shard_ids
            .iter()
            .any(|parent| unfinished_keys.contains(parent.as_str()))
    };

    // Loads of live workers: non-expired leases per owner (the new owner during a handoff).
    let mut loads: BTreeMap<&str, usize> = BTreeMap::from([(me, 0)]);
    for lease in &unfinished {
        if let Some(owner) = lease.lease_owner.as_deref().or(lease.holder())
            && !is_expired(lease)
        {
            *loads.entry(owner).or_default() += 1;
        }
    }
    let live_workers = loads.len();
    let leases = unfinished.len();
    let mut target = leases.div_ceil(live_workers);
    if let Some(max) = input.max_leases {
        target = target.min(max.get());
    }
    let owned = loads.get(me).copied().unwrap_or(0);
    let needed = target.saturating_sub(owned);
    let mut plan = TakePlan {
        takes: Vec::new(),
        leases,
        live_workers,
        target,
        owned,
        needed,
        expired: unfinished.iter().filter(|l| is_expired(l)).count(),
        unowned: unfinished.iter().filter(|l| l.holder().is_none()).count(),
    };
    if needed == 0 {
        return plan;
    }

    // Free leases: very old expired, then unowned, then expired; oldest first.
    let very_old = input
        .failover_time
        .saturating_mul(VERY_OLD_FAILOVER_MULTIPLIER);
    // (class, blocked by a parent), longest idle first, tie-break, the take.
    type Candidate = ((u8, bool), Reverse<Duration>, u64, PlannedTake);
    let mut free: Vec<Candidate> = unfinished
        .iter()
        .filter(|lease| !input.not_takeable.contains(&lease.lease_key))
        .filter_map(|lease| {
            let key = &lease.lease_key;
            let (class, idle, reason) = match (lease.holder(), input.expired.get(key)) {
                (None, _) => (1, Duration::ZERO, TakeReason::Unowned),
                (Some(owner), Some(&idle)) => (
                    if idle > very_old { 0 } else { 2 },
                    idle,
                    TakeReason::Expired {
                        owner: owner.to_owned(),
                        idle,
                    },
                ),
                (Some(_), None) => return None,
            };
            let class = (class, is_blocked(lease));
            let take = PlannedTake {
                lease_key: key.clone(),
                reason,
            };
            Some((class, Reverse(idle), tie_break(me, key), take))
        })
        .collect();
    free.sort_by_key(|(class, idle, tie, _)| (*class, *idle, *tie));
    plan.takes = free
        .into_iter()
        .take(needed)
        .map(|(_, _, _, take)| take)
        .collect();

    // Steal the rest from the most loaded workers.
    let mut mine = owned + plan.takes.len();
    let mut remaining = needed - plan.takes.len();
    if remaining == 0 {
        return plan;
    }
    let mut stealable: BTreeMap<&str, Vec<&Lease>> = BTreeMap::new();
    for lease in &unfinished {
        match lease.lease_owner.as_deref() {
            Some(owner)
                if owner != me
                    && !lease.is_handoff_pending()
                    && !is_expired(lease)
                    && !input.not_takeable.contains(&lease.lease_key) =>
            {
                stealable.entry(owner).or_default().push(lease);
            }
            _ => {}
        }
    }
    for leases in stealable.values_mut() {
        // Popped from the back: the lowest tie-break value goes first, blocked children last.
        leases.sort_by_key(|lease| (!is_blocked(lease), Reverse(tie_break(me, &lease.lease_key))));
    }
    loads.remove(me);
    while remaining > 0 {
        let victim = loads
            .iter()
            .filter(|(owner, _)| stealable.get(*owner).is_some_and(|l| !l.is_empty()))
            .max_by_key(|(owner, load)| (**load, Reverse(tie_break(me, owner))))
            .map(|(owner, load)| (*owner, *load));
        let Some((victim, load)) = victim else { break };
        if load < mine + 2 {
            break;
        }
        let Some(lease) = stealable.get_mut(victim).and_then(Vec::pop) else {
            break;
        };
        plan.takes.push(PlannedTake {
            lease_key: lease.lease_key.clone(),
            reason: TakeReason::Stolen {
                from: victim.to_owned(),
            },
        });
        if let Some(load) = loads.get_mut(victim) {
            *load -= 1;
        }
        mine += 1;
        remaining -= 1;
    }
    plan
}

/// A hash of `(worker, item)` (FNV-1a, then a SplitMix64 finalizer): stable across runs and
/// Rust versions, different across workers.
fn tie_break(worker: &str, item: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in worker.bytes().chain([0xff]).chain(item.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

#[cfg(test)]
mod tests;
