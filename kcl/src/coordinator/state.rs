//! The state the renewer, the taker and the handle share: the held leases, the published maps,
//! the counters.
//!
//! One std mutex guards it, held only for short synchronous sections. Each held lease also has
//! an async write lock that serializes the conditional writes to it (renew, checkpoint,
//! release): two writes racing on one counter would fail each other.
//!
//! # Validity
//!
//! Another worker may take a lease once its counter has stood still for the failover time in
//! that worker's own scans, counted from a scan made after the last write this worker got
//! through. That write was applied at some moment after it was sent, so a holding is *valid*
//! until the send time of its last successful write plus the failover time, minus a margin
//! ([`Shared::validity`]). Shard consumers deliver records only while their holding is valid;
//! a holding that runs out is *paused*, not dropped: the renewer keeps trying, and the first
//! renewal that gets through either makes it valid again (nobody took it: processing resumes
//! where it stopped) or finds it taken (it is dropped as lost).
//!
//! # Writes whose answer was lost
//!
//! A write that timed out or failed in transport may still have been applied; so may a write
//! the SDK retried, whose retry then fails its condition. Such a write moves the counter
//! without this worker knowing, and the next write, expecting the old counter, fails its
//! condition. The re-read ([`Shared::resolve_conflict`]) then shows this worker's lease one
//! counter on, and decides:
//!
//! - the write counts as applied only when what it wrote is stored (the checkpoint, the
//!   pending checkpoint, the release; a renewal writes nothing but the counter);
//! - otherwise the fresh copy is adopted and the write retried on its counter;
//! - validity counts from the write that moved the counter: the earliest unanswered write at
//!   the old counter (or the write itself, for a retried request), never from the retry;
//! - a counter moved while the holding was *not* valid is not adopted: another process may
//!   have taken the lease meanwhile (every take waits until the counter stood still for the
//!   failover time, that is until this holding ran out), and one with this worker's id would
//!   look exactly like this worker's own unanswered write. The holding is dropped instead.
//!
//! # Two processes with one worker id
//!
//! Worker ids must be unique. Two processes started with the same id are detected when a
//! lease stored under the id moves in a way this process's writes cannot explain: the counter
//! of a held lease two or more ahead of the copy, a write's content missing at the next
//! counter with no unanswered write to explain it, or (in the taker's scans) a lease under the
//! id that this process does not hold whose counter keeps moving. Each is reported loudly
//! (an error event, the `DuplicateWorkerId` metric, [`CoordinatorStats::duplicate_worker_detections`]).
//! The rule that keeps both from delivering: a process never takes a lease stored under its id
//! before its counter stood still for the failover time (as for any other owner's lease), and
//! the process that finds a held lease moved without it drops the holding at once, without
//! releasing it (the other process keeps renewing it). Neither takes the other's leases back,
//! so nothing moves back and forth.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex as AsyncMutex, Notify, watch};
use tracing::{error, info, warn};

use super::clock::Clock;
use super::config::CoordinatorConfig;
use super::snapshot::ScanSnapshot;
use super::stats::CoordinatorStats;
use crate::lease::store::LeaseStore;
use crate::lease::{Checkpoint, Lease, LeaseError};

/// What the handle and both loops share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn LeaseStore>,
    pub(crate) worker_id: String,
    pub(crate) config: CoordinatorConfig,
    pub(crate) clock: Arc<dyn Clock>,
    state: Mutex<State>,
    publisher: watch::Sender<BTreeMap<String, Lease>>,
    handoffs: watch::Sender<BTreeSet<String>>,
    scans: watch::Sender<Option<Arc<ScanSnapshot>>>,
    /// Woken on every change of a holding's validity or existence.
    changed: Notify,
    /// Wakes the taker for a cycle now.
    pub(crate) wake_taker: Notify,
}

