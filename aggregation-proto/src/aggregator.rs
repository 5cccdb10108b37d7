//! Building aggregates with the exact encoded size known at every step.
//!
//! Each sub-record is encoded straight into the buffer that becomes the finished record, behind
//! a gap reserved for the magic and the key tables; each distinct key is encoded once into its
//! table's buffer. `finish` writes the magic and the tables into the end of the gap and hashes
//! the result in one MD5 pass, so user data is copied once. The gap is sized from the previous
//! aggregate's tables; when it is too small the records are shifted once.

use std::hash::BuildHasher;

use bytes::Bytes;
use hashbrown::{DefaultHashBuilder, HashTable};
use md5::{Digest, Md5};

use crate::error::{AddError, RecordError};
use crate::hash::parse_explicit_hash_key;
use crate::limits::{
    AGGREGATION_OVERHEAD, DEFAULT_MAX_AGGREGATE_SIZE, DIGEST_LEN, MAGIC, MAX_PARTITION_KEY_CHARS,
};
use crate::record::{KinesisRecord, UserRecord};
use crate::wire::{
    TAG_DATA, TAG_EXPLICIT_HASH_KEY_INDEX, TAG_EXPLICIT_HASH_KEY_TABLE, TAG_PARTITION_KEY_INDEX,
    TAG_PARTITION_KEY_TABLE, TAG_RECORDS, length_delimited_len, put_varint, record_body_len,
};

/// Bytes reserved in front of the first aggregate's records for the magic and the key tables.
const INITIAL_GAP: usize = 1024;
/// Largest gap kept; tables bigger than this cost one shift of the records.
const MAX_GAP: usize = 64 * 1024;

/// Limits of the aggregates an [`Aggregator`] builds.
///
/// ```
/// use aggregation_proto::AggregatorConfig;
/// let config = AggregatorConfig::default().max_size(25_600).max_count(100);
/// assert_eq!(config.get_max_size(), 25_600);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AggregatorConfig {
    max_size: usize,
    max_count: usize,
}

impl Default for AggregatorConfig {
    /// The KPL's defaults: 51,200 bytes (`AggregationMaxSize`), no count limit
    /// (`AggregationMaxCount` is 4,294,967,295 there).
    fn default() -> Self {
        Self {
            max_size: DEFAULT_MAX_AGGREGATE_SIZE,
            max_count: usize::MAX,
        }
    }
}

impl AggregatorConfig {
    /// Largest Kinesis record to emit, in bytes of data plus partition key (how Kinesis counts
    /// a record against MaxRecordSize).
    pub fn max_size(mut self, bytes: usize) -> Self {
        self.max_size = bytes;
        self
    }

    /// Most user records in one aggregate (at least 1).
    pub fn max_count(mut self, records: usize) -> Self {
        self.max_count = records.max(1);
        self
    }

    /// The configured size limit.
    pub fn get_max_size(&self) -> usize {
        self.max_size
    }

    /// The configured count limit.
    pub fn get_max_count(&self) -> usize {
        self.max_count
    }
}

/// Builds KPL-format aggregates, one at a time.
///
/// ```
/// use aggregation_proto::{AddError, Aggregator, AggregatorConfig, UserRecord, deaggregate, ReceivedRecord};
///
/// let mut aggregator = Aggregator::new(AggregatorConfig::default());
/// let mut finished = Vec::new();
/// for i in 0..1_000 {
///     let record = UserRecord::new(format!("key-{}", i % 10), vec![b'x'; 100]);
///     match aggregator.try_add(&record) {
///         Ok(()) => {}
///         Err(AddError::Full) => {
///             finished.extend(aggregator.finish());
///             aggregator.try_add(&record)?;
///         }
///         Err(invalid) => return Err(invalid.into()),
///     }
/// }
/// finished.extend(aggregator.finish());
/// assert!(finished.iter().all(|r| r.size() <= 51_200));
///
/// let total: usize = finished
///     .iter()
///     .map(|r| deaggregate(&ReceivedRecord::new(r.partition_key.clone(), r.data.clone())).len())
///     .sum();
/// assert_eq!(total, 1_000);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Aggregator {
    config: AggregatorConfig,
    hasher: DefaultHashBuilder,
    partition_keys: KeyTable,
    explicit_hash_keys: KeyTable,
    /// `gap` reserved bytes, then the encoded `records` fields (tag, length, body) in order.
    buffer: Vec<u8>,
    gap: usize,
    /// Capacity to give the next buffer: the previous aggregate's length.
    capacity_hint: usize,
    count: usize,
    /// The first user record, kept whole: it names the aggregate (partition key, explicit hash
    /// key) and is emitted as it is when it ends up alone.
    first: Option<UserRecord>,
}

/// What adding one record would change; computed once, then either committed or dropped.
struct AddPlan {
    partition_key_hash: u64,
    partition_key_index: Option<u64>,
    explicit_hash_key: Option<(u64, Option<u64>)>,
    size_after: usize,
}

