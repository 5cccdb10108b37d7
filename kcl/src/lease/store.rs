//! The seam between the worker and DynamoDB: every lease-table operation the coordinator, the
//! shard consumers, shard sync and lease cleanup use, as a trait the unit tests implement in
//! memory (`memory::MemoryStore`) with fault injection.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use super::{Checkpoint, Lease, LeaseError, LeaseTable};

/// A boxed, sendable future.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The lease operations, with [`LeaseTable`]'s semantics (every write to an existing lease is
/// conditional on the copy it is given and returns the stored lease).
pub(crate) trait LeaseStore: Send + Sync + fmt::Debug + 'static {
    /// The table's name, for logs.
    fn table_name(&self) -> &str;
    /// See [`LeaseTable::create_if_missing`].
    fn create_table(&self) -> BoxFuture<'_, Result<bool, LeaseError>>;
    /// See [`LeaseTable::list`].
    fn list(&self) -> BoxFuture<'_, Result<Vec<Lease>, LeaseError>>;
    /// See [`LeaseTable::get`].
    fn get<'a>(&'a self, lease_key: &'a str) -> BoxFuture<'a, Result<Option<Lease>, LeaseError>>;
    /// See [`LeaseTable::create_if_absent`].
    fn create_if_absent<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<bool, LeaseError>>;
    /// See [`LeaseTable::create_child_lease`].
    fn create_child_lease<'a>(
        &'a self,
        parent_key: &'a str,
        holder: &'a str,
        child: &'a Lease,
    ) -> BoxFuture<'a, Result<bool, LeaseError>>;
    /// See [`LeaseTable::renew`].
    fn renew<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Lease, LeaseError>>;
    /// See [`LeaseTable::take`].
    fn take<'a>(
        &'a self,
        lease: &'a Lease,
        new_owner: &'a str,
    ) -> BoxFuture<'a, Result<Lease, LeaseError>>;
    /// See [`LeaseTable::request_handoff`].
    fn request_handoff<'a>(
        &'a self,
        lease: &'a Lease,
        new_owner: &'a str,
    ) -> BoxFuture<'a, Result<Lease, LeaseError>>;
    /// See [`LeaseTable::cancel_handoff`].
    fn cancel_handoff<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Lease, LeaseError>>;
    /// See [`LeaseTable::release`].
    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Lease, LeaseError>>;
    /// See [`LeaseTable::checkpoint`].
    fn checkpoint<'a>(
        &'a self,
        lease: &'a Lease,
        checkpoint: Checkpoint,
    ) -> BoxFuture<'a, Result<Lease, LeaseError>>;
    /// See [`LeaseTable::prepare_checkpoint`].
    fn prepare_checkpoint<'a>(
        &'a self,
        lease: &'a Lease,
        pending: Checkpoint,
        state: Option<Vec<u8>>,
    ) -> BoxFuture<'a, Result<Lease, LeaseError>>;
    /// See [`LeaseTable::note_latest_start`].
    fn note_latest_start<'a>(
        &'a self,
        lease: &'a Lease,
        at: SystemTime,
    ) -> BoxFuture<'a, Result<Lease, LeaseError>>;
    /// See [`LeaseTable::update_child_shards`].
    fn update_child_shards<'a>(
        &'a self,
        lease_key: &'a str,
        child_shard_ids: &'a [String],
    ) -> BoxFuture<'a, Result<Lease, LeaseError>>;
    /// See [`LeaseTable::delete_if_unchanged`].
    fn delete_if_unchanged<'a>(
        &'a self,
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<bool, LeaseError>>;
}

impl LeaseStore for LeaseTable {
    fn table_name(&self) -> &str {
        LeaseTable::table_name(self)
    }

    fn create_table(&self) -> BoxFuture<'_, Result<bool, LeaseError>> {
        Box::pin(LeaseTable::create_if_missing(self))
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Lease>, LeaseError>> {
        Box::pin(LeaseTable::list(self))
    }

    fn get<'a>(&'a self, lease_key: &'a str) -> BoxFuture<'a, Result<Option<Lease>, LeaseError>> {
        Box::pin(LeaseTable::get(self, lease_key))
    }

    fn create_if_absent<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<bool, LeaseError>> {
        Box::pin(LeaseTable::create_if_absent(self, lease))
    }

    fn create_child_lease<'a>(
        &'a self,
        parent_key: &'a str,
        holder: &'a str,
        child: &'a Lease,
    ) -> BoxFuture<'a, Result<bool, LeaseError>> {
        Box::pin(LeaseTable::create_child_lease(
            self, parent_key, holder, child,
        ))
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

    fn request_handoff<'a>(
        &'a self,
        lease: &'a Lease,
        new_owner: &'a str,
    ) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        Box::pin(LeaseTable::request_handoff(self, lease, new_owner))
    }

    fn cancel_handoff<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        Box::pin(LeaseTable::cancel_handoff(self, lease))
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

    fn prepare_checkpoint<'a>(
        &'a self,
        lease: &'a Lease,
        pending: Checkpoint,
        state: Option<Vec<u8>>,
    ) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        Box::pin(LeaseTable::prepare_checkpoint(self, lease, pending, state))
    }

    fn note_latest_start<'a>(
        &'a self,
        lease: &'a Lease,
        at: SystemTime,
    ) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        Box::pin(LeaseTable::note_latest_start(self, lease, at))
    }

    fn update_child_shards<'a>(
        &'a self,
        lease_key: &'a str,
        child_shard_ids: &'a [String],
    ) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        Box::pin(LeaseTable::update_child_shards(
            self,
            lease_key,
            child_shard_ids,
        ))
    }

    fn delete_if_unchanged<'a>(
        &'a self,
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<bool, LeaseError>> {
        Box::pin(LeaseTable::delete_if_unchanged(self, lease))
    }
}