#[derive(Debug, Default)]
struct State {
    held: BTreeMap<String, Held>,
    /// Leases this worker released, and when: not taken back for one failover time.
    released: HashMap<String, Instant>,
    /// Finished leases (SHARD_END) this worker held: no longer renewed, waiting for cleanup.
    finished: BTreeMap<String, Lease>,
    /// Handoffs this worker asked for and waits on.
    pending: BTreeMap<String, PendingHandoff>,
    /// Leases stored under this worker's id that it does not hold: the counter first seen,
    /// and whether their moving was reported.
    foreign: HashMap<String, (u64, bool)>,
    next_epoch: u64,
    stats: CoordinatorStats,
}

/// One held lease.
#[derive(Debug)]
struct Held {
    /// The latest copy (its counter is the one the next write expects).
    current: Lease,
    /// Tells this holding apart from an earlier one of the same lease.
    epoch: u64,
    /// When the last successful write to the lease (take, renew, checkpoint) was sent.
    renewed_at: Instant,
    /// When the earliest write at the current counter that got no answer (it may have been
    /// applied) was sent.
    unanswered_at: Option<Instant>,
    write_lock: Arc<AsyncMutex<()>>,
}

/// A handoff this worker asked for: the holder was written as `checkpointOwner`.
#[derive(Debug, Clone)]
pub(crate) struct PendingHandoff {
    /// The stored lease after the request (or the latest poll).
    pub(crate) lease: Lease,
    pub(crate) requested_at: Instant,
    /// When the counter was last seen to change.
    pub(crate) counter_since: Instant,
    /// When the last read that found the holder still holding it (or the request) was sent;
    /// `None` after a take of the let-go lease failed (someone else took it since).
    pub(crate) held_seen_at: Option<Instant>,
}

/// A handle on one holding of a lease, for a write: updates and removals through it apply only
/// if the lease is still held in the same holding.
#[derive(Debug, Clone)]
pub(crate) struct HeldRef {
    pub(crate) key: String,
    pub(crate) epoch: u64,
    pub(crate) write_lock: Arc<AsyncMutex<()>>,
}

/// Whether a holding may deliver records now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Validity {
    /// Until this instant.
    Valid(Instant),
    /// Not renewed in time: paused until a renewal gets through.
    Expired,
    /// The holding ended.
    Gone,
}

/// Why a lease leaves the held set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// A conditional write failed: another worker took it.
    Lost,
    /// This worker released it.
    Released,
    /// This worker handed it over to the worker that asked for it.
    HandedOff,
    /// The shard was processed to its end; the lease waits for cleanup.
    Finished,
    /// Another process with this worker's id moves the lease.
    Duplicate,
}

/// What a write to a held lease stores besides the counter: after its condition failed, the
/// re-read tells from it whether the write was applied.
#[derive(Debug, Clone)]
pub(crate) enum Wrote {
    /// Nothing the coordinator can check (a renewal, or a write of the application's).
    Counter,
    /// This checkpoint (pending checkpoint cleared).
    Checkpoint(Checkpoint),
    /// This pending checkpoint and state.
    Pending(Checkpoint, Option<Vec<u8>>),
    /// A release (or the end of a handoff).
    Release,
    /// When a lease at `LATEST` was first read (whole milliseconds).
    LatestStart(std::time::SystemTime),
}

impl Wrote {
    /// Whether `stored`, one counter after `attempted`, holds what this write wrote.
    fn is_stored(&self, attempted: &Lease, stored: &Lease) -> bool {
        match self {
            Self::Counter => false,
            Self::Checkpoint(checkpoint) => {
                stored.checkpoint == *checkpoint && stored.pending_checkpoint.is_none()
            }
            Self::Pending(pending, state) => {
                stored.pending_checkpoint.as_ref() == Some(pending)
                    && stored.pending_checkpoint_state == *state
            }
            Self::LatestStart(at) => {
                stored.checkpoint == Checkpoint::Latest && stored.latest_started_at == Some(*at)
            }
            Self::Release => {
                stored.checkpoint_owner.is_none()
                    && if attempted.checkpoint_owner.is_some() {
                        stored.lease_owner == attempted.lease_owner
                    } else {
                        stored.lease_owner.is_none()
                    }
            }
        }
    }
}

