//! A lease's DynamoDB item form: the codec between [`Lease`] and the Java KCL 2.x's row.
//!
//! [`Lease::to_item`] writes exactly the attributes the Java KCL 2.x writes, with the same types
//! (see `schema.rs`). [`Lease::from_item`] reads rows written by either side; it ignores
//! attributes it does not know and rejects a known attribute of the wrong type or with an
//! unparsable value with a [`MalformedLease`] naming the attribute.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;

use super::model::{Checkpoint, Lease, MAX_HASH_KEY_DIGITS, is_decimal};
use super::schema;

impl Lease {
    /// The item the Java KCL 2.x would write for this lease.
    ///
    /// Always: `leaseKey`, `leaseCounter`, `checkpoint`, `checkpointSubSequenceNumber`,
    /// `ownerSwitchesSinceCheckpoint`. When set: `leaseOwner`, `parentShardId` and
    /// `childShardIds` (non-empty sets only), `pendingCheckpoint` with
    /// `pendingCheckpointSubSequenceNumber`, `pendingCheckpointState`, `startingHashKey`
    /// with `endingHashKey`, and the 3.x `checkpointOwner`. Values are not validated here; [`LeaseTable`](super::LeaseTable)
    /// validates before writing.
    pub(crate) fn to_item(&self) -> HashMap<String, AttributeValue> {
        let mut item = HashMap::new();
        item.insert(schema::LEASE_KEY.to_owned(), s(&self.lease_key));
        item.insert(schema::LEASE_COUNTER.to_owned(), n(self.lease_counter));
        if let Some(owner) = &self.lease_owner {
            item.insert(schema::LEASE_OWNER.to_owned(), s(owner));
        }
        item.insert(
            schema::OWNER_SWITCHES_SINCE_CHECKPOINT.to_owned(),
            n(self.owner_switches_since_checkpoint),
        );
        item.insert(
            schema::CHECKPOINT.to_owned(),
            s(self.checkpoint.stored_value()),
        );
        item.insert(
            schema::CHECKPOINT_SUB_SEQUENCE_NUMBER.to_owned(),
            n(self.checkpoint.stored_sub_sequence_number()),
        );
        if let Some(set) = string_set(&self.parent_shard_ids) {
            item.insert(schema::PARENT_SHARD_ID.to_owned(), set);
        }
        if let Some(set) = string_set(&self.child_shard_ids) {
            item.insert(schema::CHILD_SHARD_IDS.to_owned(), set);
        }
        if let Some(pending) = &self.pending_checkpoint {
            item.insert(
                schema::PENDING_CHECKPOINT.to_owned(),
                s(pending.stored_value()),
            );
            item.insert(
                schema::PENDING_CHECKPOINT_SUB_SEQUENCE_NUMBER.to_owned(),
                n(pending.stored_sub_sequence_number()),
            );
        }
        if let Some(state) = &self.pending_checkpoint_state {
            item.insert(
                schema::PENDING_CHECKPOINT_STATE.to_owned(),
                AttributeValue::B(Blob::new(state.clone())),
            );
        }
        if let Some((start, end)) = &self.hash_key_range {
            item.insert(schema::STARTING_HASH_KEY.to_owned(), s(start));
            item.insert(schema::ENDING_HASH_KEY.to_owned(), s(end));
        }
        if let Some(owner) = &self.checkpoint_owner {
            item.insert(schema::CHECKPOINT_OWNER.to_owned(), s(owner));
        }
        if let Some(id) = &self.handoff_request_id {
            item.insert(schema::HANDOFF_REQUEST_ID.to_owned(), s(id));
        }
        if let Some(at) = self.latest_started_at {
            item.insert(schema::LATEST_STARTED_AT.to_owned(), n(epoch_millis(at)));
        }
        item
    }

