//! Typed errors: what is wrong with the event, and what to do about it.

/// A Lambda event record that cannot be handled as a Kinesis record: without a shard and a
/// sequence number no partial batch response could name it, so the event is refused whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The record's `eventID` is missing or not `shardId-...:sequenceNumber`.
    #[error(
        "record {index} of the event has eventID {event_id:?}, not `shardId:sequenceNumber`: \
         is this a Kinesis event source mapping's event?"
    )]
    InvalidEventId {
        /// Position of the record in `Records`.
        index: usize,
        /// The `eventID` found (empty if missing).
        event_id: String,
    },
    /// The record's `kinesis.sequenceNumber` is missing or not a decimal number.
    #[error(
        "record {index} of the event has sequence number {sequence_number:?}: Kinesis sequence \
         numbers are decimal digits; is this a Kinesis event source mapping's event?"
    )]
    InvalidSequenceNumber {
        /// Position of the record in `Records`.
        index: usize,
        /// The sequence number found (empty if missing).
        sequence_number: String,
    },
}

/// A [`Position`](crate::Position) read back from its text form
/// (`shardId/sequenceNumber/subSequenceNumber`) that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{text:?} is not a position: expected `shardId/sequenceNumber/subSequenceNumber` with \
     decimal numbers, as written by Position's Display"
)]
pub struct PositionParseError {
    pub(crate) text: String,
}