/// Whether a write that failed with `error` may have been applied all the same (no answer, or
/// an answer that could not be read).
pub(crate) fn may_have_applied(error: &LeaseError) -> bool {
    match error {
        LeaseError::Dynamo { kind, .. } => kind.is_retryable(),
        LeaseError::Malformed { .. } => true,
        _ => false,
    }
}

/// What a failed conditional write to a held lease turned out to mean, after re-reading it.
#[derive(Debug)]
pub(crate) enum Conflict {
    /// The write was applied (its answer was lost): the stored lease, and the instant the
    /// holding's validity counts from.
    Applied(Box<Lease>, Instant),
    /// The stored copy was adopted (another worker asked for the lease or withdrew its
    /// request; or an earlier write of this worker's, whose answer was lost, moved the
    /// counter): retry the write with it.
    Retry,
    /// The lease is someone else's now (or gone): it was dropped.
    Lost,
    /// The lease could not be re-read: the holding is kept as it was.
    Unreadable,
}

impl Shared {
    pub(crate) fn new(
        store: Arc<dyn LeaseStore>,
        worker_id: String,
        config: CoordinatorConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            worker_id,
            config,
            clock,
            state: Mutex::new(State::default()),
            publisher: watch::channel(BTreeMap::new()).0,
            handoffs: watch::channel(BTreeSet::new()).0,
            scans: watch::channel(None).0,
            changed: Notify::new(),
            wake_taker: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent, so a panic in one (there are no
        // panicking paths) would not leave garbage behind.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes a new holding (`Some`, the lease as acquired) or the end of one (`None`).
    /// Called with the state locked, so subscribers see changes in order.
    fn publish(&self, lease_key: &str, acquired: Option<&Lease>) {
        self.publisher.send_modify(|map| match acquired {
            Some(lease) => {
                map.insert(lease_key.to_owned(), lease.clone());
            }
            None => {
                map.remove(lease_key);
            }
        });
        if acquired.is_none() {
            self.handoffs
                .send_if_modified(|keys| keys.remove(lease_key));
        }
        self.changed.notify_waiters();
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<BTreeMap<String, Lease>> {
        self.publisher.subscribe()
    }

    pub(crate) fn subscribe_handoffs(&self) -> watch::Receiver<BTreeSet<String>> {
        self.handoffs.subscribe()
    }

    pub(crate) fn subscribe_scans(&self) -> watch::Receiver<Option<Arc<ScanSnapshot>>> {
        self.scans.subscribe()
    }

    pub(crate) fn publish_scan(&self, snapshot: ScanSnapshot) {
        self.scans.send_replace(Some(Arc::new(snapshot)));
    }

    pub(crate) fn last_scan(&self) -> Option<Arc<ScanSnapshot>> {
        self.scans.borrow().clone()
    }

    fn held_ref_of(key: &str, held: &Held) -> HeldRef {
        HeldRef {
            key: key.to_owned(),
            epoch: held.epoch,
            write_lock: held.write_lock.clone(),
        }
    }

    pub(crate) fn held_refs(&self) -> Vec<HeldRef> {
        self.state()
            .held
            .iter()
            .map(|(key, held)| Self::held_ref_of(key, held))
            .collect()
    }

    pub(crate) fn held_ref(&self, key: &str) -> Option<HeldRef> {
        self.state()
            .held
            .get(key)
            .map(|held| Self::held_ref_of(key, held))
    }

    /// The current copy of the holding and when its last write was sent, if still held.
    pub(crate) fn current(&self, held: &HeldRef) -> Option<(Lease, Instant)> {
        self.state()
            .held
            .get(&held.key)
            .filter(|h| h.epoch == held.epoch)
            .map(|h| (h.current.clone(), h.renewed_at))
    }

    pub(crate) fn held(&self, key: &str) -> Option<Lease> {
        self.state().held.get(key).map(|h| h.current.clone())
    }

    pub(crate) fn held_leases(&self) -> BTreeMap<String, Lease> {
        self.state()
            .held
            .iter()
            .map(|(key, h)| (key.clone(), h.current.clone()))
            .collect()
    }

    pub(crate) fn held_keys(&self) -> BTreeSet<String> {
        self.state().held.keys().cloned().collect()
    }

    /// How long a write keeps a holding valid: the failover time minus a tenth of it (at
    /// most 1 s), so a worker stops delivering well before another worker may take the lease.
    pub(crate) fn validity_span(&self) -> Duration {
        let failover = self.config.failover_time();
        failover.saturating_sub((failover / 10).min(Duration::from_secs(1)))
    }

    /// Whether the holding may deliver records now.
    pub(crate) fn validity(&self, held: &HeldRef) -> Validity {
        let now = self.clock.now();
        match self.current(held) {
            None => Validity::Gone,
            Some((_, renewed_at)) => {
                let until = renewed_at
                    .checked_add(self.validity_span())
                    .unwrap_or(renewed_at);
                if now < until {
                    Validity::Valid(until)
                } else {
                    Validity::Expired
                }
            }
        }
    }

    /// Waits until the holding is valid (returns `true`) or gone (`false`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub(crate) async fn wait_valid(&self, held: &HeldRef) -> bool {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.validity(held) {
                Validity::Valid(_) => return true,
                Validity::Gone => return false,
                Validity::Expired => {}
            }
            // Woken by the next successful write or the end of the holding; the timeout only
            // guards against a missed wake-up.
            let _ = tokio::time::timeout(self.config.renew_interval(), changed).await;
        }
    }

