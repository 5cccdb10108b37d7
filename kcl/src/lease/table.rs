//! [`LeaseTable`]: the DynamoDB operations on the lease table.
//!
//! Every write to an existing lease is one conditional `UpdateItem` that names only the
//! attributes it changes (so attributes this crate does not model survive) and asks for
//! `ReturnValues = ALL_NEW`, so the caller gets the stored lease back, with its new counter.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Put, ReturnValue, TransactWriteItem,
};
use tracing::{debug, warn};

use super::codec::{epoch_millis, n, s, string_set};
use super::create::TableOptions;
use super::error::{LeaseError, from_sdk, is_access_denied};
use super::model::{Checkpoint, Lease};
use super::scan::SkipReason;
use super::schema;
use super::update::{
    Update, UpdateParts, invalid, validate_checkpoint, validate_key, validate_new_lease,
};

/// The lease table of one application: a DynamoDB table whose string hash key is `leaseKey`,
/// laid out like the Java KCL 2.x's (`schema.rs`).
///
/// A cheap handle: clones share the SDK client.
///
/// # What is public
///
/// Reading ([`get`](Self::get), [`scan`](Self::scan), [`list`](Self::list)), creating the
/// table ([`create_if_missing`](Self::create_if_missing)) and creating leases nobody holds
/// ([`create_lease`](Self::create_lease)). The writes to existing leases are crate-private:
/// each is conditional on the counter of the caller's copy of the lease, and any copy will
/// do, so the crate makes them only through its lease coordinator, fenced to the holding they
/// are for (see [Layers](crate#layers)).
///
/// # Fencing
///
/// `leaseCounter` fences every write to an existing lease. `renew`, `take`, `release`,
/// `checkpoint` and `prepare_checkpoint` succeed only if the stored counter still equals the
/// caller's copy (and, except for `take`, the stored owner is the copy's owner), and each
/// bumps the counter by one, as the Java KCL does. They return the stored lease after the
/// write: the caller uses it in place of the old copy. A failed condition is
/// [`LeaseError::LeaseLost`]; it is never retried here.
///
/// # Retries
///
/// The SDK client retries throttling and transient failures on its own (its retry config);
/// what reaches the caller is classified by [`LeaseError::kind`]. A retried write can meet its
/// own earlier, applied attempt: the condition then fails and the caller sees
/// [`LeaseError::LeaseLost`] although it holds the lease at the next counter. The Java KCL
/// re-reads after a failed renew to spot this; a caller that wants the same can
/// [`get`](Self::get) the lease and compare owner and counter. Treating it as lost is safe:
/// the shard is re-taken and processing resumes from the checkpoint.
///
/// # Cancel safety
///
/// Every operation is a single request, except [`list`](Self::list) and
/// [`scan`](Self::scan) (one request per page) and
/// [`create_if_missing`](Self::create_if_missing) (polls). Dropping a write's future after
/// the request left may or may not apply the write; the caller's copy is then of unknown
/// freshness and is re-read with [`get`](Self::get). Reads are cancel-safe.
#[derive(Debug, Clone)]
pub struct LeaseTable {
    client: Client,
    table: String,
    active_timeout: Duration,
    poll_interval: Duration,
    scan_page_limit: Option<NonZeroU32>,
    options: TableOptions,
    /// Keys of skipped rows already warned about (shared by clones).
    warned: Arc<Mutex<HashSet<String>>>,
}

impl LeaseTable {
    /// Default for [`with_active_timeout`](Self::with_active_timeout): 10 minutes, the Java
    /// KCL's wait for its lease table.
    pub const DEFAULT_ACTIVE_TIMEOUT: Duration = Duration::from_secs(600);
    /// Default for [`with_poll_interval`](Self::with_poll_interval): 1 s (the Java KCL polls
    /// every 10 s; DescribeTable is cheap and new on-demand tables are ACTIVE within seconds).
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

    /// The lease table `table_name`, reached through `client`.
    pub fn new(client: Client, table_name: impl Into<String>) -> Self {
        Self {
            client,
            table: table_name.into(),
            active_timeout: Self::DEFAULT_ACTIVE_TIMEOUT,
            poll_interval: Self::DEFAULT_POLL_INTERVAL,
            scan_page_limit: None,
            options: TableOptions::default(),
            warned: Arc::default(),
        }
    }

