//! Where a handler is in a shard: the last user record it finished.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::PositionParseError;

/// A user record's place in its shard: shard, Kinesis sequence number, sub-sequence number (0
/// for a plain record), like the KCL's extended sequence number.
///
/// # Skipping what a retry delivers again
/// Lambda checkpoints Kinesis records, not user records: after a partial batch response naming
/// an aggregate, the retry starts at that aggregate and delivers every one of its user
/// records again, those processed before the failure included. A handler that keeps the
/// position of the last user record it finished (in memory for the warm execution environment,
/// or in a store of its own to survive a cold start) hands it to
/// [`DeaggregatedBatch::skip_processed`](crate::DeaggregatedBatch::skip_processed), which drops
/// every user record of that shard at or before it.
///
/// The contract is at-least-once: a position that was not kept (a new execution environment,
/// a store write that failed) means those user records are delivered again, never that any is
/// lost. Keep a position only after the record's effects are done. The skip assumes one batch
/// at a time per shard (the event source mapping's default `ParallelizationFactor` of 1);
/// with more, batches of one shard run side by side and a per-shard position is not a
/// prefix of the shard, so keep the position per partition key or do not skip.
///
/// Its text form, `shardId/sequenceNumber/subSequenceNumber`, reads back with [`FromStr`];
/// it also serializes with serde.
///
/// ```
/// use kinesis_lambda::Position;
/// let done: Position = "shardId-000000000001/49590338271490256608559692538361571095921575989136588811/1".parse()?;
/// let next = Position::new("shardId-000000000001", "49590338271490256608559692538361571095921575989136588811", 2);
/// assert!(done.covers(&done));
/// assert!(!done.covers(&next));
/// assert!(next.covers(&done));
/// # Ok::<(), kinesis_lambda::PositionParseError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Position {
    shard_id: String,
    sequence_number: String,
    sub_sequence_number: u64,
}

impl Position {
    /// A position from its parts.
    pub fn new(
        shard_id: impl Into<String>,
        sequence_number: impl Into<String>,
        sub_sequence_number: u64,
    ) -> Self {
        Self {
            shard_id: shard_id.into(),
            sequence_number: sequence_number.into(),
            sub_sequence_number,
        }
    }

    /// The shard.
    pub fn shard_id(&self) -> &str {
        &self.shard_id
    }

    /// The Kinesis record's sequence number.
    pub fn sequence_number(&self) -> &str {
        &self.sequence_number
    }

    /// The user record's place in its aggregate (0 for a plain record).
    pub fn sub_sequence_number(&self) -> u64 {
        self.sub_sequence_number
    }

    /// Whether `other` is at or before this position in the same shard: a record there was
    /// finished if this one was. Positions of different shards never cover each other.
    pub fn covers(&self, other: &Position) -> bool {
        self.covers_parts(
            &other.shard_id,
            &other.sequence_number,
            other.sub_sequence_number,
        )
    }

    /// [`covers`](Self::covers) for a position given by its parts (no allocation).
    pub(crate) fn covers_parts(&self, shard_id: &str, sequence_number: &str, sub: u64) -> bool {
        self.shard_id == shard_id
            && match aggregation_proto::compare_sequence_numbers(
                sequence_number,
                &self.sequence_number,
            ) {
                Ordering::Less => true,
                Ordering::Equal => sub <= self.sub_sequence_number,
                Ordering::Greater => false,
            }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.shard_id, self.sequence_number, self.sub_sequence_number
        )
    }
}

impl FromStr for Position {
    type Err = PositionParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || PositionParseError { text: text.into() };
        let mut parts = text.rsplitn(3, '/');
        let sub = parts.next().ok_or_else(error)?;
        let sequence_number = parts.next().ok_or_else(error)?;
        let shard_id = parts.next().ok_or_else(error)?;
        if shard_id.is_empty() || !aggregation_proto::is_sequence_number(sequence_number) {
            return Err(error());
        }
        let sub_sequence_number = sub.parse().map_err(|_| error())?;
        Ok(Self::new(shard_id, sequence_number, sub_sequence_number))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_rejects_garbage() {
        let position = Position::new("shardId-000000000003", "4959", 7);
        assert_eq!(position.to_string().parse::<Position>(), Ok(position));
        for bad in [
            "",
            "a/b",
            "shard/12x/0",
            "/12/0",
            "shard/12/-1",
            "shard/12/",
        ] {
            assert!(bad.parse::<Position>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn covers_earlier_records_of_its_shard_only() {
        let done = Position::new("s", "100", 2);
        assert!(done.covers(&Position::new("s", "99", 9)));
        assert!(done.covers(&Position::new("s", "100", 0)));
        assert!(done.covers(&Position::new("s", "100", 2)));
        assert!(!done.covers(&Position::new("s", "100", 3)));
        assert!(!done.covers(&Position::new("s", "101", 0)));
        assert!(!done.covers(&Position::new("other", "99", 0)));
    }
}