    /// Reads a lease from a table item.
    ///
    /// Required: `leaseKey` (non-empty S), `leaseCounter` (N) and `checkpoint` (S). An
    /// `entityType` other than `LEASE` (Java KCL 3.x rows that are not leases) is
    /// [`MalformedKind::NotALease`]. Missing
    /// sub-sequence numbers and owner-switch counts read as 0, as in the Java KCL; an empty
    /// `pendingCheckpoint` means none; `NULL` values count as absent. Unknown attributes are
    /// ignored.
    ///
    /// # Errors
    ///
    /// [`MalformedLease`] naming the first attribute that is missing, of the wrong type, or
    /// unparsable (a number that is not a `u64`, a checkpoint that is not a sentinel or a
    /// sequence number, half a hash key range, a hash key that is not decimal).
    pub(crate) fn from_item(
        item: &HashMap<String, AttributeValue>,
    ) -> Result<Self, MalformedLease> {
        let mut reader = ItemReader {
            item,
            lease_key: None,
        };
        let lease_key = reader
            .string(schema::LEASE_KEY)?
            .filter(|key| !key.is_empty())
            .ok_or_else(|| reader.error(schema::LEASE_KEY, MalformedKind::Missing))?
            .to_owned();
        reader.lease_key = Some(lease_key.clone());
        if let Some(entity) = reader.string(schema::ENTITY_TYPE)?
            && entity != schema::LEASE_ENTITY_TYPE
        {
            return Err(reader.error(
                schema::ENTITY_TYPE,
                MalformedKind::NotALease {
                    entity_type: entity.to_owned(),
                },
            ));
        }

        let lease_owner = reader.string(schema::LEASE_OWNER)?.map(str::to_owned);
        let lease_counter = reader
            .number(schema::LEASE_COUNTER)?
            .ok_or_else(|| reader.error(schema::LEASE_COUNTER, MalformedKind::Missing))?;
        let checkpoint = reader
            .checkpoint(schema::CHECKPOINT, schema::CHECKPOINT_SUB_SEQUENCE_NUMBER)?
            .ok_or_else(|| reader.error(schema::CHECKPOINT, MalformedKind::Missing))?;
        let pending_checkpoint = reader.checkpoint(
            schema::PENDING_CHECKPOINT,
            schema::PENDING_CHECKPOINT_SUB_SEQUENCE_NUMBER,
        )?;
        let pending_checkpoint_state = reader.binary(schema::PENDING_CHECKPOINT_STATE)?;
        let owner_switches_since_checkpoint = reader
            .number(schema::OWNER_SWITCHES_SINCE_CHECKPOINT)?
            .unwrap_or(0);
        let parent_shard_ids = reader.string_set(schema::PARENT_SHARD_ID)?;
        let child_shard_ids = reader.string_set(schema::CHILD_SHARD_IDS)?;
        let hash_key_range = reader.hash_key_range()?;
        let checkpoint_owner = reader
            .string(schema::CHECKPOINT_OWNER)?
            .filter(|owner| !owner.is_empty())
            .map(str::to_owned);
        let handoff_request_id = reader
            .string(schema::HANDOFF_REQUEST_ID)?
            .filter(|id| !id.is_empty())
            .map(str::to_owned);
        let latest_started_at = reader
            .number(schema::LATEST_STARTED_AT)?
            .map(|millis| UNIX_EPOCH + Duration::from_millis(millis));

        Ok(Self {
            lease_key,
            lease_owner,
            lease_counter,
            checkpoint,
            pending_checkpoint,
            pending_checkpoint_state,
            owner_switches_since_checkpoint,
            parent_shard_ids,
            child_shard_ids,
            hash_key_range,
            checkpoint_owner,
            handoff_request_id,
            latest_started_at,
        })
    }
}

/// A table item that is not a valid lease.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed lease{}: attribute {attribute}: {kind}", LeaseKeySuffix(.lease_key.as_deref()))]
pub struct MalformedLease {
    lease_key: Option<String>,
    attribute: &'static str,
    kind: MalformedKind,
}

impl MalformedLease {
    /// The item's lease key, when it has a readable one.
    pub fn lease_key(&self) -> Option<&str> {
        self.lease_key.as_deref()
    }

    /// The offending attribute.
    pub fn attribute(&self) -> &'static str {
        self.attribute
    }

    /// What is wrong with it.
    pub fn kind(&self) -> &MalformedKind {
        &self.kind
    }
}

