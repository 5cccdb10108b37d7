//! The lease row: [`Lease`] and its [`Checkpoint`]. Its DynamoDB item form is in `codec.rs`.

use std::fmt;
use std::time::SystemTime;

use aggregation_proto::is_sequence_number;

use super::schema::sentinel;

/// Digits of the largest hash key, 2^128 - 1.
pub(crate) const MAX_HASH_KEY_DIGITS: usize = 39;

/// Where processing of a shard resumes: a sentinel position or a record.
///
/// Stored as two attributes (the checkpoint string and its sub-sequence number, see
/// [`Checkpoint::stored_value`]). Sentinels are stored as `TRIM_HORIZON`, `LATEST`,
/// `AT_TIMESTAMP` or `SHARD_END` with sub-sequence number 0.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Checkpoint {
    /// Nothing processed yet; start from the oldest record.
    TrimHorizon,
    /// Nothing processed yet; start after the newest record.
    Latest,
    /// Nothing processed yet; start at the application's configured timestamp.
    AtTimestamp,
    /// The shard is closed and every record was processed; its children may start.
    ShardEnd,
    /// Every record up to and including this one was processed.
    Sequence {
        /// The Kinesis sequence number (decimal digits, at most 128).
        sequence_number: String,
        /// Position of the user record inside an aggregated record (0 for plain records).
        sub_sequence_number: u64,
    },
}

impl Checkpoint {
    /// A checkpoint at record `sequence_number`, user record `sub_sequence_number`.
    pub fn sequence(sequence_number: impl Into<String>, sub_sequence_number: u64) -> Self {
        Self::Sequence {
            sequence_number: sequence_number.into(),
            sub_sequence_number,
        }
    }

    /// Parses the stored form: a sentinel name or a decimal sequence number, plus the
    /// sub-sequence number (ignored for sentinels, which the Java KCL stores with 0).
    ///
    /// # Errors
    ///
    /// [`InvalidCheckpoint`] when `value` is neither a sentinel nor 1 to 128 decimal digits.
    pub fn from_stored(value: &str, sub_sequence_number: u64) -> Result<Self, InvalidCheckpoint> {
        let checkpoint = match value {
            sentinel::TRIM_HORIZON => Self::TrimHorizon,
            sentinel::LATEST => Self::Latest,
            sentinel::AT_TIMESTAMP => Self::AtTimestamp,
            sentinel::SHARD_END => Self::ShardEnd,
            _ => Self::sequence(value, sub_sequence_number),
        };
        checkpoint.validate()?;
        Ok(checkpoint)
    }

    /// The string stored in the checkpoint attribute.
    pub fn stored_value(&self) -> &str {
        match self {
            Self::TrimHorizon => sentinel::TRIM_HORIZON,
            Self::Latest => sentinel::LATEST,
            Self::AtTimestamp => sentinel::AT_TIMESTAMP,
            Self::ShardEnd => sentinel::SHARD_END,
            Self::Sequence {
                sequence_number, ..
            } => sequence_number,
        }
    }

    /// The number stored in the sub-sequence attribute (0 for sentinels).
    pub fn stored_sub_sequence_number(&self) -> u64 {
        match self {
            Self::Sequence {
                sub_sequence_number,
                ..
            } => *sub_sequence_number,
            Self::TrimHorizon | Self::Latest | Self::AtTimestamp | Self::ShardEnd => 0,
        }
    }

    /// Whether this is a sentinel position rather than a record.
    pub fn is_sentinel(&self) -> bool {
        !matches!(self, Self::Sequence { .. })
    }

    /// Checks that a [`Checkpoint::Sequence`] holds 1 to 128 decimal digits (sentinels are
    /// always valid).
    ///
    /// # Errors
    ///
    /// [`InvalidCheckpoint`] naming the offending value.
    pub fn validate(&self) -> Result<(), InvalidCheckpoint> {
        match self {
            Self::Sequence {
                sequence_number, ..
            } if !is_sequence_number(sequence_number) => Err(InvalidCheckpoint {
                value: sequence_number.clone(),
            }),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Checkpoint {
    /// Sentinels print their stored name; records print `sequence_number/sub_sequence_number`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sequence {
                sequence_number,
                sub_sequence_number,
            } => write!(f, "{sequence_number}/{sub_sequence_number}"),
            _ => f.write_str(self.stored_value()),
        }
    }
}

/// A checkpoint value that is neither a sentinel nor a decimal sequence number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid checkpoint {value:?}: expected a sentinel or 1 to 128 decimal digits")]
pub struct InvalidCheckpoint {
    value: String,
}

