//! The values that cross the [`RecordSource`](super::RecordSource) boundary.

use std::time::SystemTime;

use aggregation_proto::DeaggregatedRecord;

// Public as `kcl::StreamId` (the scheduler's builder takes it too).
pub(crate) use kinesis_common::StreamId;

/// Where a [`RecordSource`](super::RecordSource) starts reading a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartingPosition {
    /// The oldest record still in the shard (`TRIM_HORIZON`).
    TrimHorizon,
    /// Only records put after the source's first iterator was created (`LATEST`).
    Latest,
    /// Records whose approximate arrival time is at or after this instant (`AT_TIMESTAMP`).
    AtTimestamp(SystemTime),
    /// Resume after a checkpoint: records at or below (sequence, sub-sequence) are skipped, so a
    /// restart resumes inside an aggregate after the last checkpointed sub-record. Uses
    /// `AT_SEQUENCE_NUMBER` and skips; sequence numbers are decimal strings up to 128 digits:
    /// they are compared numerically (length after stripping leading zeros, then
    /// lexicographically), never as `u128`.
    ///
    /// A record that was not aggregated counts as sub-sequence 0, so a checkpoint
    /// `(s, 0)` on a plain record resumes at the record after `s`.
    AfterSequence {
        /// The checkpointed Kinesis sequence number (decimal digits).
        sequence_number: String,
        /// The checkpointed sub-record inside that Kinesis record (0 for a plain record).
        sub_sequence_number: u64,
    },
}

/// A shard that a closed shard split or merged into: the client layer's type (GetRecords'
/// or a subscription event's `ChildShards`, or ListShards).
pub use kinesis_common::ChildShard;

/// One GetRecords answer (polling) or one subscription event (fan-out) worth of a shard, ready
/// for the record processor.
///
/// An empty batch is normal: it means nothing new arrived (see
/// [`millis_behind_latest`](Self::millis_behind_latest) to tell "caught up" from "skipping an
/// empty stretch of the shard"). A batch that ends the shard may carry records too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardBatch {
    /// The user records, in order: deaggregated (every sub-record of an aggregate, sharing one
    /// buffer per Kinesis record), filtered to the shard's hash range per sub-record, and
    /// already past the starting position.
    pub records: Vec<DeaggregatedRecord>,
    /// How far the shard's tip is ahead of this batch, as GetRecords or the event reported it;
    /// `None` when
    /// the service did not say (and on the repeated batches after the shard's end).
    pub millis_behind_latest: Option<i64>,
    /// `Some(children)` when this batch reached the end of a closed shard; every later batch
    /// repeats it, empty. The children come from GetRecords' `ChildShards`, or from ListShards
    /// when the response had none. A shard closed without children (for example one of a
    /// stream being deleted) ends with `Some(vec![])`.
    pub shard_end: Option<Vec<ChildShard>>,
    /// Kinesis records in the GetRecords response or event, before deaggregation, filtering and
    /// skipping (for metrics).
    pub kinesis_records: usize,
    /// Data bytes of those Kinesis records (for metrics).
    pub bytes: usize,
}

impl ShardBatch {
    /// A batch without records, nothing else known.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Whether the batch has no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}