impl Aggregator {
    /// An empty aggregator with these limits.
    pub fn new(config: AggregatorConfig) -> Self {
        Self {
            config,
            hasher: DefaultHashBuilder::default(),
            partition_keys: KeyTable::new(TAG_PARTITION_KEY_TABLE),
            explicit_hash_keys: KeyTable::new(TAG_EXPLICIT_HASH_KEY_TABLE),
            buffer: Vec::new(),
            gap: INITIAL_GAP,
            capacity_hint: 0,
            count: 0,
            first: None,
        }
    }

    /// The limits this aggregator works to.
    pub fn config(&self) -> &AggregatorConfig {
        &self.config
    }

    /// User records in the current aggregate.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the current aggregate holds no record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Exact size (data plus partition key) of the Kinesis record [`finish`](Self::finish)
    /// would return now; 0 when empty.
    pub fn size(&self) -> usize {
        match &self.first {
            None => 0,
            Some(first) if self.count == 1 => plain_size(first),
            Some(first) => first.partition_key.len() + AGGREGATION_OVERHEAD + self.body_len(),
        }
    }

    /// Whether `record` would be taken by [`try_add`](Self::try_add) now.
    ///
    /// # Errors
    /// The [`RecordError`] that `try_add` would return.
    pub fn fits(&self, record: &UserRecord) -> Result<bool, RecordError> {
        match self.plan(record) {
            Ok(_) => Ok(true),
            Err(AddError::Full) => Ok(false),
            Err(AddError::Invalid(error)) => Err(error),
        }
    }

    /// Adds a record to the current aggregate if it fits under both limits.
    ///
    /// # Errors
    /// - [`AddError::Full`]: it does not fit; `finish` this aggregate and add it to the next.
    /// - [`AddError::Invalid`]: it is invalid, or too large even alone; no aggregate will take it.
    pub fn try_add(&mut self, record: &UserRecord) -> Result<(), AddError> {
        let plan = self.plan(record)?;
        let partition_key_index = match plan.partition_key_index {
            Some(index) => index,
            None => self.partition_keys.insert(
                &self.hasher,
                plan.partition_key_hash,
                record.partition_key.as_bytes(),
            ),
        };
        let explicit_hash_key_index = match (plan.explicit_hash_key, &record.explicit_hash_key) {
            (Some((_, Some(index))), _) => Some(index),
            (Some((hash, None)), Some(key)) => Some(self.explicit_hash_keys.insert(
                &self.hasher,
                hash,
                key.as_bytes(),
            )),
            _ => None,
        };
        if self.count == 0 {
            self.first = Some(record.clone());
            let capacity = self.gap + self.capacity_hint.max(plan.size_after) + DIGEST_LEN;
            self.buffer = Vec::with_capacity(capacity);
            self.buffer.resize(self.gap, 0);
        }
        let data = &record.data;
        let buffer = &mut self.buffer;
        buffer.push(TAG_RECORDS);
        put_varint(
            buffer,
            record_body_len(partition_key_index, explicit_hash_key_index, data.len()) as u64,
        );
        buffer.push(TAG_PARTITION_KEY_INDEX);
        put_varint(buffer, partition_key_index);
        if let Some(index) = explicit_hash_key_index {
            buffer.push(TAG_EXPLICIT_HASH_KEY_INDEX);
            put_varint(buffer, index);
        }
        buffer.push(TAG_DATA);
        put_varint(buffer, data.len() as u64);
        buffer.extend_from_slice(data);
        self.count += 1;
        debug_assert_eq!(self.size(), plan.size_after);
        Ok(())
    }

    /// Ends the current aggregate and returns it as a Kinesis record (`None` if empty). A single
    /// user record comes out as itself, without aggregation overhead. The aggregator is then
    /// empty and reusable, keeping its buffers.
    pub fn finish(&mut self) -> Option<KinesisRecord> {
        let first = self.first.take()?;
        let record = if self.count == 1 {
            KinesisRecord {
                partition_key: first.partition_key,
                explicit_hash_key: first.explicit_hash_key,
                data: first.data,
            }
        } else {
            KinesisRecord {
                data: self.seal(),
                partition_key: first.partition_key,
                explicit_hash_key: first.explicit_hash_key,
            }
        };
        self.partition_keys.clear();
        self.explicit_hash_keys.clear();
        self.buffer = Vec::new();
        self.count = 0;
        Some(record)
    }