impl InvalidCheckpoint {
    /// The rejected value.
    pub fn value(&self) -> &str {
        &self.value
    }
}

/// One shard's lease: who holds it, the fencing counter, and how far processing got.
///
/// Build one with [`Lease::new`] and set the public fields; read one through
/// [`LeaseTable`](super::LeaseTable).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lease {
    /// The table's hash key: the shard id (or the Java multi-stream key).
    pub lease_key: String,
    /// The worker holding the lease, if any.
    pub lease_owner: Option<String>,
    /// The fencing counter: every conditional write expects this value and bumps it.
    pub lease_counter: u64,
    /// Where processing resumes.
    pub checkpoint: Checkpoint,
    /// A prepared (not yet committed) checkpoint.
    pub pending_checkpoint: Option<Checkpoint>,
    /// Application state saved with the prepared checkpoint.
    pub pending_checkpoint_state: Option<Vec<u8>>,
    /// Owner changes since the last checkpoint.
    pub owner_switches_since_checkpoint: u64,
    /// Parent shard ids. Stored as a string set: read back sorted, without duplicates.
    pub parent_shard_ids: Vec<String>,
    /// Child shard ids, once the shard is closed. Stored like `parent_shard_ids`.
    pub child_shard_ids: Vec<String>,
    /// The shard's hash key range `(starting, ending)`, decimal, inclusive.
    pub hash_key_range: Option<(String, String)>,
    /// The worker still processing the lease while it is handed over to
    /// [`lease_owner`](Self::lease_owner) (the Java KCL 3.x `checkpointOwner`): set by the
    /// worker taking the lease, removed by the old holder once it has checkpointed, or by the
    /// new owner's take after a timeout. `None` outside a handoff.
    pub checkpoint_owner: Option<String>,
    /// The id of the handoff request the lease answers (this crate's `handoffRequestId`): set
    /// by the worker asking for the lease, kept by the release that lets go, removed by every
    /// take and when the request is withdrawn.
    pub handoff_request_id: Option<String>,
    /// When the lease, still at [`Checkpoint::Latest`], was first read (this crate's
    /// `latestStartedAt`, whole milliseconds): where a
    /// later reader of the lease starts instead of `LATEST`. Only meaningful while the
    /// checkpoint is `LATEST`; every checkpoint removes it.
    pub latest_started_at: Option<SystemTime>,
}

impl Lease {
    /// An unowned lease with counter 0, no lineage and no pending checkpoint.
    pub fn new(lease_key: impl Into<String>, checkpoint: Checkpoint) -> Self {
        Self {
            lease_key: lease_key.into(),
            lease_owner: None,
            lease_counter: 0,
            checkpoint,
            pending_checkpoint: None,
            pending_checkpoint_state: None,
            owner_switches_since_checkpoint: 0,
            parent_shard_ids: Vec::new(),
            child_shard_ids: Vec::new(),
            hash_key_range: None,
            checkpoint_owner: None,
            handoff_request_id: None,
            latest_started_at: None,
        }
    }

    /// Whether `worker` is the lease's owner (`leaseOwner`, according to this copy). During a
    /// handoff that is the worker the lease goes to; see [`holder`](Self::holder).
    pub fn is_owned_by(&self, worker: &str) -> bool {
        self.lease_owner.as_deref() == Some(worker)
    }

    /// The worker processing the lease now: the [`checkpoint_owner`](Self::checkpoint_owner)
    /// while a handoff is in progress, the [`lease_owner`](Self::lease_owner) otherwise (the
    /// Java KCL 3.x's `actualOwner`).
    pub fn holder(&self) -> Option<&str> {
        self.checkpoint_owner
            .as_deref()
            .or(self.lease_owner.as_deref())
    }

    /// Whether `worker` is the lease's [`holder`](Self::holder).
    pub fn is_held_by(&self, worker: &str) -> bool {
        self.holder() == Some(worker)
    }

    /// Whether a handoff is in progress (`checkpointOwner` is set).
    pub fn is_handoff_pending(&self) -> bool {
        self.checkpoint_owner.is_some()
    }

    /// Whether the shard was processed to its end (checkpoint `SHARD_END`): the lease waits
    /// only for its cleanup.
    pub fn is_finished(&self) -> bool {
        self.checkpoint == Checkpoint::ShardEnd
    }
}

/// Whether `value` is 1 to `max_digits` ASCII decimal digits.
pub(crate) fn is_decimal(value: &str, max_digits: usize) -> bool {
    !value.is_empty() && value.len() <= max_digits && value.bytes().all(|b| b.is_ascii_digit())
}