/// What is wrong with an attribute of a [`MalformedLease`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedKind {
    /// A required attribute is absent (or empty, for the lease key).
    #[error("missing")]
    Missing,
    /// The attribute has another DynamoDB type.
    #[error("expected type {expected}, found {found}")]
    WrongType {
        /// The type the Java KCL writes.
        expected: &'static str,
        /// The type found.
        found: &'static str,
    },
    /// A number that is not an unsigned 64-bit integer.
    #[error("{value:?} is not an unsigned 64-bit integer")]
    BadNumber {
        /// The stored number.
        value: String,
    },
    /// A checkpoint that is neither a sentinel nor a decimal sequence number.
    #[error("{value:?} is neither a checkpoint sentinel nor a decimal sequence number")]
    BadCheckpoint {
        /// The stored value.
        value: String,
    },
    /// A hash key that is not a decimal number.
    #[error("{value:?} is not a decimal hash key")]
    BadHashKey {
        /// The stored value.
        value: String,
    },
    /// A Java KCL 3.x row of another kind (its `entityType` is not `LEASE`).
    #[error("entity type {entity_type:?} is not a lease")]
    NotALease {
        /// The stored entity type.
        entity_type: String,
    },
    /// One end of the hash key range is present without the other.
    #[error("present without {other}")]
    Unpaired {
        /// The missing partner attribute.
        other: &'static str,
    },
}

/// Formats `" <key>"` for a known lease key, nothing otherwise.
struct LeaseKeySuffix<'a>(Option<&'a str>);

impl fmt::Display for LeaseKeySuffix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(key) => write!(f, " {key}"),
            None => Ok(()),
        }
    }
}

/// Typed accessors over an item, producing [`MalformedLease`] errors that name the lease.
struct ItemReader<'a> {
    item: &'a HashMap<String, AttributeValue>,
    lease_key: Option<String>,
}

impl<'a> ItemReader<'a> {
    fn error(&self, attribute: &'static str, kind: MalformedKind) -> MalformedLease {
        MalformedLease {
            lease_key: self.lease_key.clone(),
            attribute,
            kind,
        }
    }

    /// The attribute's value, with `NULL` treated as absent.
    fn get(&self, attribute: &str) -> Option<&'a AttributeValue> {
        match self.item.get(attribute) {
            Some(AttributeValue::Null(_)) | None => None,
            Some(value) => Some(value),
        }
    }

    fn wrong_type(
        &self,
        attribute: &'static str,
        expected: &'static str,
        found: &AttributeValue,
    ) -> MalformedLease {
        self.error(
            attribute,
            MalformedKind::WrongType {
                expected,
                found: type_name(found),
            },
        )
    }

    fn string(&self, attribute: &'static str) -> Result<Option<&'a str>, MalformedLease> {
        match self.get(attribute) {
            None => Ok(None),
            Some(AttributeValue::S(value)) => Ok(Some(value)),
            Some(other) => Err(self.wrong_type(attribute, "S", other)),
        }
    }

    fn number(&self, attribute: &'static str) -> Result<Option<u64>, MalformedLease> {
        match self.get(attribute) {
            None => Ok(None),
            Some(AttributeValue::N(value)) => value.parse::<u64>().map(Some).map_err(|_| {
                self.error(
                    attribute,
                    MalformedKind::BadNumber {
                        value: value.clone(),
                    },
                )
            }),
            Some(other) => Err(self.wrong_type(attribute, "N", other)),
        }
    }

    fn binary(&self, attribute: &'static str) -> Result<Option<Vec<u8>>, MalformedLease> {
        match self.get(attribute) {
            None => Ok(None),
            Some(AttributeValue::B(blob)) => Ok(Some(blob.as_ref().to_vec())),
            Some(other) => Err(self.wrong_type(attribute, "B", other)),
        }
    }

    fn string_set(&self, attribute: &'static str) -> Result<Vec<String>, MalformedLease> {
        match self.get(attribute) {
            None => Ok(Vec::new()),
            Some(AttributeValue::Ss(values)) => {
                let set: BTreeSet<&String> = values.iter().collect();
                Ok(set.into_iter().cloned().collect())
            }
            Some(other) => Err(self.wrong_type(attribute, "SS", other)),
        }
    }

    /// A checkpoint from its string and sub-sequence attributes; `None` when the string is
    /// absent or empty.
    fn checkpoint(
        &self,
        attribute: &'static str,
        sub_attribute: &'static str,
    ) -> Result<Option<Checkpoint>, MalformedLease> {
        let Some(value) = self.string(attribute)?.filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let sub = self.number(sub_attribute)?.unwrap_or(0);
        Checkpoint::from_stored(value, sub).map(Some).map_err(|_| {
            self.error(
                attribute,
                MalformedKind::BadCheckpoint {
                    value: value.to_owned(),
                },
            )
        })
    }

    fn hash_key(&self, attribute: &'static str) -> Result<Option<&'a str>, MalformedLease> {
        match self.string(attribute)?.filter(|v| !v.is_empty()) {
            Some(value) if !is_decimal(value, MAX_HASH_KEY_DIGITS) => Err(self.error(
                attribute,
                MalformedKind::BadHashKey {
                    value: value.to_owned(),
                },
            )),
            other => Ok(other),
        }
    }

    fn hash_key_range(&self) -> Result<Option<(String, String)>, MalformedLease> {
        let start = self.hash_key(schema::STARTING_HASH_KEY)?;
        let end = self.hash_key(schema::ENDING_HASH_KEY)?;
        match (start, end) {
            (Some(start), Some(end)) => Ok(Some((start.to_owned(), end.to_owned()))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(self.error(
                schema::STARTING_HASH_KEY,
                MalformedKind::Unpaired {
                    other: schema::ENDING_HASH_KEY,
                },
            )),
            (None, Some(_)) => Err(self.error(
                schema::ENDING_HASH_KEY,
                MalformedKind::Unpaired {
                    other: schema::STARTING_HASH_KEY,
                },
            )),
        }
    }
}

pub(crate) fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

pub(crate) fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// `at` in whole milliseconds since the Unix epoch (0 before it), as lease rows store times.
pub(crate) fn epoch_millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    })
}

