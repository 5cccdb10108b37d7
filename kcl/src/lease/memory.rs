//! An in-memory [`LeaseStore`] with the lease table's conditional semantics and fault
//! injection, for unit tests.
//!
//! Several views ([`MemoryStore::view`]) share one table but have their own faults: each
//! worker of a test gets a view, so DynamoDB can be unreachable for one worker and not for
//! another (a partition), or for all of them (an outage).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::Barrier;

use super::codec::whole_millis;
use super::store::{BoxFuture, LeaseStore};
use super::{Checkpoint, Lease, LeaseError, LeaseErrorKind};

/// Faults to inject into one view.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// Every call fails with a transient error (DynamoDB unreachable).
    pub(crate) unreachable: bool,
    /// Renews fail with a transient error.
    pub(crate) renew_transient: bool,
    /// Renews are applied but answered with a transient error (a lost response).
    pub(crate) renew_applied_but_failed: bool,
    /// Scans fail with a transient error.
    pub(crate) list_transient: bool,
    /// Every scan waits at this barrier first (to line up racing workers).
    pub(crate) list_barrier: Option<Arc<Barrier>>,
    /// Every write sleeps this long first.
    pub(crate) write_delay: Option<Duration>,
    /// The next `n` calls of an operation fail with a transient error.
    pub(crate) fail_next: HashMap<&'static str, usize>,
    /// The next `n` writes of an operation (`"checkpoint"`, `"renew"`...) are applied but
    /// answered with a transient error (a lost response).
    pub(crate) applied_but_failed: HashMap<&'static str, usize>,
}