    /// Writes magic and key tables in front of the records, appends the MD5, and hands the
    /// buffer over as the record's data.
    fn seal(&mut self) -> Bytes {
        let mut buffer = std::mem::take(&mut self.buffer);
        let head =
            MAGIC.len() + self.partition_keys.encoded.len() + self.explicit_hash_keys.encoded.len();
        let start = match self.gap.checked_sub(head) {
            Some(start) => start,
            None => {
                // The tables outgrew the gap: shift the records once to make room.
                let shortfall = head - self.gap;
                buffer.splice(0..0, std::iter::repeat_n(0, shortfall));
                0
            }
        };
        let mut at = start;
        for part in [
            &MAGIC[..],
            &self.partition_keys.encoded,
            &self.explicit_hash_keys.encoded,
        ] {
            buffer[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        let digest = Md5::digest(&buffer[start + MAGIC.len()..]);
        buffer.extend_from_slice(&digest);
        let len = buffer.len() - start;
        self.capacity_hint = len;
        self.gap = (head + head / 4).clamp(INITIAL_GAP, MAX_GAP);
        if buffer.capacity() > 2 * len {
            // A small aggregate must not pin a large allocation while it waits to be sent.
            Bytes::copy_from_slice(&buffer[start..])
        } else {
            Bytes::from(buffer).slice(start..)
        }
    }

    fn body_len(&self) -> usize {
        self.partition_keys.encoded.len()
            + self.explicit_hash_keys.encoded.len()
            + self.buffer.len().saturating_sub(self.gap)
    }

    /// Validates only keys not already in a table: a key found there was validated when it went in.
    fn plan(&self, record: &UserRecord) -> Result<AddPlan, AddError> {
        let partition_key = record.partition_key.as_bytes();
        let partition_key_hash = self.hasher.hash_one(partition_key);
        let partition_key_index = self.partition_keys.find(partition_key_hash, partition_key);
        if partition_key_index.is_none() {
            validate_partition_key(&record.partition_key)?;
        }
        let explicit_hash_key = match &record.explicit_hash_key {
            None => None,
            Some(key) => {
                let hash = self.hasher.hash_one(key.as_bytes());
                let index = self.explicit_hash_keys.find(hash, key.as_bytes());
                if index.is_none() {
                    parse_explicit_hash_key(key)?;
                }
                Some((hash, index))
            }
        };

        let Some(first) = &self.first else {
            let size = plain_size(record);
            if size > self.config.max_size {
                return Err(RecordError::RecordTooLarge {
                    size,
                    max_size: self.config.max_size,
                }
                .into());
            }
            return Ok(AddPlan {
                partition_key_hash,
                partition_key_index,
                explicit_hash_key,
                size_after: size,
            });
        };
        if self.count >= self.config.max_count {
            return Err(AddError::Full);
        }
        let new_keys_len = partition_key_index
            .map_or(length_delimited_len(partition_key.len()), |_| 0)
            + match (&explicit_hash_key, &record.explicit_hash_key) {
                (Some((_, None)), Some(key)) => length_delimited_len(key.len()),
                _ => 0,
            };
        let body = record_body_len(
            partition_key_index.unwrap_or(self.partition_keys.len),
            explicit_hash_key.map(|(_, index)| index.unwrap_or(self.explicit_hash_keys.len)),
            record.data.len(),
        );
        let size_after = first.partition_key.len()
            + AGGREGATION_OVERHEAD
            + self.body_len()
            + new_keys_len
            + length_delimited_len(body);
        if size_after > self.config.max_size {
            return Err(AddError::Full);
        }
        Ok(AddPlan {
            partition_key_hash,
            partition_key_index,
            explicit_hash_key,
            size_after,
        })
    }
}

fn plain_size(record: &UserRecord) -> usize {
    record.partition_key.len() + record.data.len()
}

pub(crate) fn validate_partition_key(key: &str) -> Result<(), RecordError> {
    if key.is_empty() {
        return Err(RecordError::EmptyPartitionKey);
    }
    // A key of at most 256 bytes has at most 256 characters: count only longer ones.
    if key.len() > MAX_PARTITION_KEY_CHARS {
        let chars = key.chars().count();
        if chars > MAX_PARTITION_KEY_CHARS {
            return Err(RecordError::PartitionKeyTooLong { chars });
        }
    }
    Ok(())
}

/// One de-duplicated key table: its entries already encoded as protobuf fields, and an index
/// from key bytes to table position that points into that encoding (no per-key allocation).
#[derive(Debug)]
struct KeyTable {
    tag: u8,
    encoded: Vec<u8>,
    positions: HashTable<KeyPosition>,
    len: u64,
}

#[derive(Debug, Clone, Copy)]
struct KeyPosition {
    start: usize,
    end: usize,
    index: u64,
}

impl KeyTable {
    fn new(tag: u8) -> Self {
        Self {
            tag,
            encoded: Vec::new(),
            positions: HashTable::new(),
            len: 0,
        }
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<u64> {
        self.positions
            .find(hash, |p| self.encoded.get(p.start..p.end) == Some(key))
            .map(|p| p.index)
    }

    fn insert(&mut self, hasher: &DefaultHashBuilder, hash: u64, key: &[u8]) -> u64 {
        self.encoded.push(self.tag);
        put_varint(&mut self.encoded, key.len() as u64);
        let start = self.encoded.len();
        self.encoded.extend_from_slice(key);
        let position = KeyPosition {
            start,
            end: self.encoded.len(),
            index: self.len,
        };
        let encoded = &self.encoded;
        self.positions.insert_unique(hash, position, |p| {
            hasher.hash_one(encoded.get(p.start..p.end).unwrap_or_default())
        });
        self.len += 1;
        position.index
    }

    fn clear(&mut self) {
        self.encoded.clear();
        self.positions.clear();
        self.len = 0;
    }
}