/// `at` cut to whole milliseconds: what a lease row gives back after storing it.
pub(crate) fn whole_millis(at: SystemTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(epoch_millis(at))
}

/// A string set of the distinct `values`, or `None` when empty (DynamoDB has no empty sets).
pub(crate) fn string_set(values: &[String]) -> Option<AttributeValue> {
    let set: BTreeSet<&String> = values.iter().collect();
    if set.is_empty() {
        None
    } else {
        Some(AttributeValue::Ss(set.into_iter().cloned().collect()))
    }
}

/// The DynamoDB type name of `value`, for error messages.
fn type_name(value: &AttributeValue) -> &'static str {
    match value {
        AttributeValue::S(_) => "S",
        AttributeValue::N(_) => "N",
        AttributeValue::B(_) => "B",
        AttributeValue::Ss(_) => "SS",
        AttributeValue::Ns(_) => "NS",
        AttributeValue::Bs(_) => "BS",
        AttributeValue::M(_) => "M",
        AttributeValue::L(_) => "L",
        AttributeValue::Null(_) => "NULL",
        AttributeValue::Bool(_) => "BOOL",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEQ: &str = "49590338271490256608559692538361571095921575989136588898";

    fn full_lease() -> Lease {
        let mut lease = Lease::new("shardId-000000000007", Checkpoint::sequence(SEQ, 3));
        lease.lease_owner = Some("worker-a".into());
        lease.lease_counter = 42;
        lease.pending_checkpoint = Some(Checkpoint::sequence("123", 1));
        lease.pending_checkpoint_state = Some(vec![0, 1, 2, 255]);
        lease.owner_switches_since_checkpoint = 2;
        lease.parent_shard_ids = vec!["shardId-000000000001".into(), "shardId-000000000002".into()];
        lease.child_shard_ids = vec!["shardId-000000000009".into()];
        lease.hash_key_range = Some(("0".into(), "340282366920938463463374607431768211455".into()));
        lease.checkpoint_owner = Some("worker-b".into());
        lease
    }

    fn item(pairs: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    fn minimal_item() -> HashMap<String, AttributeValue> {
        item(&[
            ("leaseKey", s("shardId-000000000000")),
            ("leaseCounter", n(5)),
            ("checkpoint", s("TRIM_HORIZON")),
        ])
    }

    #[test]
    fn full_lease_round_trips() {
        let lease = full_lease();
        assert_eq!(Lease::from_item(&lease.to_item()), Ok(lease));
    }

    #[test]
    fn minimal_lease_writes_java_attributes_only() {
        let lease = Lease::new("shardId-000000000000", Checkpoint::Latest);
        let item = lease.to_item();
        let mut names: Vec<&str> = item.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "checkpoint",
                "checkpointSubSequenceNumber",
                "leaseCounter",
                "leaseKey",
                "ownerSwitchesSinceCheckpoint"
            ]
        );
        assert_eq!(item["checkpoint"], s("LATEST"));
        assert_eq!(item["checkpointSubSequenceNumber"], n(0));
        assert_eq!(Lease::from_item(&item), Ok(lease));
    }

    #[test]
    fn full_lease_item_types() {
        let item = full_lease().to_item();
        assert_eq!(item.len(), 14);
        assert_eq!(item["checkpointOwner"], s("worker-b"));
        assert_eq!(item["leaseOwner"], s("worker-a"));
        assert_eq!(item["leaseCounter"], n(42));
        assert_eq!(item["checkpoint"], s(SEQ));
        assert_eq!(item["checkpointSubSequenceNumber"], n(3));
        assert_eq!(item["pendingCheckpoint"], s("123"));
        assert_eq!(item["pendingCheckpointSubSequenceNumber"], n(1));
        assert_eq!(
            item["pendingCheckpointState"],
            AttributeValue::B(Blob::new(vec![0, 1, 2, 255]))
        );
        assert!(matches!(&item["parentShardId"], AttributeValue::Ss(v) if v.len() == 2));
        assert!(matches!(&item["childShardIds"], AttributeValue::Ss(v) if v.len() == 1));
        assert_eq!(item["startingHashKey"], s("0"));
    }

    #[test]
    fn sets_are_sorted_and_deduplicated() {
        let mut lease = Lease::new("k", Checkpoint::TrimHorizon);
        lease.parent_shard_ids = vec!["b".into(), "a".into(), "b".into()];
        let item = lease.to_item();
        assert_eq!(
            item["parentShardId"],
            AttributeValue::Ss(vec!["a".into(), "b".into()])
        );
        let read = Lease::from_item(&item).unwrap();
        assert_eq!(read.parent_shard_ids, ["a", "b"]);
    }

    #[test]
    fn sentinels_round_trip_with_sub_sequence_zero() {
        for (checkpoint, name) in [
            (Checkpoint::TrimHorizon, "TRIM_HORIZON"),
            (Checkpoint::Latest, "LATEST"),
            (Checkpoint::AtTimestamp, "AT_TIMESTAMP"),
            (Checkpoint::ShardEnd, "SHARD_END"),
        ] {
            assert_eq!(checkpoint.stored_value(), name);
            assert_eq!(checkpoint.stored_sub_sequence_number(), 0);
            assert!(checkpoint.is_sentinel());
            assert_eq!(Checkpoint::from_stored(name, 0), Ok(checkpoint.clone()));
            assert_eq!(checkpoint.to_string(), name);
        }
        let record = Checkpoint::sequence(SEQ, 7);
        assert!(!record.is_sentinel());
        assert_eq!(record.to_string(), format!("{SEQ}/7"));
    }

    #[test]
    fn bad_checkpoints_are_rejected() {
        for bad in ["", "abc", "12a", "-1", "TRIM HORIZON", &"9".repeat(129)] {
            let err = Checkpoint::from_stored(bad, 0).unwrap_err();
            assert_eq!(err.value(), bad);
        }
        assert!(Checkpoint::from_stored(&"9".repeat(128), 0).is_ok());
    }

    #[test]
    fn missing_optional_numbers_read_as_zero_and_unknown_attributes_are_ignored() {
        let mut item = minimal_item();
        item.insert("streamName".into(), s("123456789012:stream:1"));
        item.insert("throughputKBps".into(), AttributeValue::N("1.5".into()));
        item.insert("somethingNew".into(), AttributeValue::M(HashMap::new()));
        item.insert("leaseOwner".into(), AttributeValue::Null(true));
        item.insert("pendingCheckpoint".into(), s(""));
        let lease = Lease::from_item(&item).unwrap();
        assert_eq!(lease.lease_counter, 5);
        assert_eq!(lease.lease_owner, None);
        assert_eq!(lease.owner_switches_since_checkpoint, 0);
        assert_eq!(lease.checkpoint, Checkpoint::TrimHorizon);
        assert_eq!(lease.pending_checkpoint, None);
    }

    fn malformed(
        change: impl FnOnce(&mut HashMap<String, AttributeValue>),
    ) -> (Option<String>, &'static str, MalformedKind) {
        let mut item = minimal_item();
        change(&mut item);
        let err = Lease::from_item(&item).unwrap_err();
        (
            err.lease_key().map(str::to_owned),
            err.attribute(),
            err.kind().clone(),
        )
    }

    #[test]
    fn malformed_items_name_the_attribute() {
        let key = Some("shardId-000000000000".to_owned());
        assert_eq!(
            malformed(|i| {
                i.remove("leaseKey");
            }),
            (None, "leaseKey", MalformedKind::Missing)
        );
        assert_eq!(
            malformed(|i| {
                i.insert("leaseKey".into(), n(1));
            }),
            (
                None,
                "leaseKey",
                MalformedKind::WrongType {
                    expected: "S",
                    found: "N"
                }
            )
        );
        assert_eq!(
            malformed(|i| {
                i.remove("leaseCounter");
            }),
            (key.clone(), "leaseCounter", MalformedKind::Missing)
        );
        assert_eq!(
            malformed(|i| {
                i.insert("leaseCounter".into(), s("5"));
            }),
            (
                key.clone(),
                "leaseCounter",
                MalformedKind::WrongType {
                    expected: "N",
                    found: "S"
                }
            )
        );
        assert_eq!(
            malformed(|i| {
                i.insert("leaseCounter".into(), AttributeValue::N("-1".into()));
            }),
            (
                key.clone(),
                "leaseCounter",
                MalformedKind::BadNumber { value: "-1".into() }
            )
        );
        assert_eq!(
            malformed(|i| {
                i.remove("checkpoint");
            }),
            (key.clone(), "checkpoint", MalformedKind::Missing)
        );
        assert_eq!(
            malformed(|i| {
                i.insert("checkpoint".into(), s("soon"));
            }),
            (
                key.clone(),
                "checkpoint",
                MalformedKind::BadCheckpoint {
                    value: "soon".into()
                }
            )
        );
        assert_eq!(
            malformed(|i| {
                i.insert("parentShardId".into(), s("shardId-000000000001"));
            }),
            (
                key.clone(),
                "parentShardId",
                MalformedKind::WrongType {
                    expected: "SS",
                    found: "S"
                }
            )
        );
        assert_eq!(
            malformed(|i| {
                i.insert("pendingCheckpointState".into(), n(0));
            }),
            (
                key.clone(),
                "pendingCheckpointState",
                MalformedKind::WrongType {
                    expected: "B",
                    found: "N"
                }
            )
        );
        assert_eq!(
            malformed(|i| {
                i.insert("startingHashKey".into(), s("0"));
            }),
            (
                key.clone(),
                "startingHashKey",
                MalformedKind::Unpaired {
                    other: "endingHashKey"
                }
            )
        );
        assert_eq!(
            malformed(|i| {
                i.insert("startingHashKey".into(), s("0x00"));
                i.insert("endingHashKey".into(), s("1"));
            }),
            (
                key,
                "startingHashKey",
                MalformedKind::BadHashKey {
                    value: "0x00".into()
                }
            )
        );
    }

    #[test]
    fn malformed_display_names_lease_and_attribute() {
        let mut item = minimal_item();
        item.insert("leaseCounter".into(), s("x"));
        let err = Lease::from_item(&item).unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed lease shardId-000000000000: attribute leaseCounter: expected type N, \
             found S"
        );
    }
}
