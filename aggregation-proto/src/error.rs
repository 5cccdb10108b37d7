//! Typed errors. Each says what was wrong and what the limit is, so the caller can fix the input.

/// A user record Kinesis would refuse, or one no aggregate can hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The partition key is the empty string.
    #[error("partition key is empty: Kinesis requires 1 to 256 Unicode characters")]
    EmptyPartitionKey,
    /// The partition key has more than 256 Unicode characters.
    #[error("partition key has {chars} Unicode characters: Kinesis allows at most 256")]
    PartitionKeyTooLong {
        /// Characters in the rejected key.
        chars: usize,
    },
    /// The explicit hash key is not a decimal integer in `0..=2^128-1`.
    #[error(
        "explicit hash key {value:?} is invalid: it must be a decimal integer from 0 to \
         340282366920938463463374607431768211455 (2^128-1), {reason}"
    )]
    InvalidExplicitHashKey {
        /// The rejected key (its first 64 characters).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The record alone is bigger than the largest record the aggregator may emit.
    #[error(
        "record is {size} bytes (data plus partition key) but the limit is {max_size} bytes: \
         send it without aggregation if it is under the stream's MaxRecordSize, or split it"
    )]
    RecordTooLarge {
        /// Data plus partition key bytes of the record.
        size: usize,
        /// The configured maximum.
        max_size: usize,
    },
}

/// Why [`Aggregator::try_add`](crate::Aggregator::try_add) did not take a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddError {
    /// The record is valid but does not fit in what is left of this aggregate (size or count).
    /// Call [`finish`](crate::Aggregator::finish) and add it to the next one.
    #[error("aggregate is full: finish it and add the record to the next aggregate")]
    Full,
    /// The record can never be aggregated.
    #[error(transparent)]
    Invalid(#[from] RecordError),
}

/// An aggregated record (magic and digest correct) whose contents are corrupt. The lenient
/// [`deaggregate`](crate::deaggregate) passes such a record through whole; the strict
/// [`try_deaggregate`](crate::try_deaggregate) reports it with this error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeaggregationError {
    /// The protobuf body cannot be parsed.
    #[error("aggregated record body is not a valid AggregatedRecord: {reason} at byte {offset}")]
    Malformed {
        /// Offset in the record's data where parsing failed.
        offset: usize,
        /// What the parser found.
        reason: &'static str,
    },
    /// A sub-record points past the end of the partition key table.
    #[error(
        "sub-record {sub_record} uses partition key index {index} but the table has {table_len} \
         entries"
    )]
    PartitionKeyIndexOutOfRange {
        /// Position of the sub-record in the aggregate.
        sub_record: usize,
        /// The index it carries.
        index: u64,
        /// Entries in the table.
        table_len: usize,
    },
    /// A sub-record points past the end of the explicit hash key table.
    #[error(
        "sub-record {sub_record} uses explicit hash key index {index} but the table has \
         {table_len} entries"
    )]
    ExplicitHashKeyIndexOutOfRange {
        /// Position of the sub-record in the aggregate.
        sub_record: usize,
        /// The index it carries.
        index: u64,
        /// Entries in the table.
        table_len: usize,
    },
}

/// A hash range whose bounds are not decimal 128-bit integers or are reversed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid hash range {start:?}..={end:?}: {reason}")]
pub struct HashRangeError {
    pub(crate) start: String,
    pub(crate) end: String,
    pub(crate) reason: &'static str,
}