    /// How [`create_if_missing`](Self::create_if_missing) creates the table (default:
    /// [`TableOptions::default`], on-demand billing).
    pub fn with_options(mut self, options: TableOptions) -> Self {
        self.options = options;
        self
    }

    /// How long [`create_if_missing`](Self::create_if_missing) waits for the table to become
    /// ACTIVE (default [`DEFAULT_ACTIVE_TIMEOUT`](Self::DEFAULT_ACTIVE_TIMEOUT)).
    pub fn with_active_timeout(mut self, timeout: Duration) -> Self {
        self.active_timeout = timeout;
        self
    }

    /// The pause between DescribeTable calls while waiting for ACTIVE (default
    /// [`DEFAULT_POLL_INTERVAL`](Self::DEFAULT_POLL_INTERVAL)).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The most items one Scan page of [`list`](Self::list) returns (DynamoDB's `Limit`).
    /// Default: no limit, so pages end at DynamoDB's 1 MB.
    pub fn with_scan_page_limit(mut self, limit: NonZeroU32) -> Self {
        self.scan_page_limit = Some(limit);
        self
    }

    /// The table's name.
    pub fn table_name(&self) -> &str {
        &self.table
    }

    /// How a new table is created.
    pub fn options(&self) -> &TableOptions {
        &self.options
    }

    pub(super) fn client(&self) -> &Client {
        &self.client
    }

    pub(super) fn active_timeout(&self) -> Duration {
        self.active_timeout
    }

    pub(super) fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    pub(super) fn scan_page_limit(&self) -> Option<NonZeroU32> {
        self.scan_page_limit
    }

    /// Whether `key` was not warned about yet (and remembers it).
    pub(super) fn first_warning(&self, key: &str, reason: &SkipReason) -> bool {
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        warned.insert(format!("{key}\u{0}{reason}"))
    }

    /// The lease `lease_key` (consistent read), or `None` when there is none.
    ///
    /// # Errors
    ///
    /// [`LeaseError::Dynamo`] when GetItem fails; [`LeaseError::Malformed`] when the item is
    /// not a lease.
    pub async fn get(&self, lease_key: &str) -> Result<Option<Lease>, LeaseError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(schema::LEASE_KEY, s(lease_key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| from_sdk("GetItem", &self.table, None, err))?;
        match out.item {
            Some(item) if !item.is_empty() => self.parse(&item).map(Some),
            _ => Ok(None),
        }
    }

    /// Creates `lease` unless a lease with its key exists, and returns whether it was written:
    /// a lease nobody holds yet, which the first coordinator to see it takes. To seed a table
    /// (the scheduler creates its stream's leases itself, from the shards), or to share leases
    /// that are not Kinesis shards over a fleet of [`LeaseCoordinator`]s.
    ///
    /// It cannot change a stored lease (the write is conditional on the key being absent), so
    /// it cannot write into anyone's holding; and it refuses a lease that names a worker, which
    /// would look held by a worker that never took it.
    ///
    /// [`LeaseCoordinator`]: crate::coordinator::LeaseCoordinator
    ///
    /// # Errors
    ///
    /// [`LeaseError::InvalidInput`] for a lease with an owner, a checkpoint owner or a handoff
    /// request id, or one the Java KCL could not read back (an empty key, a hash key range
    /// that is not two decimal numbers); [`LeaseError::InvalidCheckpoint`] for a bad
    /// checkpoint; [`LeaseError::Dynamo`] when PutItem fails.
    pub async fn create_lease(&self, lease: &Lease) -> Result<bool, LeaseError> {
        if lease.lease_owner.is_some()
            || lease.checkpoint_owner.is_some()
            || lease.handoff_request_id.is_some()
        {
            return Err(invalid(
                &lease.lease_key,
                "a new lease names no worker: the first coordinator to see it takes it",
            ));
        }
        self.create_if_absent(lease).await
    }