/// Leases in a map, with the lease table's conditional semantics.
#[derive(Debug, Clone, Default)]
pub(crate) struct MemoryStore {
    pub(crate) leases: Arc<Mutex<BTreeMap<String, Lease>>>,
    pub(crate) faults: Arc<Mutex<Faults>>,
    /// `(operation, lease key)` of every write that was applied, by any view.
    pub(crate) writes: Arc<Mutex<Vec<(&'static str, String)>>>,
    /// The last handoff request id given (ids are counted, so runs replay exactly).
    pub(crate) request_ids: Arc<std::sync::atomic::AtomicU64>,
}

fn transient(operation: &'static str) -> LeaseError {
    LeaseError::Dynamo {
        operation,
        table: "memory".into(),
        kind: LeaseErrorKind::Transient,
        source: "injected fault".into(),
    }
}

fn lost(key: &str) -> LeaseError {
    LeaseError::LeaseLost {
        lease_key: key.to_owned(),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a write expects of the stored lease.
#[derive(Clone, Copy)]
struct Expect {
    counter: bool,
    owner: bool,
    no_handoff: bool,
    checkpoint: bool,
}

const COUNTER: Expect = Expect {
    counter: true,
    owner: false,
    no_handoff: false,
    checkpoint: false,
};
const COUNTER_AND_OWNER: Expect = Expect {
    owner: true,
    ..COUNTER
};

impl MemoryStore {
    pub(crate) fn with_leases(leases: impl IntoIterator<Item = Lease>) -> Self {
        let store = Self::default();
        store.insert(leases);
        store
    }

    /// Another view of the same table, with its own (empty) faults.
    pub(crate) fn view(&self) -> Self {
        Self {
            leases: self.leases.clone(),
            faults: Arc::default(),
            writes: self.writes.clone(),
            request_ids: self.request_ids.clone(),
        }
    }

    pub(crate) fn insert(&self, leases: impl IntoIterator<Item = Lease>) {
        self.lock().extend(
            leases
                .into_iter()
                .map(|lease| (lease.lease_key.clone(), lease)),
        );
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Lease>> {
        lock(&self.leases)
    }

    pub(crate) fn faults(&self) -> MutexGuard<'_, Faults> {
        lock(&self.faults)
    }

    pub(crate) fn get_now(&self, key: &str) -> Option<Lease> {
        self.lock().get(key).cloned()
    }

    pub(crate) fn all(&self) -> Vec<Lease> {
        self.lock().values().cloned().collect()
    }

    pub(crate) fn owners(&self) -> BTreeMap<String, Option<String>> {
        self.lock()
            .values()
            .map(|l| (l.lease_key.clone(), l.lease_owner.clone()))
            .collect()
    }

    /// Applied writes of `operation`.
    pub(crate) fn writes_of(&self, operation: &str) -> Vec<String> {
        lock(&self.writes)
            .iter()
            .filter(|(op, _)| *op == operation)
            .map(|(_, key)| key.clone())
            .collect()
    }

    /// Bumps the counter of `key` as its owner's renewer would.
    pub(crate) fn bump(&self, key: &str) {
        if let Some(lease) = self.lock().get_mut(key) {
            lease.lease_counter += 1;
        }
    }

    /// Creates `lease` unless its key is taken, under the lock the caller checked with;
    /// whether it did.
    fn insert_if_absent(
        &self,
        mut leases: MutexGuard<'_, BTreeMap<String, Lease>>,
        lease: &Lease,
    ) -> bool {
        if leases.contains_key(&lease.lease_key) {
            return false;
        }
        leases.insert(lease.lease_key.clone(), lease.clone());
        drop(leases);
        self.record("create", &lease.lease_key);
        true
    }

    /// The injected failure for this call, if any.
    fn fault(&self, operation: &'static str) -> Result<(), LeaseError> {
        let mut faults = self.faults();
        if faults.unreachable {
            return Err(transient(operation));
        }
        if let Some(left) = faults.fail_next.get_mut(operation)
            && *left > 0
        {
            *left -= 1;
            return Err(transient(operation));
        }
        Ok(())
    }

    fn record(&self, operation: &'static str, key: &str) {
        lock(&self.writes).push((operation, key.to_owned()));
    }

    async fn write(
        &self,
        operation: &'static str,
        lease: &Lease,
        expect: Expect,
        bump: bool,
        change: impl FnOnce(&mut Lease),
    ) -> Result<Lease, LeaseError> {
        let delay = self.faults().write_delay;
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        self.fault(operation)?;
        let mut leases = self.lock();
        let stored = leases
            .get_mut(&lease.lease_key)
            .ok_or_else(|| lost(&lease.lease_key))?;
        let conflict = (expect.counter && stored.lease_counter != lease.lease_counter)
            || (expect.owner
                && (stored.lease_owner != lease.lease_owner
                    || stored.checkpoint_owner != lease.checkpoint_owner))
            || (expect.no_handoff && stored.checkpoint_owner.is_some())
            || (expect.checkpoint && stored.checkpoint != lease.checkpoint);
        if conflict {
            return Err(lost(&lease.lease_key));
        }
        change(stored);
        if bump {
            stored.lease_counter += 1;
        }
        let stored = stored.clone();
        drop(leases);
        self.record(operation, &lease.lease_key);
        let lost_answer = self
            .faults()
            .applied_but_failed
            .get_mut(operation)
            .filter(|left| **left > 0)
            .map(|left| *left -= 1)
            .is_some();
        if lost_answer {
            return Err(transient("UpdateItem"));
        }
        Ok(stored)
    }
}

impl LeaseStore for MemoryStore {
    fn table_name(&self) -> &str {
        "memory"
    }

    fn create_table(&self) -> BoxFuture<'_, Result<bool, LeaseError>> {
        Box::pin(async move {
            self.fault("CreateTable")?;
            Ok(false)
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Lease>, LeaseError>> {
        Box::pin(async move {
            let barrier = self.faults().list_barrier.clone();
            if let Some(barrier) = barrier {
                barrier.wait().await;
            }
            if self.faults().list_transient {
                return Err(transient("Scan"));
            }
            self.fault("Scan")?;
            Ok(self.all())
        })
    }

    fn get<'a>(&'a self, lease_key: &'a str) -> BoxFuture<'a, Result<Option<Lease>, LeaseError>> {
        Box::pin(async move {
            self.fault("GetItem")?;
            Ok(self.get_now(lease_key))
        })
    }

    fn create_if_absent<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<bool, LeaseError>> {
        Box::pin(async move {
            self.fault("PutItem")?;
            Ok(self.insert_if_absent(self.lock(), lease))
        })
    }

    fn create_child_lease<'a>(
        &'a self,
        parent_key: &'a str,
        holder: &'a str,
        child: &'a Lease,
    ) -> BoxFuture<'a, Result<bool, LeaseError>> {
        Box::pin(async move {
            self.fault("TransactWriteItems")?;
            let leases = self.lock();
            let parent_held = leases
                .get(parent_key)
                .is_some_and(|parent| !parent.is_finished() && parent.is_held_by(holder));
            if !parent_held {
                return Err(lost(parent_key));
            }
            Ok(self.insert_if_absent(leases, child))
        })
    }

    fn renew<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        Box::pin(async move {
            let (transient_fault, applied_fault) = {
                let faults = self.faults();
                (faults.renew_transient, faults.renew_applied_but_failed)
            };
            if transient_fault {
                return Err(transient("UpdateItem"));
            }
            if lease.lease_owner.is_none() {
                return Err(LeaseError::InvalidInput {
                    lease_key: lease.lease_key.clone(),
                    reason: "the lease has no owner",
                });
            }
            let result = self
                .write("renew", lease, COUNTER_AND_OWNER, true, |_| {})
                .await;
            if applied_fault && result.is_ok() {
                return Err(transient("UpdateItem"));
            }
            result
        })
    }

    fn take<'a>(
        &'a self,
        lease: &'a Lease,
        new_owner: &'a str,
    ) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        let switched = lease.holder().is_some_and(|old| old != new_owner);
        Box::pin(self.write("take", lease, COUNTER, true, move |stored| {
            stored.lease_owner = Some(new_owner.to_owned());
            stored.checkpoint_owner = None;
            stored.handoff_request_id = None;
            if switched {
                stored.owner_switches_since_checkpoint += 1;
            }
        }))
    }