    /// The held leases plus those released, finished or asked for (forgetting releases older
    /// than one failover time): leases the taker must leave alone.
    pub(crate) fn not_takeable(&self, now: Instant) -> BTreeSet<String> {
        let failover = self.config.failover_time();
        let mut state = self.state();
        state
            .released
            .retain(|_, at| now.saturating_duration_since(*at) <= failover);
        state
            .held
            .keys()
            .chain(state.released.keys())
            .chain(state.finished.keys())
            .chain(state.pending.keys())
            .cloned()
            .collect()
    }

    /// Records a lease this worker just took (a new holding, whose take was sent at `sent_at`)
    /// and publishes it.
    pub(crate) fn insert_taken(&self, lease: Lease, sent_at: Instant) {
        let mut state = self.state();
        let epoch = state.next_epoch;
        state.next_epoch += 1;
        state.released.remove(&lease.lease_key);
        state.pending.remove(&lease.lease_key);
        state.finished.remove(&lease.lease_key);
        self.publish(&lease.lease_key, Some(&lease));
        state.held.insert(
            lease.lease_key.clone(),
            Held {
                current: lease,
                epoch,
                renewed_at: sent_at,
                unanswered_at: None,
                write_lock: Arc::new(AsyncMutex::new(())),
            },
        );
    }

    /// Replaces the holding's copy with `lease`, the stored lease after a successful write by
    /// this worker sent at `sent_at`. A lease no longer held by this worker (a release, a
    /// completed handoff) leaves the held set for `gone`. Returns whether the holding was
    /// still there.
    pub(crate) fn after_write(
        &self,
        held: &HeldRef,
        lease: Lease,
        sent_at: Instant,
        gone: DropReason,
    ) -> bool {
        if !lease.is_held_by(&self.worker_id) || lease.lease_key != held.key {
            return self.remove(held, gone);
        }
        let mut state = self.state();
        match state.held.get_mut(&held.key) {
            Some(h) if h.epoch == held.epoch => {
                if lease.lease_counter > h.current.lease_counter {
                    if sent_at > h.renewed_at {
                        h.renewed_at = sent_at;
                    }
                    h.unanswered_at = None;
                }
                h.current = lease;
                drop(state);
                self.changed.notify_waiters();
                true
            }
            _ => false,
        }
    }

