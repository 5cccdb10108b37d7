//! Sequence numbers: decimal strings of up to 128 digits, compared as numbers (the functions
//! live in `aggregation-proto`, shared with Lambda functions and tools).

pub(crate) use aggregation_proto::{compare_sequence_numbers, is_sequence_number};

/// A position inside a shard: a Kinesis record's sequence number and a sub-record in it
/// (0 for a record that was not aggregated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) sequence_number: String,
    pub(crate) sub_sequence_number: u64,
}