    fn request_handoff<'a>(
        &'a self,
        lease: &'a Lease,
        new_owner: &'a str,
    ) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        let holder = lease.lease_owner.clone();
        let id = self
            .request_ids
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        Box::pin(async move {
            if holder.is_none() || holder.as_deref() == Some(new_owner) {
                return Err(LeaseError::InvalidInput {
                    lease_key: lease.lease_key.clone(),
                    reason: "the new owner is empty or the holder",
                });
            }
            let expect = Expect {
                no_handoff: true,
                ..COUNTER_AND_OWNER
            };
            self.write("request_handoff", lease, expect, false, move |stored| {
                stored.checkpoint_owner = holder;
                stored.lease_owner = Some(new_owner.to_owned());
                stored.handoff_request_id = Some(format!("request-{id}"));
            })
            .await
        })
    }

    fn cancel_handoff<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        let holder = lease.checkpoint_owner.clone();
        Box::pin(async move {
            if holder.is_none() {
                return Err(LeaseError::InvalidInput {
                    lease_key: lease.lease_key.clone(),
                    reason: "the lease is not being handed over",
                });
            }
            let expect = Expect {
                counter: false,
                ..COUNTER_AND_OWNER
            };
            self.write("cancel_handoff", lease, expect, false, move |stored| {
                stored.lease_owner = holder;
                stored.checkpoint_owner = None;
                stored.handoff_request_id = None;
            })
            .await
        })
    }

    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        let handoff = lease.checkpoint_owner.is_some();
        Box::pin(
            self.write("release", lease, COUNTER_AND_OWNER, true, move |stored| {
                if handoff {
                    stored.checkpoint_owner = None;
                } else {
                    stored.lease_owner = None;
                }
            }),
        )
    }

    fn checkpoint<'a>(
        &'a self,
        lease: &'a Lease,
        checkpoint: Checkpoint,
    ) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        Box::pin(self.write(
            "checkpoint",
            lease,
            COUNTER_AND_OWNER,
            true,
            move |stored| {
                stored.checkpoint = checkpoint;
                stored.owner_switches_since_checkpoint = 0;
                stored.pending_checkpoint = None;
                stored.pending_checkpoint_state = None;
                stored.latest_started_at = None;
            },
        ))
    }

    fn note_latest_start<'a>(
        &'a self,
        lease: &'a Lease,
        at: SystemTime,
    ) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        let at = whole_millis(at);
        Box::pin(async move {
            if lease.checkpoint != Checkpoint::Latest {
                return Err(LeaseError::InvalidInput {
                    lease_key: lease.lease_key.clone(),
                    reason: "only a lease at the LATEST checkpoint notes when it was first read",
                });
            }
            self.write(
                "note_latest_start",
                lease,
                COUNTER_AND_OWNER,
                true,
                move |stored| stored.latest_started_at = Some(at),
            )
            .await
        })
    }

    fn prepare_checkpoint<'a>(
        &'a self,
        lease: &'a Lease,
        pending: Checkpoint,
        state: Option<Vec<u8>>,
    ) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        Box::pin(self.write(
            "prepare_checkpoint",
            lease,
            COUNTER_AND_OWNER,
            true,
            move |stored| {
                stored.pending_checkpoint = Some(pending);
                stored.pending_checkpoint_state = state;
            },
        ))
    }

    fn update_child_shards<'a>(
        &'a self,
        lease_key: &'a str,
        child_shard_ids: &'a [String],
    ) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        Box::pin(async move {
            self.fault("UpdateItem")?;
            let mut leases = self.lock();
            let stored = leases.get_mut(lease_key).ok_or_else(|| lost(lease_key))?;
            let mut children = child_shard_ids.to_vec();
            children.sort();
            children.dedup();
            stored.child_shard_ids = children;
            let stored = stored.clone();
            drop(leases);
            self.record("update_child_shards", lease_key);
            Ok(stored)
        })
    }

    fn delete_if_unchanged<'a>(
        &'a self,
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<bool, LeaseError>> {
        Box::pin(async move {
            self.fault("DeleteItem")?;
            let mut leases = self.lock();
            let unchanged = leases.get(&lease.lease_key).is_some_and(|stored| {
                stored.lease_counter == lease.lease_counter && stored.checkpoint == lease.checkpoint
            });
            if unchanged {
                leases.remove(&lease.lease_key);
                drop(leases);
                self.record("delete", &lease.lease_key);
            }
            Ok(unchanged)
        })
    }
}
