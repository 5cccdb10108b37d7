//! The requests and answers of the [trait family](super): plain values, the same whoever is
//! behind the traits (the AWS SDK, a fake, a proxy).
//!
//! The answer types are not `#[non_exhaustive]` (except [`PutEntry`] and [`StreamSummary`],
//! which have constructors): fakes in the libraries' tests build them field by field, and
//! callers match them exhaustively, so a new field is a change every implementation must see.

use std::time::{Duration, SystemTime};

use aggregation_proto::{HashRange, ReceivedRecord};
use bytes::Bytes;

/// One shard as ListShards describes it. (Not `#[non_exhaustive]`: the workspace's tests and
/// fakes build shards field by field.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// The shard id (`shardId-000000000000`).
    pub shard_id: String,
    /// The shard it was split from, or the first of the two it was merged from.
    pub parent_shard_id: Option<String>,
    /// The second shard of a merge.
    pub adjacent_parent_shard_id: Option<String>,
    /// The hash keys it owns (while open) or owned.
    pub hash_range: HashRange,
    /// Whether it still takes records (it has no ending sequence number).
    pub open: bool,
}

impl Shard {
    /// An open shard without parents, for tests and fakes.
    pub fn new(shard_id: impl Into<String>, hash_range: HashRange) -> Self {
        Self {
            shard_id: shard_id.into(),
            parent_shard_id: None,
            adjacent_parent_shard_id: None,
            hash_range,
            open: true,
        }
    }

    /// Its parents: none, one (a split) or two (a merge).
    pub fn parents(&self) -> impl Iterator<Item = &str> {
        self.parent_shard_id
            .as_deref()
            .into_iter()
            .chain(self.adjacent_parent_shard_id.as_deref())
    }
}

/// Which shards to list. (Not `#[non_exhaustive]`: fakes answer each listing exhaustively.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardListing {
    /// Every shard still within the stream's retention, open or closed.
    All,
    /// The open shards only (the `AT_LATEST` filter): what a producer routes to, without the
    /// pages of closed shards a stream that was resharded often keeps for its retention.
    Open,
    /// Every shard whose id sorts after this one (the `AFTER_SHARD_ID` filter): where a closed
    /// shard's children are.
    After(String),
    /// The shards open at this time (the `AT_TIMESTAMP` filter).
    AtTimestamp(SystemTime),
}

/// One entry of a PutRecords call: a Kinesis record (an aggregate or a single user record).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PutEntry {
    /// The partition key.
    pub partition_key: String,
    /// The explicit hash key, which routes the record (the producer always sets one inside the
    /// shard it predicts).
    pub explicit_hash_key: Option<String>,
    /// The data.
    pub data: Bytes,
}

impl PutEntry {
    /// An entry from its parts.
    pub fn new(partition_key: String, explicit_hash_key: Option<String>, data: Bytes) -> Self {
        Self {
            partition_key,
            explicit_hash_key,
            data,
        }
    }

    /// Data plus partition key, as Kinesis counts a record against the 5 MiB call limit.
    pub fn size(&self) -> usize {
        self.partition_key.len() + self.data.len()
    }
}

/// What became of one entry of a PutRecords call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutResult {
    /// Stored.
    Stored {
        /// The shard that stored it.
        shard_id: String,
        /// Its sequence number in that shard.
        sequence_number: String,
    },
    /// Not stored (the call as a whole succeeded).
    Failed {
        /// The entry's error code (`ProvisionedThroughputExceededException`,
        /// `InternalFailure`, ...).
        code: String,
        /// The entry's error message.
        message: String,
    },
}

/// Where a new shard iterator points (GetShardIterator's `ShardIteratorType`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardIteratorStart {
    /// The oldest record still in the shard (`TRIM_HORIZON`).
    TrimHorizon,
    /// Only records put after the iterator was created (`LATEST`).
    Latest,
    /// Records that arrived at or after this time (`AT_TIMESTAMP`).
    AtTimestamp(SystemTime),
    /// The record with this sequence number and those after it (`AT_SEQUENCE_NUMBER`).
    AtSequence(String),
}