    /// Writes `lease` unless a lease with its key exists. Returns whether it was written.
    ///
    /// # Errors
    ///
    /// [`LeaseError::InvalidInput`] / [`LeaseError::InvalidCheckpoint`] for a lease the Java
    /// KCL could not read back (an empty key or owner, a bad checkpoint, a hash key range that
    /// is not two decimal numbers); [`LeaseError::Dynamo`] when PutItem fails.
    pub(crate) async fn create_if_absent(&self, lease: &Lease) -> Result<bool, LeaseError> {
        validate_new_lease(lease)?;
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(lease.to_item()))
            .condition_expression("attribute_not_exists(#leaseKey)")
            .expression_attribute_names("#leaseKey", schema::LEASE_KEY)
            .send()
            .await;
        match result.map_err(|err| from_sdk("PutItem", &self.table, Some(&lease.lease_key), err)) {
            Ok(_) => {
                debug!(table = %self.table, lease_key = %lease.lease_key, "created lease");
                Ok(true)
            }
            Err(LeaseError::LeaseLost { .. }) => {
                debug!(table = %self.table, lease_key = %lease.lease_key, "lease already exists");
                Ok(false)
            }
            Err(err) => Err(err),
        }
    }

    /// Creates the lease of a child shard, absent yet, only while the parent's lease is stored,
    /// not finished (`SHARD_END`) and held by `holder` (its `leaseOwner` outside a handoff, its
    /// `checkpointOwner` during one): one DynamoDB transaction (a condition check on the parent
    /// and a conditional put), so a request from a stale holder of the parent that lands late
    /// (after the parent was finished and deleted, and the child processed and deleted too)
    /// creates nothing. Returns whether the child was created (`false`: it exists already). The
    /// row is the one the Java KCL writes; the transaction needs `dynamodb:ConditionCheckItem`
    /// besides `PutItem`, and without it the child is created unfenced (with a warning), as
    /// [`create_if_absent`](Self::create_if_absent) does.
    ///
    /// # Errors
    ///
    /// [`LeaseError::LeaseLost`] (for the parent) when the parent is gone, finished or held by
    /// another worker; [`LeaseError::Dynamo`] when the transaction fails otherwise.
    pub(crate) async fn create_child_lease(
        &self,
        parent_key: &str,
        holder: &str,
        child: &Lease,
    ) -> Result<bool, LeaseError> {
        validate_new_lease(child)?;
        validate_key(parent_key)?;
        let invalid = |reason: &'static str| LeaseError::InvalidInput {
            lease_key: child.lease_key.clone(),
            reason,
        };
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .key(schema::LEASE_KEY, s(parent_key))
            .condition_expression(
                "attribute_exists(#leaseKey) AND #checkpoint <> :shardEnd AND \
                 ((#leaseOwner = :holder AND attribute_not_exists(#checkpointOwner)) OR #checkpointOwner = :holder)",
            )
            .expression_attribute_names("#leaseKey", schema::LEASE_KEY)
            .expression_attribute_names("#checkpoint", schema::CHECKPOINT)
            .expression_attribute_names("#leaseOwner", schema::LEASE_OWNER)
            .expression_attribute_names("#checkpointOwner", schema::CHECKPOINT_OWNER)
            .expression_attribute_values(":shardEnd", s(schema::sentinel::SHARD_END))
            .expression_attribute_values(":holder", s(holder))
            .build()
            .map_err(|_| invalid("the parent's condition check could not be built"))?;
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(child.to_item()))
            .condition_expression("attribute_not_exists(#leaseKey)")
            .expression_attribute_names("#leaseKey", schema::LEASE_KEY)
            .build()
            .map_err(|_| invalid("the child's put could not be built"))?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().condition_check(check).build())
            .transact_items(TransactWriteItem::builder().put(put).build())
            .send()
            .await;
        match result {
            Ok(_) => {
                debug!(table = %self.table, lease_key = %child.lease_key, parent = parent_key, "created child lease");
                Ok(true)
            }
            Err(err) => {
                if let Some(TransactWriteItemsError::TransactionCanceledException(canceled)) =
                    err.as_service_error()
                {
                    // One reason per item, in order: the parent's check, then the put.
                    let failed = |index: usize| {
                        canceled
                            .cancellation_reasons()
                            .get(index)
                            .and_then(|reason| reason.code())
                            == Some("ConditionalCheckFailed")
                    };
                    if failed(0) {
                        return Err(LeaseError::LeaseLost {
                            lease_key: parent_key.to_owned(),
                        });
                    }
                    if failed(1) {
                        debug!(table = %self.table, lease_key = %child.lease_key, "child lease already exists");
                        return Ok(false);
                    }
                }
                if is_access_denied(&err) {
                    // Policies written for the Java KCL allow PutItem but not
                    // ConditionCheckItem: the child is created unfenced, as the Java KCL does.
                    warn!(
                        table = %self.table,
                        child = %child.lease_key,
                        "the fenced child creation (a transaction) is not allowed: creating it unfenced; allow dynamodb:ConditionCheckItem on the lease table"
                    );
                    return self.create_if_absent(child).await;
                }
                Err(from_sdk("TransactWriteItems", &self.table, None, err))
            }
        }
    }

    /// Renews a lease this worker holds: bumps `leaseCounter`, expecting the copy's counter
    /// and owner.
    ///
    /// # Errors
    ///
    /// [`LeaseError::LeaseLost`] when the stored counter or owner differ (the lease was taken,
    /// or the copy is stale); [`LeaseError::InvalidInput`] when the copy has no owner;
    /// [`LeaseError::Dynamo`] when UpdateItem fails.
    pub(crate) async fn renew(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.apply_held("renew", lease, |_| {}).await
    }

    /// Takes a lease for `new_owner` (an expired or stolen lease, or one nobody holds):
    /// sets `leaseOwner`, removes `checkpointOwner` (ending any handoff, as the Java KCL 3.x's
    /// take does) and this crate's `handoffRequestId`, bumps `leaseCounter`, and adds one to `ownerSwitchesSinceCheckpoint` when
    /// the lease changes hands: its [holder](Lease::holder) was another worker (as the Java
    /// KCL counts owner changes, a handoff completed by force included). Expects the copy's
    /// counter only: the counter changes with every owner change.
    ///
    /// # Errors
    ///
    /// [`LeaseError::LeaseLost`] when the stored counter differs (another worker took or
    /// renewed it first); [`LeaseError::InvalidInput`] for an empty `new_owner`;
    /// [`LeaseError::Dynamo`] when UpdateItem fails.
    pub(crate) async fn take(&self, lease: &Lease, new_owner: &str) -> Result<Lease, LeaseError> {
        if new_owner.is_empty() {
            return Err(invalid(&lease.lease_key, "the new owner is empty"));
        }
        let mut update = Update::bump_counter(lease)?;
        update.set(schema::LEASE_OWNER, s(new_owner));
        update.remove(schema::CHECKPOINT_OWNER);
        update.remove(schema::HANDOFF_REQUEST_ID);
        let switched = lease.holder().is_some_and(|old| old != new_owner);
        if switched {
            update.add(schema::OWNER_SWITCHES_SINCE_CHECKPOINT, n(1));
        }
        self.apply("take", &lease.lease_key, update).await
    }

    /// Asks for a lease held by another worker to be handed over to `new_owner` (the Java KCL
    /// 3.x's graceful handoff): sets `leaseOwner` to `new_owner`, `checkpointOwner` to the
    /// current owner and `handoffRequestId` to a new id (returned in the stored lease), expecting the copy's counter and owner and no handoff in progress. The
    /// counter is left alone, so the holder's renewals go on: it keeps processing, checkpoints,
    /// then lets go with [`release`](Self::release), which removes `checkpointOwner`; the new
    /// owner then [`take`](Self::take)s it (or takes it after a timeout if the holder never
    /// answers, which also removes `checkpointOwner`).
    ///
    /// # Errors
    ///
    /// [`LeaseError::LeaseLost`] when the stored lease changed or a handoff is already in
    /// progress; [`LeaseError::InvalidInput`] when the copy has no owner or `new_owner` is empty
    /// or the owner itself; [`LeaseError::Dynamo`] when UpdateItem fails.
    pub(crate) async fn request_handoff(
        &self,
        lease: &Lease,
        new_owner: &str,
    ) -> Result<Lease, LeaseError> {
        let Some(holder) = lease.lease_owner.as_deref() else {
            return Err(invalid(
                &lease.lease_key,
                "the lease has no owner to hand it over",
            ));
        };
        if new_owner.is_empty() || new_owner == holder {
            return Err(invalid(
                &lease.lease_key,
                "the new owner is empty or the holder",
            ));
        }
        let mut update = Update::default();
        update.expect_counter(lease);
        update.expect_owner(lease)?;
        update.expect_no_handoff();
        update.set(schema::LEASE_OWNER, s(new_owner));
        update.set(schema::CHECKPOINT_OWNER, s(holder));
        update.set(
            schema::HANDOFF_REQUEST_ID,
            s(&uuid::Uuid::new_v4().to_string()),
        );
        self.apply("request_handoff", &lease.lease_key, update)
            .await
    }

    /// Withdraws a handoff this worker asked for (it is shutting down before the holder let
    /// go): sets `leaseOwner` back to the holder (`checkpointOwner`) and removes
    /// `checkpointOwner`, expecting both owner fields of the copy; the counter is left alone,
    /// so the holder goes on as if nothing was asked.
    ///
    /// # Errors
    ///
    /// [`LeaseError::LeaseLost`] when the owner fields changed (the holder let go already, or
    /// another worker took the lease); [`LeaseError::InvalidInput`] when the copy is not in a
    /// handoff; [`LeaseError::Dynamo`] when UpdateItem fails.
    pub(crate) async fn cancel_handoff(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let Some(holder) = lease.checkpoint_owner.as_deref() else {
            return Err(invalid(
                &lease.lease_key,
                "the lease is not being handed over",
            ));
        };
        let mut update = Update::default();
        update.expect_owner(lease)?;
        update.set(schema::LEASE_OWNER, s(holder));
        update.remove(schema::CHECKPOINT_OWNER);
        update.remove(schema::HANDOFF_REQUEST_ID);
        self.apply("cancel_handoff", &lease.lease_key, update).await
    }

    /// Gives a held lease back (the Java KCL's "evict"): bumps `leaseCounter`, expecting the
    /// copy's counter and owner fields, and removes `leaseOwner` so any worker can take it at
    /// once instead of waiting for it to expire. During a handoff (the copy has a
    /// `checkpointOwner`) it removes `checkpointOwner` instead, leaving the lease to the
    /// `leaseOwner` it is being handed to, as the Java KCL 3.x does.
    ///
    /// # Errors
    ///
    /// As for [`renew`](Self::renew).
    pub(crate) async fn release(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.apply_held("release", lease, |update| {
            if lease.checkpoint_owner.is_some() {
                update.remove(schema::CHECKPOINT_OWNER);
            } else {
                update.remove(schema::LEASE_OWNER);
            }
        })
        .await
    }

    /// Records `checkpoint` for a held lease: sets `checkpoint` and
    /// `checkpointSubSequenceNumber`, resets `ownerSwitchesSinceCheckpoint` to 0, removes the
    /// pending checkpoint attributes, and bumps `leaseCounter`; expects the copy's counter
    /// and owner.
    ///
    /// # Errors
    ///
    /// As for [`renew`](Self::renew), plus [`LeaseError::InvalidCheckpoint`].
    pub(crate) async fn checkpoint(
        &self,
        lease: &Lease,
        checkpoint: Checkpoint,
    ) -> Result<Lease, LeaseError> {
        validate_checkpoint(&lease.lease_key, &checkpoint)?;
        self.apply_held("checkpoint", lease, |update| {
            set_checkpoint(
                update,
                schema::CHECKPOINT,
                schema::CHECKPOINT_SUB_SEQUENCE_NUMBER,
                &checkpoint,
            );
            update.set(schema::OWNER_SWITCHES_SINCE_CHECKPOINT, n(0));
            update.remove(schema::PENDING_CHECKPOINT);
            update.remove(schema::PENDING_CHECKPOINT_SUB_SEQUENCE_NUMBER);
            update.remove(schema::PENDING_CHECKPOINT_STATE);
            update.remove(schema::LATEST_STARTED_AT);
        })
        .await
    }

    /// Notes when a held lease still at the `LATEST` checkpoint was first read: sets this
    /// crate's `latestStartedAt` to `at` (whole milliseconds since the Unix epoch) and bumps
    /// `leaseCounter`; expects the copy's counter and owner. A later reader of the lease (a
    /// restart, another worker after a failover) starts `AT_TIMESTAMP` of that time instead
    /// of `LATEST`; the next [`checkpoint`](Self::checkpoint) removes it. The Java KCL ignores
    /// the attribute, and its writes keep it.
    ///
    /// # Errors
    ///
    /// As for [`renew`](Self::renew); [`LeaseError::InvalidInput`] when the copy's checkpoint
    /// is not `LATEST`.
    pub(crate) async fn note_latest_start(
        &self,
        lease: &Lease,
        at: SystemTime,
    ) -> Result<Lease, LeaseError> {
        if lease.checkpoint != Checkpoint::Latest {
            return Err(LeaseError::InvalidInput {
                lease_key: lease.lease_key.clone(),
                reason: "only a lease at the LATEST checkpoint notes when it was first read",
            });
        }
        self.apply_held("note_latest_start", lease, |update| {
            update.set(schema::LATEST_STARTED_AT, n(epoch_millis(at)));
        })
        .await
    }

    /// Prepares a checkpoint (the first phase of a two-phase checkpoint): sets
    /// `pendingCheckpoint` and `pendingCheckpointSubSequenceNumber`, sets
    /// `pendingCheckpointState` to `state` (or removes it when `None`), and bumps
    /// `leaseCounter`; expects the copy's counter and owner. The committed checkpoint is not
    /// changed; [`checkpoint`](Self::checkpoint) clears the pending attributes.
    ///
    /// # Errors
    ///
    /// As for [`checkpoint`](Self::checkpoint).
    pub(crate) async fn prepare_checkpoint(
        &self,
        lease: &Lease,
        pending: Checkpoint,
        state: Option<Vec<u8>>,
    ) -> Result<Lease, LeaseError> {
        validate_checkpoint(&lease.lease_key, &pending)?;
        self.apply_held("prepare_checkpoint", lease, |update| {
            set_checkpoint(
                update,
                schema::PENDING_CHECKPOINT,
                schema::PENDING_CHECKPOINT_SUB_SEQUENCE_NUMBER,
                &pending,
            );
            match state {
                Some(state) => update.set(
                    schema::PENDING_CHECKPOINT_STATE,
                    AttributeValue::B(Blob::new(state)),
                ),
                None => update.remove(schema::PENDING_CHECKPOINT_STATE),
            }
        })
        .await
    }

    /// Records the child shards of a closed shard in `childShardIds` (removes the attribute
    /// when `child_shard_ids` is empty). Like the Java KCL, this only expects the lease to
    /// exist and leaves `leaseCounter` alone: the lineage is a fact about the stream, not a
    /// claim on the lease.
    ///
    /// # Errors
    ///
    /// [`LeaseError::LeaseLost`] when the lease does not exist; [`LeaseError::Dynamo`] when
    /// UpdateItem fails.
    pub(crate) async fn update_child_shards(
        &self,
        lease_key: &str,
        child_shard_ids: &[String],
    ) -> Result<Lease, LeaseError> {
        validate_key(lease_key)?;
        let mut update = Update::default();
        match string_set(child_shard_ids) {
            Some(set) => update.set(schema::CHILD_SHARD_IDS, set),
            None => update.remove(schema::CHILD_SHARD_IDS),
        }
        update.expect_exists();
        self.apply("update_child_shards", lease_key, update).await
    }

    /// Deletes a finished lease, unless it changed since `lease` was read: the delete expects
    /// the copy's counter and checkpoint. Returns whether this call deleted it (`false`: it
    /// changed, or another worker deleted it first), so of several workers cleaning up the
    /// same lease exactly one deletes it.
    ///
    /// # Errors
    ///
    /// [`LeaseError::Dynamo`] when DeleteItem fails; [`LeaseError::InvalidInput`] for an empty
    /// key.
    pub(crate) async fn delete_if_unchanged(&self, lease: &Lease) -> Result<bool, LeaseError> {
        validate_key(&lease.lease_key)?;
        let mut update = Update::default();
        update.expect_counter(lease);
        update.expect_checkpoint(lease);
        let UpdateParts {
            condition,
            names,
            values,
            ..
        } = update.into_parts();
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(schema::LEASE_KEY, s(&lease.lease_key))
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match result {
            Ok(_) => {
                debug!(table = %self.table, lease_key = %lease.lease_key, "deleted lease");
                Ok(true)
            }
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(DeleteItemError::is_conditional_check_failed_exception) =>
            {
                Ok(false)
            }
            Err(err) => Err(from_sdk(
                "DeleteItem",
                &self.table,
                Some(&lease.lease_key),
                err,
            )),
        }
    }

    /// Deletes the lease `lease_key` (unconditionally; deleting a missing lease succeeds).
    ///
    /// # Errors
    ///
    /// [`LeaseError::Dynamo`] when DeleteItem fails.
    #[cfg(test)]
    pub(crate) async fn delete(&self, lease_key: &str) -> Result<(), LeaseError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(schema::LEASE_KEY, s(lease_key))
            .send()
            .await
            .map_err(|err| from_sdk("DeleteItem", &self.table, Some(lease_key), err))?;
        debug!(table = %self.table, lease_key, "deleted lease");
        Ok(())
    }

    /// Sends `update` as a conditional UpdateItem and reads back the stored lease.
    /// Applies a write to a lease this worker holds: `build`'s changes plus a `leaseCounter`
    /// bump, expecting the copy's counter and owner fields.
    async fn apply_held(
        &self,
        operation: &'static str,
        lease: &Lease,
        build: impl FnOnce(&mut Update),
    ) -> Result<Lease, LeaseError> {
        let mut update = Update::bump_counter(lease)?;
        update.expect_owner(lease)?;
        build(&mut update);
        self.apply(operation, &lease.lease_key, update).await
    }

    /// Sends one conditional UpdateItem and reads the stored lease back (also the operator's
    /// reset in `reset.rs`).
    pub(super) async fn apply(
        &self,
        operation: &'static str,
        lease_key: &str,
        update: Update,
    ) -> Result<Lease, LeaseError> {
        let UpdateParts {
            expression,
            condition,
            names,
            values,
        } = update.into_parts();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(schema::LEASE_KEY, s(lease_key))
            .update_expression(expression)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values((!values.is_empty()).then_some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|err| from_sdk("UpdateItem", &self.table, Some(lease_key), err));
        let out = match result {
            Ok(out) => out,
            Err(err) => {
                debug!(table = %self.table, lease_key, operation, error = %err, "lease write failed");
                return Err(err);
            }
        };
        let lease = self.parse(&out.attributes.unwrap_or_default())?;
        debug!(
            table = %self.table,
            lease_key,
            operation,
            counter = lease.lease_counter,
            owner = lease.lease_owner.as_deref().unwrap_or(""),
            "lease written"
        );
        Ok(lease)
    }

    fn parse(&self, item: &HashMap<String, AttributeValue>) -> Result<Lease, LeaseError> {
        Lease::from_item(item).map_err(|source| LeaseError::Malformed {
            table: self.table.clone(),
            source,
        })
    }
}

