//! The seam between the coordinator and DynamoDB: the lease operations it uses, as a trait
//! the unit tests implement in memory.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::lease::{Checkpoint, Lease, LeaseError, LeaseTable};

/// A boxed, sendable future.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The lease operations of the coordinator, with [`LeaseTable`]'s semantics (every write is
/// conditional on the copy's counter and returns the stored lease).
pub(crate) trait LeaseStore: Send + Sync + fmt::Debug + 'static {
    /// The table's name, for logs.
    fn table_name(&self) -> &str;
    /// See [`LeaseTable::list`].
    fn list(&self) -> BoxFuture<'_, Result<Vec<Lease>, LeaseError>>;
    /// See [`LeaseTable::get`].
    fn get<'a>(&'a self, lease_key: &'a str) -> BoxFuture<'a, Result<Option<Lease>, LeaseError>>;
    /// See [`LeaseTable::renew`].
    fn renew<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Lease, LeaseError>>;
    /// See [`LeaseTable::take`].
    fn take<'a>(
        &'a self,
        lease: &'a Lease,
        new_owner: &'a str,
    ) -> BoxFuture<'a, Result<Lease, LeaseError>>;
    /// See [`LeaseTable::release`].
    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Lease, LeaseError>>;
    /// See [`LeaseTable::checkpoint`].
    fn checkpoint<'a>(
        &'a self,
        lease: &'a Lease,
        checkpoint: Checkpoint,
    ) -> BoxFuture<'a, Result<Lease, LeaseError>>;
}

impl LeaseStore for LeaseTable {
    fn table_name(&self) -> &str {
        LeaseTable::table_name(self)
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Lease>, LeaseError>> {
        Box::pin(LeaseTable::list(self))
    }

    fn get<'a>(&'a self, lease_key: &'a str) -> BoxFuture<'a, Result<Option<Lease>, LeaseError>> {
        Box::pin(LeaseTable::get(self, lease_key))
    }

    fn renew<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        Box::pin(LeaseTable::renew(self, lease))
    }

    fn take<'a>(
        &'a self,
        lease: &'a Lease,
        new_owner: &'a str,
    ) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        Box::pin(LeaseTable::take(self, lease, new_owner))
    }

    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        Box::pin(LeaseTable::release(self, lease))
    }

    fn checkpoint<'a>(
        &'a self,
        lease: &'a Lease,
        checkpoint: Checkpoint,
    ) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        Box::pin(LeaseTable::checkpoint(self, lease, checkpoint))
    }
}

#[cfg(test)]
pub(crate) mod memory {
    //! An in-memory [`LeaseStore`] with fault injection, for unit tests.

    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex, PoisonError};
    use std::time::Duration;

    use tokio::sync::Barrier;

    use super::*;
    use crate::lease::LeaseErrorKind;

    /// Faults to inject.
    #[derive(Debug, Default)]
    pub(crate) struct Faults {
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
    }

    /// Leases in a map, with the lease table's conditional semantics.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct MemoryStore {
        pub(crate) leases: Arc<Mutex<BTreeMap<String, Lease>>>,
        pub(crate) faults: Arc<Mutex<Faults>>,
        pub(crate) writes: Arc<Mutex<Vec<(&'static str, String)>>>,
    }

    fn transient(operation: &'static str) -> LeaseError {
        LeaseError::Dynamo {
            operation,
            table: "memory".into(),
            kind: LeaseErrorKind::Transient,
            source: "injected fault".into(),
        }
    }

    fn lost(lease: &Lease) -> LeaseError {
        LeaseError::LeaseLost {
            lease_key: lease.lease_key.clone(),
        }
    }

    impl MemoryStore {
        pub(crate) fn with_leases(leases: impl IntoIterator<Item = Lease>) -> Self {
            let store = Self::default();
            store.lock().extend(
                leases
                    .into_iter()
                    .map(|lease| (lease.lease_key.clone(), lease)),
            );
            store
        }

        pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Lease>> {
            self.leases.lock().unwrap_or_else(PoisonError::into_inner)
        }

        pub(crate) fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
            self.faults.lock().unwrap_or_else(PoisonError::into_inner)
        }

        pub(crate) fn get_now(&self, key: &str) -> Option<Lease> {
            self.lock().get(key).cloned()
        }

        pub(crate) fn owners(&self) -> BTreeMap<String, Option<String>> {
            self.lock()
                .values()
                .map(|l| (l.lease_key.clone(), l.lease_owner.clone()))
                .collect()
        }

        /// Bumps the counter of `key` as its owner's renewer would.
        pub(crate) fn bump(&self, key: &str) {
            if let Some(lease) = self.lock().get_mut(key) {
                lease.lease_counter += 1;
            }
        }

        async fn write(
            &self,
            operation: &'static str,
            lease: &Lease,
            expect_owner: bool,
            change: impl FnOnce(&mut Lease),
        ) -> Result<Lease, LeaseError> {
            let delay = self.faults().write_delay;
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            let mut leases = self.lock();
            let stored = leases
                .get_mut(&lease.lease_key)
                .ok_or_else(|| lost(lease))?;
            if stored.lease_counter != lease.lease_counter
                || (expect_owner && stored.lease_owner != lease.lease_owner)
            {
                return Err(lost(lease));
            }
            change(stored);
            stored.lease_counter += 1;
            self.writes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((operation, lease.lease_key.clone()));
            Ok(stored.clone())
        }
    }

    impl LeaseStore for MemoryStore {
        fn table_name(&self) -> &str {
            "memory"
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
                Ok(self.lock().values().cloned().collect())
            })
        }

        fn get<'a>(
            &'a self,
            lease_key: &'a str,
        ) -> BoxFuture<'a, Result<Option<Lease>, LeaseError>> {
            Box::pin(async move { Ok(self.get_now(lease_key)) })
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
                let result = self.write("renew", lease, true, |_| {}).await;
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
            Box::pin(self.write("take", lease, false, move |stored| {
                stored.lease_owner = Some(new_owner.to_owned());
            }))
        }

        fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Lease, LeaseError>> {
            Box::pin(self.write("release", lease, true, |stored| {
                stored.lease_owner = None;
            }))
        }

        fn checkpoint<'a>(
            &'a self,
            lease: &'a Lease,
            checkpoint: Checkpoint,
        ) -> BoxFuture<'a, Result<Lease, LeaseError>> {
            Box::pin(self.write("checkpoint", lease, true, move |stored| {
                stored.checkpoint = checkpoint;
                stored.owner_switches_since_checkpoint = 0;
            }))
        }
    }
}
