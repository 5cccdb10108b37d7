//! The records that go into and come out of aggregation.

use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use bytestring::ByteString;

use crate::error::RecordError;
use crate::hash::{parse_explicit_hash_key, partition_key_hash};

/// A record as the application produces it.
///
/// ```
/// use aggregation_proto::UserRecord;
/// let record = UserRecord::new("customer-42", "hello").with_explicit_hash_key("0");
/// assert_eq!(record.hash_key().unwrap(), 0);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Decides the shard (through its MD5) unless an explicit hash key is set.
    pub partition_key: String,
    /// A decimal hash key that overrides the partition key's hash for routing.
    pub explicit_hash_key: Option<String>,
    /// The payload.
    pub data: Bytes,
}

impl UserRecord {
    /// A record with a partition key and data, without an explicit hash key.
    pub fn new(partition_key: impl Into<String>, data: impl Into<Bytes>) -> Self {
        Self {
            partition_key: partition_key.into(),
            explicit_hash_key: None,
            data: data.into(),
        }
    }

    /// Sets the explicit hash key (a decimal integer in `0..=2^128-1`).
    pub fn with_explicit_hash_key(mut self, explicit_hash_key: impl Into<String>) -> Self {
        self.explicit_hash_key = Some(explicit_hash_key.into());
        self
    }

    /// Checks the record as Kinesis would (partition key of 1 to 256 characters, explicit hash
    /// key a decimal in `0..=2^128-1`) and returns the hash key it routes by.
    ///
    /// # Errors
    /// The [`RecordError`] naming the problem.
    pub fn validate(&self) -> Result<u128, RecordError> {
        crate::aggregator::validate_partition_key(&self.partition_key)?;
        self.hash_key()
    }

    /// The hash key Kinesis routes this record by: the explicit hash key if set, else the MD5 of
    /// the partition key.
    ///
    /// # Errors
    /// [`RecordError::InvalidExplicitHashKey`] if the explicit hash key is not a valid one.
    pub fn hash_key(&self) -> Result<u128, RecordError> {
        match &self.explicit_hash_key {
            Some(key) => parse_explicit_hash_key(key),
            None => Ok(partition_key_hash(&self.partition_key)),
        }
    }
}

/// A record at the Kinesis level, ready for PutRecord(s): an aggregate, or a single user record
/// sent as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KinesisRecord {
    /// The partition key (for an aggregate, its first user record's key).
    pub partition_key: String,
    /// The explicit hash key (for an aggregate, its first user record's, if it had one).
    pub explicit_hash_key: Option<String>,
    /// The data: an aggregated record, or the single user record's payload.
    pub data: Bytes,
}

impl KinesisRecord {
    /// The record's size as Kinesis counts it against MaxRecordSize and the PutRecords limit:
    /// data plus partition key bytes.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

impl From<UserRecord> for KinesisRecord {
    /// The user record sent as it is, without aggregation.
    fn from(record: UserRecord) -> Self {
        Self {
            partition_key: record.partition_key,
            explicit_hash_key: record.explicit_hash_key,
            data: record.data,
        }
    }
}

/// A record as Kinesis returns it (GetRecords, SubscribeToShard, a Lambda event): the input of
/// deaggregation.
///
/// ```
/// use aggregation_proto::ReceivedRecord;
/// let record = ReceivedRecord::new("pk", "data").with_sequence_number("49590338271490256608559692538361571095921575989136588898");
/// assert_eq!(record.data, "data");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReceivedRecord {
    /// The Kinesis record's partition key.
    pub partition_key: ByteString,
    /// The Kinesis record's data, aggregated or not.
    pub data: Bytes,
    /// The Kinesis record's sequence number, if known.
    pub sequence_number: Option<ByteString>,
    /// When Kinesis accepted the record, if known.
    pub approximate_arrival_timestamp: Option<SystemTime>,
}

impl ReceivedRecord {
    /// A record with a partition key and data, without sequence number or arrival time.
    pub fn new(partition_key: impl Into<ByteString>, data: impl Into<Bytes>) -> Self {
        Self {
            partition_key: partition_key.into(),
            data: data.into(),
            sequence_number: None,
            approximate_arrival_timestamp: None,
        }
    }

    /// Sets the sequence number, which every user record in it inherits.
    pub fn with_sequence_number(mut self, sequence_number: impl Into<ByteString>) -> Self {
        self.sequence_number = Some(sequence_number.into());
        self
    }

    /// Sets the arrival time, which every user record in it inherits.
    pub fn with_arrival_time(mut self, arrival: SystemTime) -> Self {
        self.approximate_arrival_timestamp = Some(arrival);
        self
    }
}