/// Sets a checkpoint's two stored attributes (the committed or the pending pair).
fn set_checkpoint(
    update: &mut Update,
    value_attribute: &'static str,
    sub_sequence_attribute: &'static str,
    checkpoint: &Checkpoint,
) {
    update.set(value_attribute, s(checkpoint.stored_value()));
    update.set(
        sub_sequence_attribute,
        n(checkpoint.stored_sub_sequence_number()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_send_sync_clone() {
        fn assert_traits<T: Send + Sync + Clone + 'static>() {}
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_traits::<LeaseTable>();
        assert_traits::<Lease>();
        assert_send_sync::<LeaseError>();
    }

    /// A table handle whose client is never reached (no endpoint, no credentials).
    fn offline_table() -> LeaseTable {
        let client = Client::from_conf(
            aws_sdk_dynamodb::Config::builder()
                .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
                .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
                .build(),
        );
        LeaseTable::new(client, "offline")
    }

    #[tokio::test]
    async fn create_lease_refuses_a_lease_that_names_a_worker_before_any_request() {
        let table = offline_table();
        let named: [fn(&mut Lease); 3] = [
            |lease| lease.lease_owner = Some("worker-1".into()),
            |lease| lease.checkpoint_owner = Some("worker-1".into()),
            |lease| lease.handoff_request_id = Some("request-1".into()),
        ];
        for name in named {
            let mut lease = Lease::new("shardId-000000000000", Checkpoint::TrimHorizon);
            name(&mut lease);
            let refused = table.create_lease(&lease).await;
            assert!(
                matches!(refused, Err(LeaseError::InvalidInput { ref lease_key, .. }) if lease_key == "shardId-000000000000"),
                "{refused:?}"
            );
        }
    }
}
