//! Deaggregation with the KCL's rules, zero-copy.
//!
//! A record that is not a valid aggregate is never dropped: anything without the magic, too
//! short, with a wrong MD5 or a body that does not parse is delivered whole as one plain
//! record, as the KCL does. The strict entry points report a corrupt body (correct magic and
//! digest, bad contents) as a [`DeaggregationError`] instead.

use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;
use md5::{Digest, Md5};

use crate::error::DeaggregationError;
use crate::hash::{HashRange, parse_explicit_hash_key, partition_key_hash};
use crate::limits::{AGGREGATION_OVERHEAD, DIGEST_LEN, MAGIC};
use crate::record::{DeaggregatedRecord, ReceivedRecord, Source};
use crate::wire::{
    WIRE_LENGTH_DELIMITED, WIRE_VARINT, read_length_delimited, read_varint, skip_field,
};

/// Deaggregates one Kinesis record with the KCL's rules: an aggregate yields its user records
/// with sub-sequence numbers `0..n`; anything else, including a corrupt aggregate, yields the
/// record itself. Never fails and never drops bytes.
///
/// ```
/// use aggregation_proto::{deaggregate, ReceivedRecord};
/// let plain = deaggregate(&ReceivedRecord::new("pk", "not aggregated"));
/// assert_eq!(plain.len(), 1);
/// assert!(!plain[0].is_aggregated());
/// ```
pub fn deaggregate(record: &ReceivedRecord) -> Vec<DeaggregatedRecord> {
    let mut out = Vec::new();
    Deaggregator::new().deaggregate_into(record, &mut out).ok();
    out
}

/// Like [`deaggregate`], but an aggregate with a valid magic and digest and a corrupt body (for
/// example a key index past the end of its table) is an error instead of a pass-through.
///
/// # Errors
/// [`DeaggregationError`] describing the corruption.
pub fn try_deaggregate(
    record: &ReceivedRecord,
) -> Result<Vec<DeaggregatedRecord>, DeaggregationError> {
    let mut out = Vec::new();
    Deaggregator::new()
        .strict(true)
        .deaggregate_into(record, &mut out)?;
    Ok(out)
}

/// What [`Deaggregator::deaggregate_into`] found in one record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// A valid aggregate.
    Aggregated {
        /// User records appended to the output.
        records: usize,
        /// Sub-records dropped because their hash key is outside the configured range.
        filtered: usize,
    },
    /// Delivered whole, as one plain record.
    PassedThrough(PassThroughReason),
}

/// Why a record was delivered whole.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PassThroughReason {
    /// It does not start with the magic or is too short to be an aggregate: a plain record.
    NotAggregated,
    /// It starts with the magic but its MD5 does not match: by the KCL's rules, a plain record.
    DigestMismatch,
    /// Magic and digest match but the body is corrupt (lenient mode only).
    Corrupt(DeaggregationError),
}

/// Deaggregation options: strictness and a per-sub-record hash-range filter.
///
/// The filter is for consumers after resharding: an aggregate written before a split can hold
/// user records that now belong to the sibling shard. Each sub-record whose hash key (explicit,
/// else the MD5 of its partition key) lies outside the range is dropped on its own; the Java KCL
/// drops the whole aggregate at the first such record. Plain records are never filtered: Kinesis
/// routed them to this shard.
///
/// ```
/// use aggregation_proto::{Aggregator, AggregatorConfig, Deaggregator, HashRange, Outcome, ReceivedRecord, UserRecord};
///
/// let mut aggregator = Aggregator::new(AggregatorConfig::default());
/// aggregator.try_add(&UserRecord::new("a", "low").with_explicit_hash_key("1"))?;
/// aggregator.try_add(&UserRecord::new("b", "high").with_explicit_hash_key(u128::MAX.to_string()))?;
/// let aggregate = aggregator.finish().unwrap();
///
/// let lower_half = HashRange::new(0, u128::MAX / 2)?;
/// let mut out = Vec::new();
/// let outcome = Deaggregator::new()
///     .hash_range(lower_half)
///     .deaggregate_into(&ReceivedRecord::new(aggregate.partition_key, aggregate.data), &mut out)?;
/// assert_eq!(outcome, Outcome::Aggregated { records: 1, filtered: 1 });
/// assert_eq!(out[0].data(), b"low");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deaggregator {
    strict: bool,
    hash_range: Option<HashRange>,
}

impl Deaggregator {
    /// Lenient, unfiltered: the KCL's rules.
    pub fn new() -> Self {
        Self::default()
    }

    /// With `true`, a corrupt aggregate body is an error instead of a pass-through.
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Keeps only sub-records whose hash key lies in `range`.
    pub fn hash_range(mut self, range: HashRange) -> Self {
        self.hash_range = Some(range);
        self
    }