    /// Remembers that a write expecting `counter`, sent at `sent_at`, got no answer: it may
    /// have moved the counter.
    pub(crate) fn unanswered(&self, held: &HeldRef, counter: u64, sent_at: Instant) {
        let mut state = self.state();
        if let Some(h) = state.held.get_mut(&held.key)
            && h.epoch == held.epoch
            && h.current.lease_counter == counter
        {
            h.unanswered_at = Some(h.unanswered_at.map_or(sent_at, |at| at.min(sent_at)));
        }
    }

    /// Decides what a failed conditional write to the holding means from `reread`, the lease
    /// re-read after the failure (`Ok(None)`: it is gone; `Err`: it could not be read).
    /// `attempted` is the copy the write expected, sent at `sent_at`, writing `wrote`. See the
    /// [module docs](self) for the rules.
    pub(crate) fn resolve_conflict(
        &self,
        held: &HeldRef,
        attempted: &Lease,
        reread: Result<Option<Lease>, ()>,
        sent_at: Instant,
        wrote: &Wrote,
    ) -> Conflict {
        let Ok(reread) = reread else {
            return Conflict::Unreadable;
        };
        let Some(stored) = reread else {
            self.remove(held, DropReason::Lost);
            return Conflict::Lost;
        };
        let me = self.worker_id.as_str();
        let next = attempted.lease_counter.checked_add(1);
        let now = self.clock.now();
        let span = self.validity_span();
        let mut state = self.state();
        let Some(h) = state
            .held
            .get_mut(&held.key)
            .filter(|h| h.epoch == held.epoch)
        else {
            return Conflict::Lost;
        };
        let earliest = h.unanswered_at.map_or(sent_at, |at| at.min(sent_at));
        if matches!(wrote, Wrote::Release)
            && Some(stored.lease_counter) == next
            && wrote.is_stored(attempted, &stored)
        {
            return Conflict::Applied(Box::new(stored), earliest);
        }
        if !stored.is_held_by(me) || stored.lease_counter < attempted.lease_counter {
            drop(state);
            self.remove(held, DropReason::Lost);
            return Conflict::Lost;
        }
        let same_owners = stored.lease_owner == attempted.lease_owner
            && stored.checkpoint_owner == attempted.checkpoint_owner;
        let valid = h
            .renewed_at
            .checked_add(span)
            .is_some_and(|until| now < until);
        if stored.lease_counter != attempted.lease_counter {
            if Some(stored.lease_counter) != next {
                let behind = stored.lease_counter - attempted.lease_counter;
                drop(state);
                self.duplicate(
                    &held.key,
                    &format!("its counter moved {behind} past this process's copy"),
                );
                self.remove(held, DropReason::Duplicate);
                return Conflict::Lost;
            }
            if same_owners && wrote.is_stored(attempted, &stored) {
                // This write (a request the SDK retried) or an earlier one with the same
                // content that got no answer.
                return Conflict::Applied(Box::new(stored), earliest);
            }
            let explained = h.unanswered_at.is_some() || matches!(wrote, Wrote::Counter);
            if !explained {
                drop(state);
                self.duplicate(
                    &held.key,
                    "its counter moved without this process's write being stored",
                );
                self.remove(held, DropReason::Duplicate);
                return Conflict::Lost;
            }
            if !valid {
                drop(state);
                warn!(
                    lease_key = %held.key,
                    counter = stored.lease_counter,
                    "the lease moved while this holding was paused: this worker's own write \
                     whose answer was lost, or another process with this worker id; dropped"
                );
                self.remove(held, DropReason::Lost);
                return Conflict::Lost;
            }
            // Valid: nobody can have taken the lease, so one of this worker's writes moved
            // the counter: the earliest unanswered one, or this one (a retried request).
            let moved_at = match wrote {
                Wrote::Counter => earliest,
                _ => h.unanswered_at.unwrap_or(h.renewed_at),
            };
            if matches!(wrote, Wrote::Counter) && same_owners {
                return Conflict::Applied(Box::new(stored), moved_at);
            }
            h.renewed_at = h.renewed_at.max(moved_at);
            h.unanswered_at = None;
        }
        h.current = stored.clone();
        drop(state);
        self.changed.notify_waiters();
        if stored.checkpoint_owner.as_deref() == Some(me)
            && attempted.checkpoint_owner.as_deref() != Some(me)
        {
            let taker = stored.lease_owner.clone().unwrap_or_default();
            info!(lease_key = %held.key, to = %taker, "handoff requested: checkpointing, then letting go");
            self.handoffs
                .send_if_modified(|keys| keys.insert(held.key.clone()));
            self.with_stats(|stats| stats.handoffs_requested_of_me += 1);
        } else if stored.checkpoint_owner.is_none()
            && attempted.checkpoint_owner.as_deref() == Some(me)
        {
            // The worker that asked withdrew its request: the lease is plainly ours again.
            info!(lease_key = %held.key, "handoff withdrawn: processing goes on");
            self.handoffs
                .send_if_modified(|keys| keys.remove(&held.key));
        }
        Conflict::Retry
    }