/// A shard that a closed shard split or merged into, as GetRecords' or a subscription event's
/// `ChildShards` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildShard {
    /// The child's shard id.
    pub shard_id: String,
    /// Every parent of the child: one after a split, two after a merge.
    pub parent_shard_ids: Vec<String>,
    /// The child's hash-key range.
    pub hash_range: HashRange,
}

/// One GetRecords answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordsPage {
    /// The Kinesis records, in order, as sent (aggregates not decoded).
    pub records: Vec<ReceivedRecord>,
    /// The iterator for the next call; `None` at the end of a closed shard.
    pub next_iterator: Option<String>,
    /// How far the shard's tip is ahead of this page, when the service said.
    pub millis_behind_latest: Option<i64>,
    /// The closed shard's children (at its end); empty when the answer had none.
    pub child_shards: Vec<ChildShard>,
}

/// Where a subscription starts (SubscribeToShard's `StartingPosition`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeStart {
    /// The oldest record still in the shard (`TRIM_HORIZON`).
    TrimHorizon,
    /// Only records put after the subscription started (`LATEST`).
    Latest,
    /// Records that arrived at or after this time (`AT_TIMESTAMP`).
    AtTimestamp(SystemTime),
    /// The record with this sequence number and those after it (`AT_SEQUENCE_NUMBER`).
    AtSequence(String),
    /// The records after this sequence number (`AFTER_SEQUENCE_NUMBER`): where a continuation
    /// resumes.
    AfterSequence(String),
}

/// One event of a subscription (`SubscribeToShardEvent`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardEvent {
    /// The Kinesis records, in order, as sent (aggregates not decoded).
    pub records: Vec<ReceivedRecord>,
    /// Where the next subscription resumes (`AFTER_SEQUENCE_NUMBER`); `None` at the end of a
    /// closed shard.
    pub continuation_sequence_number: Option<String>,
    /// How far the shard's tip is ahead of this event.
    pub millis_behind_latest: Option<i64>,
    /// The closed shard's children (at its end); empty when the event had none.
    pub child_shards: Vec<ChildShard>,
}

/// A stream consumer's state, as the service reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerStatus {
    /// Being registered: subscriptions are refused until it is active. A state a newer service
    /// adds is reported as this too (wait for `Active`).
    Creating,
    /// Registered: subscriptions are accepted.
    Active,
    /// Being deregistered.
    Deleting,
}

/// A registered (or registering) stream consumer (enhanced fan-out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// The consumer's ARN, which SubscribeToShard takes.
    pub consumer_arn: String,
    /// Its state.
    pub status: ConsumerStatus,
}

/// What DescribeStreamSummary says about a stream (the parts the libraries use).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamSummary {
    /// The stream's name.
    pub stream_name: String,
    /// The stream's ARN (RegisterStreamConsumer needs it).
    pub stream_arn: String,
    /// Its open shards, when the service said.
    pub open_shard_count: Option<u32>,
    /// How long it keeps records, when the service said.
    pub retention: Option<Duration>,
}

impl StreamSummary {
    /// A summary with a name and an ARN, nothing else known (for fakes).
    pub fn new(stream_name: impl Into<String>, stream_arn: impl Into<String>) -> Self {
        Self {
            stream_name: stream_name.into(),
            stream_arn: stream_arn.into(),
            open_shard_count: None,
            retention: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_counts_key_and_data_against_the_call_limit() {
        let entry = PutEntry::new("key".into(), Some("1".into()), Bytes::from_static(b"data!"));
        assert_eq!(entry.size(), 8);
    }

    #[test]
    fn a_shard_names_its_parents_in_order() {
        let mut shard = Shard::new("shardId-000000000002", HashRange::ALL);
        assert_eq!(shard.parents().count(), 0);
        shard.parent_shard_id = Some("shardId-000000000000".into());
        shard.adjacent_parent_shard_id = Some("shardId-000000000001".into());
        assert_eq!(
            shard.parents().collect::<Vec<_>>(),
            ["shardId-000000000000", "shardId-000000000001"]
        );
    }
}