    /// Appends the user records in `record` to `out`. On an error `out` is left as it was.
    ///
    /// # Errors
    /// Only in strict mode: [`DeaggregationError`] for a corrupt aggregate body.
    pub fn deaggregate_into(
        &self,
        record: &ReceivedRecord,
        out: &mut Vec<DeaggregatedRecord>,
    ) -> Result<Outcome, DeaggregationError> {
        self.deaggregate_owned_into(record.clone(), out)
    }

    /// Like [`deaggregate_into`](Self::deaggregate_into), taking the record by value: its
    /// buffers move into the user records instead of being shared through reference counts,
    /// which saves allocations where the record is not needed afterwards.
    ///
    /// # Errors
    /// As for [`deaggregate_into`](Self::deaggregate_into).
    pub fn deaggregate_owned_into(
        &self,
        record: ReceivedRecord,
        out: &mut Vec<DeaggregatedRecord>,
    ) -> Result<Outcome, DeaggregationError> {
        let data = &record.data;
        if data.len() < AGGREGATION_OVERHEAD || data[..MAGIC.len()] != MAGIC {
            out.push(DeaggregatedRecord::passed_through(record));
            return Ok(Outcome::PassedThrough(PassThroughReason::NotAggregated));
        }
        let body_end = data.len() - DIGEST_LEN;
        let digest = Md5::digest(&data[MAGIC.len()..body_end]);
        if digest.as_slice() != &data[body_end..] {
            out.push(DeaggregatedRecord::passed_through(record));
            return Ok(Outcome::PassedThrough(PassThroughReason::DigestMismatch));
        }
        let (tables, sub_records) = match Tables::parse(&record.data, body_end) {
            Ok(parsed) => parsed,
            Err(error) => return self.corrupt(record, error, out),
        };
        let len_before = out.len();
        let source = Arc::new(Source {
            record,
            partition_keys: tables.partition_keys,
            explicit_hash_keys: tables.explicit_hash_keys,
        });
        match self.decode_records(&source, &sub_records, out) {
            Ok(outcome) => Ok(outcome),
            Err(error) => {
                out.truncate(len_before);
                // `out` no longer holds clones of `source`: the record comes back whole.
                let record = Arc::try_unwrap(source)
                    .map_or_else(|shared| shared.record.clone(), |owned| owned.record);
                self.corrupt(record, error, out)
            }
        }
    }

    fn corrupt(
        &self,
        record: ReceivedRecord,
        error: DeaggregationError,
        out: &mut Vec<DeaggregatedRecord>,
    ) -> Result<Outcome, DeaggregationError> {
        if self.strict {
            return Err(error);
        }
        out.push(DeaggregatedRecord::passed_through(record));
        Ok(Outcome::PassedThrough(PassThroughReason::Corrupt(error)))
    }

    fn decode_records(
        &self,
        source: &Arc<Source>,
        sub_records: &[std::ops::Range<usize>],
        out: &mut Vec<DeaggregatedRecord>,
    ) -> Result<Outcome, DeaggregationError> {
        let record = &source.record;
        let mut key_hashes = KeyHashes::default();
        out.reserve(sub_records.len());
        let mut filtered = 0;
        for (sub_record, range) in sub_records.iter().enumerate() {
            let fields = SubRecord::parse(&record.data[..range.end], range.start)?;
            let partition_key = index_usize(fields.partition_key_index);
            if partition_key >= source.partition_keys.len() {
                return Err(DeaggregationError::PartitionKeyIndexOutOfRange {
                    sub_record,
                    index: fields.partition_key_index,
                    table_len: source.partition_keys.len(),
                });
            }
            let explicit_hash_key = match fields.explicit_hash_key_index {
                Some(index) if index_usize(index) >= source.explicit_hash_keys.len() => {
                    return Err(DeaggregationError::ExplicitHashKeyIndexOutOfRange {
                        sub_record,
                        index,
                        table_len: source.explicit_hash_keys.len(),
                    });
                }
                index => index.map(index_usize),
            };
            if let Some(range) = &self.hash_range {
                let hash_key = key_hashes.hash_key(source, partition_key, explicit_hash_key);
                if !hash_key.is_some_and(|key| range.contains(key)) {
                    filtered += 1;
                    continue;
                }
            }
            out.push(DeaggregatedRecord::sub_record(
                source,
                fields.data,
                partition_key,
                explicit_hash_key,
                sub_record as u64,
            ));
        }
        Ok(Outcome::Aggregated {
            records: sub_records.len() - filtered,
            filtered,
        })
    }
}

fn index_usize(index: u64) -> usize {
    usize::try_from(index).unwrap_or(usize::MAX)
}