    /// Looks at one scan for leases stored under this worker's id that it does not hold (nor
    /// finished, nor asked for) and whose counter moved twice or more since first seen: at
    /// most one such move can be this worker's own (an unanswered write landing after the
    /// holding ended); more means another process with this id renews the lease.
    pub(crate) fn watch_foreign(&self, leases: &[Lease]) {
        let mut found = Vec::new();
        {
            let mut state = self.state();
            let State {
                held,
                pending,
                finished,
                foreign,
                ..
            } = &mut *state;
            let mut seen = HashMap::new();
            for lease in leases {
                let key = &lease.lease_key;
                if !lease.is_held_by(&self.worker_id)
                    || lease.is_finished()
                    || held.contains_key(key)
                    || pending.contains_key(key)
                    || finished.contains_key(key)
                {
                    continue;
                }
                let (first, reported) = foreign
                    .get(key)
                    .copied()
                    .unwrap_or((lease.lease_counter, false));
                let moved = lease.lease_counter.saturating_sub(first);
                let report = moved >= 2 && !reported;
                if report {
                    found.push((key.clone(), moved));
                }
                seen.insert(key.clone(), (first, reported || report));
            }
            *foreign = seen;
        }
        for (key, moved) in found {
            self.duplicate(
                &key,
                &format!(
                    "a lease stored under this id that this process does not hold moved {moved} times"
                ),
            );
        }
    }

    /// Reports another process running with this worker's id, found through lease `key`.
    pub(crate) fn duplicate(&self, key: &str, how: &str) {
        error!(
            worker = %self.worker_id,
            lease_key = %key,
            how,
            "another process runs with this worker id: worker ids must be unique; this \
             process stops delivering the lease and leaves it to the other"
        );
        metrics::counter!("DuplicateWorkerId", "table" => self.store.table_name().to_owned())
            .increment(1);
        self.with_stats(|stats| stats.duplicate_worker_detections += 1);
    }

    /// Counts a lease lost, in the stats and in the `LostLeases` metric.
    fn count_lost(&self, stats: &mut CoordinatorStats) {
        stats.lost += 1;
        metrics::counter!("LostLeases", "table" => self.store.table_name().to_owned()).increment(1);
    }

    /// Removes the holding (if it is still the same one) and publishes the change.
    pub(crate) fn remove(&self, held: &HeldRef, reason: DropReason) -> bool {
        let now = self.clock.now();
        let mut state = self.state();
        match state.held.get(&held.key) {
            Some(h) if h.epoch == held.epoch => {}
            // Gone, or a newer holding of the same lease.
            _ => return false,
        }
        let Some(removed) = state.held.remove(&held.key) else {
            return false;
        };
        match reason {
            DropReason::Lost => {
                self.count_lost(&mut state.stats);
                info!(lease_key = %held.key, counter = removed.current.lease_counter, "lease lost");
            }
            DropReason::Released => {
                state.stats.released += 1;
                state.released.insert(held.key.clone(), now);
                info!(lease_key = %held.key, "lease released");
            }
            DropReason::HandedOff => {
                // Not kept from being taken back: it is the other worker's now, and the
                // taking rules never steal across an imbalance of one; should that worker
                // leave, this one takes it at once.
                state.stats.handed_off += 1;
                info!(lease_key = %held.key, to = ?removed.current.lease_owner, "lease handed over");
            }
            DropReason::Duplicate => {
                self.count_lost(&mut state.stats);
                info!(lease_key = %held.key, counter = removed.current.lease_counter, "lease left to the other process with this worker id");
            }
            DropReason::Finished => {
                state.stats.finished += 1;
                state
                    .finished
                    .insert(held.key.clone(), removed.current.clone());
                info!(lease_key = %held.key, "shard finished: lease no longer renewed, waiting for cleanup");
            }
        }
        self.publish(&held.key, None);
        true
    }

