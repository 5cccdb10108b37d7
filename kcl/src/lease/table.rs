//! [`LeaseTable`]: the DynamoDB operations on the lease table.
//!
//! Every write to an existing lease is one conditional `UpdateItem` that names only the
//! attributes it changes (so attributes this crate does not model survive) and asks for
//! `ReturnValues = ALL_NEW`, so the caller gets the stored lease back, with its new counter.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::operation::describe_table::DescribeTableError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ScalarAttributeType, TableStatus,
};
use tokio::time::Instant;
use tracing::{debug, info};

use super::error::{LeaseError, from_sdk};
use super::model::{Checkpoint, Lease, MAX_HASH_KEY_DIGITS, is_decimal, n, s, string_set};
use super::schema;

/// The lease table of one application: a DynamoDB table whose string hash key is `leaseKey`,
/// laid out like the Java KCL 2.x's (see [`schema`](super::schema)).
///
/// A cheap handle: clones share the SDK client.
///
/// # Fencing
///
/// `leaseCounter` fences every write. [`renew`](Self::renew), [`take`](Self::take),
/// [`release`](Self::release), [`checkpoint`](Self::checkpoint) and
/// [`prepare_checkpoint`](Self::prepare_checkpoint) succeed only if the stored counter still
/// equals the caller's copy (and, except for `take`, the stored owner is the copy's owner), and
/// each bumps the counter by one, as the Java KCL does. They return the stored lease after the
/// write: use it in place of the old copy. A failed condition is
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
/// Every operation is a single request, except [`list`](Self::list) (one request per page)
/// and [`create_if_missing`](Self::create_if_missing) (polls). Dropping a write's future after
/// the request left may or may not apply the write; the caller's copy is then of unknown
/// freshness and should be re-read with [`get`](Self::get). Reads are cancel-safe.
#[derive(Debug, Clone)]
pub struct LeaseTable {
    client: Client,
    table: String,
    active_timeout: Duration,
    poll_interval: Duration,
    scan_page_limit: Option<NonZeroU32>,
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
        }
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

    /// Creates the table (on-demand billing, `leaseKey` string hash key) unless it exists,
    /// then waits until it is ACTIVE (or UPDATING, which serves requests too).
    ///
    /// Safe to call from every worker at once: a `ResourceInUseException` from a racing
    /// creator counts as "exists". Returns whether this call created the table.
    ///
    /// # Errors
    ///
    /// [`LeaseError::TableNotActive`] when the table is not ACTIVE within the
    /// [active timeout](Self::with_active_timeout); [`LeaseError::Dynamo`] when a request
    /// fails (retryable failures while waiting are retried until the timeout).
    pub async fn create_if_missing(&self) -> Result<bool, LeaseError> {
        let created = match self.table_status().await? {
            Some(status) => {
                debug!(table = %self.table, status = %status, "lease table exists");
                false
            }
            None => self.create_table().await?,
        };
        self.wait_until_active().await?;
        Ok(created)
    }

    /// The table's status, `None` when it does not exist.
    async fn table_status(&self) -> Result<Option<TableStatus>, LeaseError> {
        match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(out) => Ok(Some(
                out.table()
                    .and_then(|table| table.table_status().cloned())
                    .unwrap_or_else(|| TableStatus::from("UNKNOWN")),
            )),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(DescribeTableError::is_resource_not_found_exception) =>
            {
                Ok(None)
            }
            Err(err) => Err(from_sdk("DescribeTable", &self.table, None, err)),
        }
    }

    /// Sends CreateTable; returns whether this call created it.
    async fn create_table(&self) -> Result<bool, LeaseError> {
        let attribute = AttributeDefinition::builder()
            .attribute_name(schema::LEASE_KEY)
            .attribute_type(ScalarAttributeType::S)
            .build();
        let key = KeySchemaElement::builder()
            .attribute_name(schema::LEASE_KEY)
            .key_type(KeyType::Hash)
            .build();
        let (Ok(attribute), Ok(key)) = (attribute, key) else {
            // Both builders have every required field set above.
            return Err(LeaseError::InvalidInput {
                lease_key: String::new(),
                reason: "could not build the table's key schema",
            });
        };
        match self
            .client
            .create_table()
            .table_name(&self.table)
            .attribute_definitions(attribute)
            .key_schema(key)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
        {
            Ok(_) => {
                info!(table = %self.table, "created lease table");
                Ok(true)
            }
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(CreateTableError::is_resource_in_use_exception) =>
            {
                debug!(table = %self.table, "lease table created by another worker");
                Ok(false)
            }
            Err(err) => Err(from_sdk("CreateTable", &self.table, None, err)),
        }
    }

    async fn wait_until_active(&self) -> Result<(), LeaseError> {
        let start = Instant::now();
        loop {
            let last_status = match self.table_status().await {
                Ok(Some(TableStatus::Active | TableStatus::Updating)) => return Ok(()),
                Ok(Some(status)) => status.as_str().to_owned(),
                Ok(None) => "NOT_FOUND".to_owned(),
                Err(err) if err.is_retryable() => {
                    debug!(table = %self.table, error = %err, "describing lease table failed");
                    format!("unknown ({err})")
                }
                Err(err) => return Err(err),
            };
            let waited = start.elapsed();
            if waited >= self.active_timeout {
                return Err(LeaseError::TableNotActive {
                    table: self.table.clone(),
                    waited,
                    last_status,
                });
            }
            tokio::time::sleep(self.poll_interval.min(self.active_timeout - waited)).await;
        }
    }

    /// Every lease in the table (a consistent Scan, all pages).
    ///
    /// # Errors
    ///
    /// [`LeaseError::Dynamo`] when a Scan fails; [`LeaseError::Malformed`] when an item is not
    /// a lease.
    pub async fn list(&self) -> Result<Vec<Lease>, LeaseError> {
        let limit = self
            .scan_page_limit
            .map(|limit| i32::try_from(limit.get()).unwrap_or(i32::MAX));
        let mut leases = Vec::new();
        let mut start_key = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_limit(limit)
                .set_exclusive_start_key(start_key.take())
                .send()
                .await
                .map_err(|err| from_sdk("Scan", &self.table, None, err))?;
            for item in out.items() {
                leases.push(self.parse(item)?);
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start_key = Some(key),
                _ => break,
            }
        }
        debug!(table = %self.table, leases = leases.len(), "listed leases");
        Ok(leases)
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

    /// Writes `lease` unless a lease with its key exists. Returns whether it was written.
    ///
    /// # Errors
    ///
    /// [`LeaseError::InvalidInput`] / [`LeaseError::InvalidCheckpoint`] for a lease the Java
    /// KCL could not read back (an empty key or owner, a bad checkpoint, a hash key range that
    /// is not two decimal numbers); [`LeaseError::Dynamo`] when PutItem fails.
    pub async fn create_if_absent(&self, lease: &Lease) -> Result<bool, LeaseError> {
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

    /// Renews a lease this worker holds: bumps `leaseCounter`, expecting the copy's counter
    /// and owner.
    ///
    /// # Errors
    ///
    /// [`LeaseError::LeaseLost`] when the stored counter or owner differ (the lease was taken,
    /// or the copy is stale); [`LeaseError::InvalidInput`] when the copy has no owner;
    /// [`LeaseError::Dynamo`] when UpdateItem fails.
    pub async fn renew(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let mut update = Update::bump_counter(lease)?;
        update.expect_owner(lease)?;
        self.apply("renew", &lease.lease_key, update).await
    }

    /// Takes a lease for `new_owner` (an expired or stolen lease, or one nobody holds):
    /// sets `leaseOwner`, bumps `leaseCounter`, and adds one to `ownerSwitchesSinceCheckpoint`
    /// when the lease had another owner (the Java KCL counts only such switches). Expects the
    /// copy's counter only: the counter changes with every owner change.
    ///
    /// # Errors
    ///
    /// [`LeaseError::LeaseLost`] when the stored counter differs (another worker took or
    /// renewed it first); [`LeaseError::InvalidInput`] for an empty `new_owner`;
    /// [`LeaseError::Dynamo`] when UpdateItem fails.
    pub async fn take(&self, lease: &Lease, new_owner: &str) -> Result<Lease, LeaseError> {
        if new_owner.is_empty() {
            return Err(invalid(&lease.lease_key, "the new owner is empty"));
        }
        let mut update = Update::bump_counter(lease)?;
        update.set(schema::LEASE_OWNER, s(new_owner));
        if lease
            .lease_owner
            .as_deref()
            .is_some_and(|old| old != new_owner)
        {
            update.add(schema::OWNER_SWITCHES_SINCE_CHECKPOINT, n(1));
        }
        self.apply("take", &lease.lease_key, update).await
    }

    /// Gives a held lease back (the Java KCL's "evict"): removes `leaseOwner` and bumps
    /// `leaseCounter`, expecting the copy's counter and owner, so any worker can take it at
    /// once instead of waiting for it to expire.
    ///
    /// # Errors
    ///
    /// As for [`renew`](Self::renew).
    pub async fn release(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let mut update = Update::bump_counter(lease)?;
        update.expect_owner(lease)?;
        update.remove(schema::LEASE_OWNER);
        self.apply("release", &lease.lease_key, update).await
    }

    /// Records `checkpoint` for a held lease: sets `checkpoint` and
    /// `checkpointSubSequenceNumber`, resets `ownerSwitchesSinceCheckpoint` to 0, removes the
    /// pending checkpoint attributes, and bumps `leaseCounter`; expects the copy's counter
    /// and owner.
    ///
    /// # Errors
    ///
    /// As for [`renew`](Self::renew), plus [`LeaseError::InvalidCheckpoint`].
    pub async fn checkpoint(
        &self,
        lease: &Lease,
        checkpoint: Checkpoint,
    ) -> Result<Lease, LeaseError> {
        validate_checkpoint(&lease.lease_key, &checkpoint)?;
        let mut update = Update::bump_counter(lease)?;
        update.expect_owner(lease)?;
        update.set(schema::CHECKPOINT, s(checkpoint.stored_value()));
        update.set(
            schema::CHECKPOINT_SUB_SEQUENCE_NUMBER,
            n(checkpoint.stored_sub_sequence_number()),
        );
        update.set(schema::OWNER_SWITCHES_SINCE_CHECKPOINT, n(0));
        update.remove(schema::PENDING_CHECKPOINT);
        update.remove(schema::PENDING_CHECKPOINT_SUB_SEQUENCE_NUMBER);
        update.remove(schema::PENDING_CHECKPOINT_STATE);
        self.apply("checkpoint", &lease.lease_key, update).await
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
    pub async fn prepare_checkpoint(
        &self,
        lease: &Lease,
        pending: Checkpoint,
        state: Option<Vec<u8>>,
    ) -> Result<Lease, LeaseError> {
        validate_checkpoint(&lease.lease_key, &pending)?;
        let mut update = Update::bump_counter(lease)?;
        update.expect_owner(lease)?;
        update.set(schema::PENDING_CHECKPOINT, s(pending.stored_value()));
        update.set(
            schema::PENDING_CHECKPOINT_SUB_SEQUENCE_NUMBER,
            n(pending.stored_sub_sequence_number()),
        );
        match state {
            Some(state) => update.set(
                schema::PENDING_CHECKPOINT_STATE,
                AttributeValue::B(Blob::new(state)),
            ),
            None => update.remove(schema::PENDING_CHECKPOINT_STATE),
        }
        self.apply("prepare_checkpoint", &lease.lease_key, update)
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
    pub async fn update_child_shards(
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

    /// Deletes the lease `lease_key` (unconditionally; deleting a missing lease succeeds).
    ///
    /// # Errors
    ///
    /// [`LeaseError::Dynamo`] when DeleteItem fails.
    pub async fn delete(&self, lease_key: &str) -> Result<(), LeaseError> {
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
    async fn apply(
        &self,
        operation: &'static str,
        lease_key: &str,
        update: Update,
    ) -> Result<Lease, LeaseError> {
        let (expression, condition, names, values) = update.into_parts();
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

/// An UpdateItem being assembled: SET / REMOVE / ADD clauses, conditions, and the placeholders
/// they use (DynamoDB rejects unused placeholders, so each is registered on use).
#[derive(Debug, Default)]
struct Update {
    set: Vec<String>,
    remove: Vec<String>,
    add: Vec<String>,
    conditions: Vec<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Update {
    /// `leaseCounter = copy + 1`, expecting the copy's counter.
    fn bump_counter(lease: &Lease) -> Result<Self, LeaseError> {
        let next = lease
            .lease_counter
            .checked_add(1)
            .ok_or_else(|| invalid(&lease.lease_key, "the lease counter is at its maximum"))?;
        let mut update = Self::default();
        update.set(schema::LEASE_COUNTER, n(next));
        let counter = update.name(schema::LEASE_COUNTER);
        let expected = update.value(":expectedLeaseCounter", n(lease.lease_counter));
        update.conditions.push(format!("{counter} = {expected}"));
        Ok(update)
    }

    /// Expects the stored owner to be the copy's owner, which must exist.
    fn expect_owner(&mut self, lease: &Lease) -> Result<(), LeaseError> {
        let owner = lease
            .lease_owner
            .as_deref()
            .ok_or_else(|| invalid(&lease.lease_key, "the lease has no owner"))?;
        let name = self.name(schema::LEASE_OWNER);
        let expected = self.value(":expectedLeaseOwner", s(owner));
        self.conditions.push(format!("{name} = {expected}"));
        Ok(())
    }

    /// Expects the lease to exist.
    fn expect_exists(&mut self) {
        let key = self.name(schema::LEASE_KEY);
        self.conditions.push(format!("attribute_exists({key})"));
    }

    fn set(&mut self, attribute: &'static str, value: AttributeValue) {
        let name = self.name(attribute);
        let value = self.value(&format!(":{attribute}"), value);
        self.set.push(format!("{name} = {value}"));
    }

    fn remove(&mut self, attribute: &'static str) {
        let name = self.name(attribute);
        self.remove.push(name);
    }

    fn add(&mut self, attribute: &'static str, value: AttributeValue) {
        let name = self.name(attribute);
        let value = self.value(&format!(":{attribute}"), value);
        self.add.push(format!("{name} {value}"));
    }

    fn name(&mut self, attribute: &'static str) -> String {
        let placeholder = format!("#{attribute}");
        self.names.insert(placeholder.clone(), attribute.to_owned());
        placeholder
    }

    fn value(&mut self, placeholder: &str, value: AttributeValue) -> String {
        self.values.insert(placeholder.to_owned(), value);
        placeholder.to_owned()
    }

    /// The update expression, the condition expression, and the placeholders.
    fn into_parts(
        self,
    ) -> (
        String,
        String,
        HashMap<String, String>,
        HashMap<String, AttributeValue>,
    ) {
        let mut clauses = Vec::new();
        for (keyword, parts) in [
            ("SET", &self.set),
            ("REMOVE", &self.remove),
            ("ADD", &self.add),
        ] {
            if !parts.is_empty() {
                clauses.push(format!("{keyword} {}", parts.join(", ")));
            }
        }
        (
            clauses.join(" "),
            self.conditions.join(" AND "),
            self.names,
            self.values,
        )
    }
}

fn invalid(lease_key: &str, reason: &'static str) -> LeaseError {
    LeaseError::InvalidInput {
        lease_key: lease_key.to_owned(),
        reason,
    }
}

fn validate_key(lease_key: &str) -> Result<(), LeaseError> {
    if lease_key.is_empty() {
        Err(invalid(lease_key, "the lease key is empty"))
    } else {
        Ok(())
    }
}

fn validate_new_lease(lease: &Lease) -> Result<(), LeaseError> {
    let key = lease.lease_key.as_str();
    validate_key(key)?;
    if lease.lease_owner.as_deref() == Some("") {
        return Err(invalid(key, "the owner is empty"));
    }
    validate_checkpoint(key, &lease.checkpoint)?;
    if let Some(pending) = &lease.pending_checkpoint {
        validate_checkpoint(key, pending)?;
    }
    if let Some((start, end)) = &lease.hash_key_range {
        if !is_decimal(start, MAX_HASH_KEY_DIGITS) || !is_decimal(end, MAX_HASH_KEY_DIGITS) {
            return Err(invalid(
                key,
                "the hash key range is not two decimal numbers",
            ));
        }
    }
    Ok(())
}

fn validate_checkpoint(lease_key: &str, checkpoint: &Checkpoint) -> Result<(), LeaseError> {
    checkpoint
        .validate()
        .map_err(|source| LeaseError::InvalidCheckpoint {
            lease_key: lease_key.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_update_expression() {
        let mut lease = Lease::new("shard-1", Checkpoint::TrimHorizon);
        lease.lease_owner = Some("w".into());
        lease.lease_counter = 4;
        let mut update = Update::bump_counter(&lease).unwrap();
        update.expect_owner(&lease).unwrap();
        update.set(schema::CHECKPOINT, s("SHARD_END"));
        update.remove(schema::PENDING_CHECKPOINT);
        update.add(schema::OWNER_SWITCHES_SINCE_CHECKPOINT, n(1));
        let (expression, condition, names, values) = update.into_parts();
        assert_eq!(
            expression,
            "SET #leaseCounter = :leaseCounter, #checkpoint = :checkpoint \
             REMOVE #pendingCheckpoint ADD #ownerSwitchesSinceCheckpoint \
             :ownerSwitchesSinceCheckpoint"
        );
        assert_eq!(
            condition,
            "#leaseCounter = :expectedLeaseCounter AND #leaseOwner = :expectedLeaseOwner"
        );
        assert_eq!(names.len(), 5);
        assert_eq!(values[":leaseCounter"], n(5));
        assert_eq!(values[":expectedLeaseCounter"], n(4));
        assert_eq!(values[":expectedLeaseOwner"], s("w"));
    }

    #[test]
    fn owner_is_required_and_counter_cannot_overflow() {
        let mut lease = Lease::new("shard-1", Checkpoint::TrimHorizon);
        let mut update = Update::bump_counter(&lease).unwrap();
        assert!(matches!(
            update.expect_owner(&lease),
            Err(LeaseError::InvalidInput { .. })
        ));
        lease.lease_counter = u64::MAX;
        assert!(matches!(
            Update::bump_counter(&lease),
            Err(LeaseError::InvalidInput { .. })
        ));
    }

    #[test]
    fn handles_are_send_sync_clone() {
        fn assert_traits<T: Send + Sync + Clone + 'static>() {}
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_traits::<LeaseTable>();
        assert_traits::<Lease>();
        assert_send_sync::<LeaseError>();
    }
}
