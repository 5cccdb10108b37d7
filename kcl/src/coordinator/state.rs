//! The state the renewer, the taker and the handle share: the held leases, the published map,
//! the counters.
//!
//! One std mutex guards it, held only for short synchronous sections. Each held lease also has
//! an async write lock that serializes the conditional writes to it (renew, checkpoint,
//! release): two writes racing on one counter would fail each other.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::{Mutex as AsyncMutex, watch};
use tracing::{info, warn};

use super::clock::Clock;
use super::config::CoordinatorConfig;
use super::stats::CoordinatorStats;
use super::store::LeaseStore;
use crate::lease::Lease;

/// What the handle and both loops share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn LeaseStore>,
    pub(crate) worker_id: String,
    pub(crate) config: CoordinatorConfig,
    pub(crate) clock: Arc<dyn Clock>,
    state: Mutex<State>,
    publisher: watch::Sender<BTreeMap<String, Lease>>,
}

#[derive(Debug, Default)]
struct State {
    held: BTreeMap<String, Held>,
    /// Leases this worker released, and when: not taken back for one failover time.
    released: HashMap<String, Instant>,
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
    /// The last successful write to the lease (take, renew, checkpoint).
    last_renewed: Instant,
    write_lock: Arc<AsyncMutex<()>>,
}

/// A handle on one holding of a lease, for a write: updates and removals through it apply only
/// if the lease is still held in the same holding.
#[derive(Debug, Clone)]
pub(crate) struct HeldRef {
    pub(crate) key: String,
    epoch: u64,
    pub(crate) write_lock: Arc<AsyncMutex<()>>,
}

/// Why a lease leaves the held set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// A conditional write failed: another worker took it.
    Lost,
    /// It could not be renewed for longer than the failover time.
    NotRenewed,
    /// This worker released it.
    Released,
}

impl Shared {
    pub(crate) fn new(
        store: Arc<dyn LeaseStore>,
        worker_id: String,
        config: CoordinatorConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let (publisher, _) = watch::channel(BTreeMap::new());
        Self {
            store,
            worker_id,
            config,
            clock,
            state: Mutex::new(State::default()),
            publisher,
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
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<BTreeMap<String, Lease>> {
        self.publisher.subscribe()
    }

    pub(crate) fn held_refs(&self) -> Vec<HeldRef> {
        self.state()
            .held
            .iter()
            .map(|(key, held)| HeldRef {
                key: key.clone(),
                epoch: held.epoch,
                write_lock: held.write_lock.clone(),
            })
            .collect()
    }

    pub(crate) fn held_ref(&self, key: &str) -> Option<HeldRef> {
        self.state().held.get(key).map(|held| HeldRef {
            key: key.to_owned(),
            epoch: held.epoch,
            write_lock: held.write_lock.clone(),
        })
    }

    /// The current copy of the holding and when it was last renewed, if still held.
    pub(crate) fn current(&self, held: &HeldRef) -> Option<(Lease, Instant)> {
        self.state()
            .held
            .get(&held.key)
            .filter(|h| h.epoch == held.epoch)
            .map(|h| (h.current.clone(), h.last_renewed))
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

    /// The held leases plus the ones released within the last failover time (forgetting
    /// older releases).
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
            .cloned()
            .collect()
    }

    /// Records a lease this worker just took (a new holding) and publishes it.
    pub(crate) fn insert_taken(&self, lease: Lease) {
        let now = self.clock.now();
        let mut state = self.state();
        let epoch = state.next_epoch;
        state.next_epoch += 1;
        state.released.remove(&lease.lease_key);
        self.publish(&lease.lease_key, Some(&lease));
        state.held.insert(
            lease.lease_key.clone(),
            Held {
                current: lease,
                epoch,
                last_renewed: now,
                write_lock: Arc::new(AsyncMutex::new(())),
            },
        );
    }

    /// Replaces the holding's copy with `lease`, the stored lease after a successful write by
    /// this worker. A lease no longer owned by this worker (a release) leaves the held set.
    /// Returns whether the holding was still there.
    pub(crate) fn after_write(&self, held: &HeldRef, lease: Lease) -> bool {
        if !lease.is_owned_by(&self.worker_id) || lease.lease_key != held.key {
            let reason = if lease.lease_owner.is_none() {
                DropReason::Released
            } else {
                DropReason::Lost
            };
            return self.remove(held, reason);
        }
        let now = self.clock.now();
        let mut state = self.state();
        match state.held.get_mut(&held.key) {
            Some(h) if h.epoch == held.epoch => {
                if lease.lease_counter > h.current.lease_counter {
                    h.last_renewed = now;
                }
                h.current = lease;
                true
            }
            _ => false,
        }
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
                state.stats.lost += 1;
                info!(lease_key = %held.key, counter = removed.current.lease_counter, "lease lost");
            }
            DropReason::NotRenewed => {
                state.stats.lost += 1;
                warn!(
                    lease_key = %held.key,
                    unrenewed_for = ?now.saturating_duration_since(removed.last_renewed),
                    "lease dropped: not renewed within the failover time"
                );
            }
            DropReason::Released => {
                state.stats.released += 1;
                state.released.insert(held.key.clone(), now);
                info!(lease_key = %held.key, "lease released");
            }
        }
        self.publish(&held.key, None);
        true
    }

    /// Replaces the copy of a held lease with a newer one written elsewhere (see
    /// `LeaseCoordinator::update_held`).
    pub(crate) fn update_held(&self, lease: Lease) -> bool {
        if !lease.is_owned_by(&self.worker_id) {
            return false;
        }
        let now = self.clock.now();
        let mut state = self.state();
        match state.held.get_mut(&lease.lease_key) {
            Some(h) if lease.lease_counter > h.current.lease_counter => {
                h.current = lease;
                h.last_renewed = now;
                true
            }
            _ => false,
        }
    }

    pub(crate) fn with_stats(&self, update: impl FnOnce(&mut CoordinatorStats)) {
        update(&mut self.state().stats);
    }

    pub(crate) fn stats(&self) -> CoordinatorStats {
        let state = self.state();
        let mut stats = state.stats.clone();
        stats.held = state.held.len();
        stats
    }
}