    /// Replaces the copy of a held lease with a newer one written elsewhere (see
    /// `LeaseCoordinator::update_held`; tests only).
    #[cfg(test)]
    pub(crate) fn update_held(&self, lease: Lease) -> bool {
        if !lease.is_held_by(&self.worker_id) {
            return false;
        }
        let mut state = self.state();
        match state.held.get_mut(&lease.lease_key) {
            Some(h) if lease.lease_counter > h.current.lease_counter => {
                // The validity stays that of the last write the coordinator saw sent: when
                // this one was sent is unknown, and counting from now would overstate it by
                // that write's latency. The next renewal, on the new counter, extends it.
                h.current = lease;
                drop(state);
                self.changed.notify_waiters();
                true
            }
            _ => false,
        }
    }

    /// The finished leases this worker held and has not seen deleted.
    pub(crate) fn finished(&self) -> BTreeMap<String, Lease> {
        self.state().finished.clone()
    }

    /// Forgets a finished lease (deleted, or no longer this worker's).
    pub(crate) fn forget_finished(&self, key: &str) {
        self.state().finished.remove(key);
    }

    /// Records a handoff asked for at `now` by a request sent at `sent_at`.
    pub(crate) fn add_pending(&self, lease: Lease, now: Instant, sent_at: Instant) {
        self.state().pending.insert(
            lease.lease_key.clone(),
            PendingHandoff {
                lease,
                requested_at: now,
                counter_since: now,
                held_seen_at: Some(sent_at),
            },
        );
    }

    pub(crate) fn pending(&self) -> BTreeMap<String, PendingHandoff> {
        self.state().pending.clone()
    }

    /// Records a poll of a pending handoff: `lease` read at `now` by a read sent at `sent_at`.
    pub(crate) fn update_pending(&self, lease: Lease, now: Instant, sent_at: Instant) {
        let mut state = self.state();
        if let Some(pending) = state.pending.get_mut(&lease.lease_key) {
            if pending.lease.lease_counter != lease.lease_counter {
                pending.counter_since = now;
            }
            if lease.is_handoff_pending() {
                pending.held_seen_at = Some(sent_at);
            }
            pending.lease = lease;
        }
    }

    /// Forgets every pending handoff, returning them.
    pub(crate) fn take_pending(&self) -> BTreeMap<String, PendingHandoff> {
        std::mem::take(&mut self.state().pending)
    }

    /// Forgets that the holder of a pending handoff was seen holding it: only a new read that
    /// finds it held again makes a let-go state count.
    pub(crate) fn forget_held_seen(&self, key: &str) {
        if let Some(pending) = self.state().pending.get_mut(key) {
            pending.held_seen_at = None;
        }
    }

    pub(crate) fn drop_pending(&self, key: &str) {
        if self.state().pending.remove(key).is_some() {
            warn!(lease_key = %key, "handoff abandoned: the lease went elsewhere");
        }
    }

    pub(crate) fn with_stats(&self, update: impl FnOnce(&mut CoordinatorStats)) {
        update(&mut self.state().stats);
    }

    pub(crate) fn stats(&self) -> CoordinatorStats {
        let state = self.state();
        let mut stats = state.stats.clone();
        stats.held = state.held.len();
        stats.pending_handoffs = state.pending.len();
        stats.finished_held = state.finished.len();
        stats
    }
}