/// A user record recovered from a [`ReceivedRecord`].
///
/// Every user record of one Kinesis record shares that record's buffer, key tables, sequence
/// number and arrival time through one reference count: taking an aggregate apart copies no
/// byte and allocates once per aggregate, not per user record. Holding any of its user records
/// keeps the whole Kinesis record in memory.
#[derive(Clone)]
pub struct DeaggregatedRecord {
    source: Arc<Source>,
    data: Range<usize>,
    /// Index in the partition key table; `None` for the Kinesis record's own key.
    partition_key: Option<usize>,
    explicit_hash_key: Option<usize>,
    sub_sequence_number: Option<u64>,
}

/// What the user records of one Kinesis record share.
#[derive(Debug)]
pub(crate) struct Source {
    pub(crate) record: ReceivedRecord,
    pub(crate) partition_keys: Vec<ByteString>,
    pub(crate) explicit_hash_keys: Vec<ByteString>,
}

impl DeaggregatedRecord {
    /// The record passed through unchanged (not aggregated, or not a valid aggregate).
    pub(crate) fn passed_through(record: ReceivedRecord) -> Self {
        Self {
            data: 0..record.data.len(),
            source: Arc::new(Source {
                record,
                partition_keys: Vec::new(),
                explicit_hash_keys: Vec::new(),
            }),
            partition_key: None,
            explicit_hash_key: None,
            sub_sequence_number: None,
        }
    }

    /// A sub-record; the indexes were checked against the tables.
    pub(crate) fn sub_record(
        source: &Arc<Source>,
        data: Range<usize>,
        partition_key: usize,
        explicit_hash_key: Option<usize>,
        sub_sequence_number: u64,
    ) -> Self {
        Self {
            source: Arc::clone(source),
            data,
            partition_key: Some(partition_key),
            explicit_hash_key,
            sub_sequence_number: Some(sub_sequence_number),
        }
    }

    /// The user record's partition key.
    pub fn partition_key(&self) -> &str {
        match self.partition_key {
            None => &self.source.record.partition_key,
            Some(index) => self.source.partition_keys.get(index).map_or("", |key| key),
        }
    }

    /// The user record's explicit hash key: `None` when it had none (a sub-record without an
    /// index), and always for a record that was not aggregated, since Kinesis does not return it.
    pub fn explicit_hash_key(&self) -> Option<&str> {
        let index = self.explicit_hash_key?;
        self.source.explicit_hash_keys.get(index).map(|key| &**key)
    }

    /// The user record's data.
    pub fn data(&self) -> &[u8] {
        self.source
            .record
            .data
            .get(self.data.clone())
            .unwrap_or_default()
    }

    /// The user record's data as a [`Bytes`] sharing the Kinesis record's buffer (no copy).
    pub fn data_bytes(&self) -> Bytes {
        self.source.record.data.slice(self.data.clone())
    }

    /// The Kinesis record's sequence number, if it was known.
    pub fn sequence_number(&self) -> Option<&str> {
        self.source.record.sequence_number.as_deref()
    }

    /// Position inside the aggregate (`0..n`); `None` for a record that was not aggregated.
    pub fn sub_sequence_number(&self) -> Option<u64> {
        self.sub_sequence_number
    }

    /// When Kinesis accepted the Kinesis record, if known.
    pub fn approximate_arrival_timestamp(&self) -> Option<SystemTime> {
        self.source.record.approximate_arrival_timestamp
    }

    /// Whether the record came out of an aggregate.
    pub fn is_aggregated(&self) -> bool {
        self.sub_sequence_number.is_some()
    }

    /// The Kinesis record this user record came from.
    pub fn kinesis_record(&self) -> &ReceivedRecord {
        &self.source.record
    }
}

impl PartialEq for DeaggregatedRecord {
    fn eq(&self, other: &Self) -> bool {
        self.partition_key() == other.partition_key()
            && self.explicit_hash_key() == other.explicit_hash_key()
            && self.data() == other.data()
            && self.sequence_number() == other.sequence_number()
            && self.sub_sequence_number == other.sub_sequence_number
            && self.approximate_arrival_timestamp() == other.approximate_arrival_timestamp()
    }
}

impl Eq for DeaggregatedRecord {}

impl std::fmt::Debug for DeaggregatedRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeaggregatedRecord")
            .field("partition_key", &self.partition_key())
            .field("explicit_hash_key", &self.explicit_hash_key())
            .field("data_len", &self.data.len())
            .field("sequence_number", &self.sequence_number())
            .field("sub_sequence_number", &self.sub_sequence_number)
            .finish_non_exhaustive()
    }
}
