//! [`Update`]: one conditional UpdateItem (or DeleteItem condition) being assembled, and the
//! checks every write makes before it is sent.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::codec::{n, s};
use super::error::LeaseError;
use super::model::{Checkpoint, Lease, MAX_HASH_KEY_DIGITS, is_decimal};
use super::schema;

/// SET / REMOVE / ADD clauses, conditions, and the placeholders they use (DynamoDB rejects
/// unused placeholders, so each is registered on use).
#[derive(Debug, Default)]
pub(super) struct Update {
    set: Vec<String>,
    remove: Vec<String>,
    add: Vec<String>,
    conditions: Vec<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

/// The parts of an [`Update`], ready for the SDK.
pub(super) struct UpdateParts {
    pub(super) expression: String,
    pub(super) condition: String,
    pub(super) names: HashMap<String, String>,
    pub(super) values: HashMap<String, AttributeValue>,
}

impl Update {
    /// `leaseCounter = copy + 1`, expecting the copy's counter.
    pub(super) fn bump_counter(lease: &Lease) -> Result<Self, LeaseError> {
        let next = lease
            .lease_counter
            .checked_add(1)
            .ok_or_else(|| invalid(&lease.lease_key, "the lease counter is at its maximum"))?;
        let mut update = Self::default();
        update.set(schema::LEASE_COUNTER, n(next));
        update.expect_counter(lease);
        Ok(update)
    }

    /// Expects the copy's counter (without changing it).
    pub(super) fn expect_counter(&mut self, lease: &Lease) {
        let counter = self.name(schema::LEASE_COUNTER);
        let expected = self.value(":expectedLeaseCounter", n(lease.lease_counter));
        self.conditions.push(format!("{counter} = {expected}"));
    }

    /// Expects the stored owner fields to be the copy's: `leaseOwner` (which must exist) and
    /// `checkpointOwner` (the same value, or absent when the copy has none), as the Java KCL
    /// 3.x's owner expectation. Rows the Java KCL 2.x writes never have `checkpointOwner`.
    pub(super) fn expect_owner(&mut self, lease: &Lease) -> Result<(), LeaseError> {
        let owner = lease
            .lease_owner
            .as_deref()
            .ok_or_else(|| invalid(&lease.lease_key, "the lease has no owner"))?;
        let name = self.name(schema::LEASE_OWNER);
        let expected = self.value(":expectedLeaseOwner", s(owner));
        self.conditions.push(format!("{name} = {expected}"));
        let checkpoint_owner = self.name(schema::CHECKPOINT_OWNER);
        match lease.checkpoint_owner.as_deref() {
            Some(holder) => {
                let expected = self.value(":expectedCheckpointOwner", s(holder));
                self.conditions
                    .push(format!("{checkpoint_owner} = {expected}"));
            }
            None => self
                .conditions
                .push(format!("attribute_not_exists({checkpoint_owner})")),
        }
        Ok(())
    }

    /// Expects no handoff in progress (`checkpointOwner` absent).
    pub(super) fn expect_no_handoff(&mut self) {
        let name = self.name(schema::CHECKPOINT_OWNER);
        self.conditions
            .push(format!("attribute_not_exists({name})"));
    }

    /// Expects the stored checkpoint to be the copy's.
    pub(super) fn expect_checkpoint(&mut self, lease: &Lease) {
        let name = self.name(schema::CHECKPOINT);
        let expected = self.value(":expectedCheckpoint", s(lease.checkpoint.stored_value()));
        self.conditions.push(format!("{name} = {expected}"));
    }

    /// Expects the lease to exist.
    pub(super) fn expect_exists(&mut self) {
        let key = self.name(schema::LEASE_KEY);
        self.conditions.push(format!("attribute_exists({key})"));
    }

    pub(super) fn set(&mut self, attribute: &'static str, value: AttributeValue) {
        let name = self.name(attribute);
        let value = self.value(&format!(":{attribute}"), value);
        self.set.push(format!("{name} = {value}"));
    }

    pub(super) fn remove(&mut self, attribute: &'static str) {
        let name = self.name(attribute);
        self.remove.push(name);
    }

    pub(super) fn add(&mut self, attribute: &'static str, value: AttributeValue) {
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
    pub(super) fn into_parts(self) -> UpdateParts {
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
        UpdateParts {
            expression: clauses.join(" "),
            condition: self.conditions.join(" AND "),
            names: self.names,
            values: self.values,
        }
    }
}

pub(super) fn invalid(lease_key: &str, reason: &'static str) -> LeaseError {
    LeaseError::InvalidInput {
        lease_key: lease_key.to_owned(),
        reason,
    }
}

pub(super) fn validate_key(lease_key: &str) -> Result<(), LeaseError> {
    if lease_key.is_empty() {
        Err(invalid(lease_key, "the lease key is empty"))
    } else {
        Ok(())
    }
}

pub(super) fn validate_new_lease(lease: &Lease) -> Result<(), LeaseError> {
    let key = lease.lease_key.as_str();
    validate_key(key)?;
    if lease.lease_owner.as_deref() == Some("") {
        return Err(invalid(key, "the owner is empty"));
    }
    validate_checkpoint(key, &lease.checkpoint)?;
    if let Some(pending) = &lease.pending_checkpoint {
        validate_checkpoint(key, pending)?;
    }
    if let Some((start, end)) = &lease.hash_key_range
        && (!is_decimal(start, MAX_HASH_KEY_DIGITS) || !is_decimal(end, MAX_HASH_KEY_DIGITS))
    {
        return Err(invalid(
            key,
            "the hash key range is not two decimal numbers",
        ));
    }
    Ok(())
}

pub(super) fn validate_checkpoint(
    lease_key: &str,
    checkpoint: &Checkpoint,
) -> Result<(), LeaseError> {
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
        let parts = update.into_parts();
        assert_eq!(
            parts.expression,
            "SET #leaseCounter = :leaseCounter, #checkpoint = :checkpoint \
             REMOVE #pendingCheckpoint ADD #ownerSwitchesSinceCheckpoint \
             :ownerSwitchesSinceCheckpoint"
        );
        assert_eq!(
            parts.condition,
            "#leaseCounter = :expectedLeaseCounter AND #leaseOwner = :expectedLeaseOwner \
             AND attribute_not_exists(#checkpointOwner)"
        );
        assert_eq!(parts.names.len(), 6);
        assert_eq!(parts.values[":leaseCounter"], n(5));
        assert_eq!(parts.values[":expectedLeaseCounter"], n(4));
        assert_eq!(parts.values[":expectedLeaseOwner"], s("w"));
    }

    #[test]
    fn a_copy_in_a_handoff_expects_its_checkpoint_owner() {
        let mut lease = Lease::new("shard-1", Checkpoint::TrimHorizon);
        lease.lease_owner = Some("taker".into());
        lease.checkpoint_owner = Some("holder".into());
        let mut update = Update::bump_counter(&lease).unwrap();
        update.expect_owner(&lease).unwrap();
        let parts = update.into_parts();
        assert!(
            parts
                .condition
                .ends_with("#checkpointOwner = :expectedCheckpointOwner"),
            "{}",
            parts.condition
        );
        assert_eq!(parts.values[":expectedCheckpointOwner"], s("holder"));
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
}