fn malformed(offset: usize, reason: &'static str) -> DeaggregationError {
    DeaggregationError::Malformed { offset, reason }
}

/// The top level of an `AggregatedRecord`: key tables as shared strings, sub-records as ranges
/// (decoded afterwards, since protobuf lets fields come in any order).
struct Tables {
    partition_keys: Vec<ByteString>,
    explicit_hash_keys: Vec<ByteString>,
}

impl Tables {
    /// The tables, and the range of each sub-record's message.
    fn parse(
        data: &Bytes,
        body_end: usize,
    ) -> Result<(Self, Vec<std::ops::Range<usize>>), DeaggregationError> {
        let buf = &data[..body_end];
        let mut tables = Tables {
            partition_keys: Vec::new(),
            explicit_hash_keys: Vec::new(),
        };
        let mut records = Vec::new();
        let mut pos = MAGIC.len();
        while pos < body_end {
            let field_start = pos;
            let key =
                read_varint(buf, &mut pos).ok_or(malformed(field_start, "truncated field key"))?;
            let (number, wire_type) = (key >> 3, key & 7);
            if wire_type != WIRE_LENGTH_DELIMITED || !(1..=3).contains(&number) {
                skip_field(buf, &mut pos, wire_type)
                    .ok_or(malformed(field_start, "truncated or invalid unknown field"))?;
                continue;
            }
            let range = read_length_delimited(buf, &mut pos)
                .ok_or(malformed(field_start, "length runs past the end"))?;
            match number {
                1 | 2 => {
                    let key = ByteString::try_from(data.slice(range))
                        .map_err(|_| malformed(field_start, "key is not valid UTF-8"))?;
                    if number == 1 {
                        tables.partition_keys.push(key);
                    } else {
                        tables.explicit_hash_keys.push(key);
                    }
                }
                _ => records.push(range),
            }
        }
        Ok((tables, records))
    }
}

/// The fields of one `Record` message.
struct SubRecord {
    partition_key_index: u64,
    explicit_hash_key_index: Option<u64>,
    data: std::ops::Range<usize>,
}

impl SubRecord {
    /// Parses the message in `buf[start..]`. Tags (field 4) and unknown fields are skipped.
    fn parse(buf: &[u8], start: usize) -> Result<Self, DeaggregationError> {
        let mut pos = start;
        let mut partition_key_index = None;
        let mut explicit_hash_key_index = None;
        let mut data = None;
        while pos < buf.len() {
            let field_start = pos;
            let key =
                read_varint(buf, &mut pos).ok_or(malformed(field_start, "truncated field key"))?;
            match (key >> 3, key & 7) {
                (1, WIRE_VARINT) => {
                    partition_key_index = Some(
                        read_varint(buf, &mut pos)
                            .ok_or(malformed(field_start, "truncated varint"))?,
                    );
                }
                (2, WIRE_VARINT) => {
                    explicit_hash_key_index = Some(
                        read_varint(buf, &mut pos)
                            .ok_or(malformed(field_start, "truncated varint"))?,
                    );
                }
                (3, WIRE_LENGTH_DELIMITED) => {
                    data = Some(
                        read_length_delimited(buf, &mut pos)
                            .ok_or(malformed(field_start, "data runs past the end"))?,
                    );
                }
                (1..=3, _) => return Err(malformed(field_start, "field has the wrong wire type")),
                (_, wire_type) => skip_field(buf, &mut pos, wire_type)
                    .ok_or(malformed(field_start, "truncated or invalid unknown field"))?,
            }
        }
        Ok(SubRecord {
            partition_key_index: partition_key_index.ok_or(malformed(
                start,
                "sub-record lacks the required partition_key_index",
            ))?,
            explicit_hash_key_index,
            data: data.ok_or(malformed(start, "sub-record lacks the required data"))?,
        })
    }
}

/// Hash keys of table entries, computed once per aggregate and only when filtering.
#[derive(Default)]
struct KeyHashes {
    partition_keys: Vec<Option<u128>>,
}

impl KeyHashes {
    /// The sub-record's hash key; `None` for an explicit hash key that is not a valid one (it
    /// can belong to no shard).
    fn hash_key(
        &mut self,
        source: &Source,
        partition_key: usize,
        explicit_hash_key: Option<usize>,
    ) -> Option<u128> {
        if let Some(index) = explicit_hash_key {
            return parse_explicit_hash_key(source.explicit_hash_keys.get(index)?).ok();
        }
        if self.partition_keys.is_empty() {
            self.partition_keys = vec![None; source.partition_keys.len()];
        }
        let slot = self.partition_keys.get_mut(partition_key)?;
        let key = source.partition_keys.get(partition_key)?;
        Some(*slot.get_or_insert_with(|| partition_key_hash(key)))
    }
}
