//! A Lambda Kinesis event taken apart into user records.

use std::sync::Arc;
use std::time::SystemTime;

use aggregation_proto::{Deaggregator, HashRange, Outcome, PassThroughReason, ReceivedRecord};
use aws_lambda_events::event::kinesis::{KinesisEvent, KinesisEventRecord};
use bytes::Bytes;

use crate::error::EventError;
use crate::position::Position;
use crate::record::{CorruptRecord, EventSource, LambdaUserRecord};

/// What to do with a Kinesis record whose magic and MD5 are those of a KPL aggregate but whose
/// protobuf body does not decode (a producer bug or a crafted record; transport corruption
/// fails the MD5 instead).
///
/// Either way, a record without the magic, too short, or whose MD5 does not match is a plain
/// record and is handed over whole, as the KCL does: only the producer can tell an unlucky
/// plain payload from a damaged aggregate, and dropping it would lose data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptAggregates {
    /// A [`BatchItem::Corrupt`] in its place (the default): the handler decides, seeing the
    /// error, whether to fail the batch at it (a `batchItemFailure`) or set it aside.
    #[default]
    Report,
    /// Handed over whole as one plain user record, as the KCL does.
    PassThrough,
}

/// Takes Lambda Kinesis events apart with `aggregation-proto`'s deaggregator.
///
/// ```
/// use kinesis_lambda::{BatchItem, EventDeaggregator};
/// use aws_lambda_events::event::kinesis::KinesisEvent;
///
/// let event: KinesisEvent = serde_json::from_str(r#"{"Records": [{
///     "eventID": "shardId-000000000000:49590338271490256608559692538361571095921575989136588898",
///     "eventSource": "aws:kinesis",
///     "kinesis": {"partitionKey": "1", "data": "aGVsbG8=", "approximateArrivalTimestamp": 1545084650.987,
///                 "sequenceNumber": "49590338271490256608559692538361571095921575989136588898"}}]}"#)?;
/// let batch = EventDeaggregator::new().deaggregate(event)?;
/// let BatchItem::Record(record) = &batch.items()[0] else { unreachable!() };
/// assert_eq!(record.data(), b"hello");
/// assert_eq!(record.shard_id(), "shardId-000000000000");
/// assert_eq!(record.sub_sequence_number(), None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventDeaggregator {
    corrupt: CorruptAggregates,
    hash_range: Option<HashRange>,
}

impl EventDeaggregator {
    /// Reports corrupt aggregates, keeps every user record.
    pub fn new() -> Self {
        Self::default()
    }

    /// What to do with a corrupt aggregate (default [`CorruptAggregates::Report`]).
    pub fn corrupt_aggregates(mut self, policy: CorruptAggregates) -> Self {
        self.corrupt = policy;
        self
    }

    /// Keeps only sub-records whose hash key lies in `range` (the shard's, after a reshard:
    /// an aggregate written before a split can hold records of the sibling shard). Plain
    /// records are never filtered. Off by default.
    pub fn hash_range(mut self, range: HashRange) -> Self {
        self.hash_range = Some(range);
        self
    }

    /// The user records of `event`, in the order of the event (Kinesis records in sequence
    /// order, sub-records in aggregate order). Read the event as an
    /// [`ExactKinesisEvent`](crate::ExactKinesisEvent) for exact arrival times. Takes the event by value so that each record's
    /// decoded data becomes the buffer its user records share, without a copy.
    ///
    /// # Errors
    /// [`EventError`] when a record lacks the shard or sequence number every Kinesis event
    /// record has: the event is not from a Kinesis event source mapping.
    pub fn deaggregate(
        &self,
        event: impl Into<KinesisEvent>,
    ) -> Result<DeaggregatedBatch, EventError> {
        let event = event.into();
        let mut deaggregator =
            Deaggregator::new().strict(self.corrupt == CorruptAggregates::Report);
        if let Some(range) = self.hash_range {
            deaggregator = deaggregator.hash_range(range);
        }
        let mut batch = DeaggregatedBatch {
            items: Vec::with_capacity(event.records.len()),
            stats: BatchStats::default(),
        };
        let mut out = Vec::new();
        for (index, record) in event.records.into_iter().enumerate() {
            let (source, received) = split(index, record)?;
            batch.stats.kinesis_records += 1;
            match deaggregator.deaggregate_owned_into(received.clone(), &mut out) {
                Ok(outcome) => batch.stats.count(&outcome),
                Err(error) => {
                    batch.stats.corrupt += 1;
                    let corrupt = CorruptRecord::new(received, source, error);
                    batch.items.push(BatchItem::Corrupt(corrupt));
                    continue;
                }
            }
            batch.stats.user_records += out.len();
            batch.items.extend(
                out.drain(..)
                    .map(|user| BatchItem::Record(LambdaUserRecord::new(user, source.clone()))),
            );
        }
        Ok(batch)
    }
}

/// One event record as what Lambda said about it and the Kinesis record to deaggregate.
fn split(
    index: usize,
    record: KinesisEventRecord,
) -> Result<(Arc<EventSource>, ReceivedRecord), EventError> {
    let event_id = record.event_id.unwrap_or_default();
    let shard_id = match event_id.split_once(':') {
        Some((shard, _)) if !shard.is_empty() => shard.to_owned(),
        _ => return Err(EventError::InvalidEventId { index, event_id }),
    };
    let kinesis = record.kinesis;
    if !aggregation_proto::is_sequence_number(&kinesis.sequence_number) {
        return Err(EventError::InvalidSequenceNumber {
            index,
            sequence_number: kinesis.sequence_number,
        });
    }
    let arrival = SystemTime::from(kinesis.approximate_arrival_timestamp.0);
    let received = ReceivedRecord::new(kinesis.partition_key, Bytes::from(kinesis.data.0))
        .with_sequence_number(kinesis.sequence_number)
        .with_arrival_time(arrival);
    let source = Arc::new(EventSource {
        shard_id,
        event_id,
        event_source: record.event_source,
        event_source_arn: record.event_source_arn,
        aws_region: record.aws_region,
        invoke_identity_arn: record.invoke_identity_arn,
    });
    Ok((source, received))
}

/// One entry of a [`DeaggregatedBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchItem {
    /// A user record.
    Record(LambdaUserRecord),
    /// A corrupt aggregate, in its place (only with [`CorruptAggregates::Report`]).
    Corrupt(CorruptRecord),
}

impl BatchItem {
    /// Where the item is in its shard.
    pub fn position(&self) -> Position {
        match self {
            Self::Record(record) => record.position(),
            Self::Corrupt(corrupt) => corrupt.position(),
        }
    }

    /// The Kinesis record's sequence number.
    pub fn sequence_number(&self) -> &str {
        match self {
            Self::Record(record) => record.sequence_number(),
            Self::Corrupt(corrupt) => corrupt.sequence_number(),
        }
    }
}

/// The user records of one event, in order, with what was found on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeaggregatedBatch {
    items: Vec<BatchItem>,
    stats: BatchStats,
}

impl DeaggregatedBatch {
    /// Every item, in order.
    pub fn items(&self) -> &[BatchItem] {
        &self.items
    }

    /// Every item, in order, by value.
    pub fn into_items(self) -> Vec<BatchItem> {
        self.items
    }

    /// The user records only, in order.
    pub fn records(&self) -> impl Iterator<Item = &LambdaUserRecord> {
        self.items.iter().filter_map(|item| match item {
            BatchItem::Record(record) => Some(record),
            BatchItem::Corrupt(_) => None,
        })
    }

    /// The corrupt aggregates only, in order.
    pub fn corrupt(&self) -> impl Iterator<Item = &CorruptRecord> {
        self.items.iter().filter_map(|item| match item {
            BatchItem::Corrupt(corrupt) => Some(corrupt),
            BatchItem::Record(_) => None,
        })
    }

    /// What the event held.
    pub fn stats(&self) -> &BatchStats {
        &self.stats
    }

    /// Drops every item of `processed`'s shard at or before it: the user records of an
    /// aggregate that a retry delivers again though they were finished before the failure
    /// (see [`Position`] for the at-least-once contract). `None` keeps everything. Returns
    /// how many items were dropped.
    pub fn skip_processed(&mut self, processed: Option<&Position>) -> usize {
        let Some(processed) = processed else {
            return 0;
        };
        let before = self.items.len();
        self.items.retain(|item| {
            let (shard, sub) = match item {
                BatchItem::Record(record) => {
                    (record.shard_id(), record.sub_sequence_number().unwrap_or(0))
                }
                BatchItem::Corrupt(corrupt) => (corrupt.shard_id(), 0),
            };
            !processed.covers_parts(shard, item.sequence_number(), sub)
        });
        let skipped = before - self.items.len();
        self.stats.skipped += skipped;
        skipped
    }
}

/// Counts of what an event held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchStats {
    /// Kinesis records in the event.
    pub kinesis_records: usize,
    /// User records delivered (before [`skip_processed`](DeaggregatedBatch::skip_processed)).
    pub user_records: usize,
    /// Kinesis records that were valid KPL aggregates.
    pub aggregates: usize,
    /// Records with the aggregate magic and a wrong MD5, handed over as plain records.
    pub digest_mismatches: usize,
    /// Corrupt aggregates reported as [`BatchItem::Corrupt`].
    pub corrupt: usize,
    /// Corrupt aggregates handed over as plain records ([`CorruptAggregates::PassThrough`]).
    pub corrupt_passed_through: usize,
    /// Sub-records dropped by the hash-range filter.
    pub filtered: usize,
    /// Items dropped by [`skip_processed`](DeaggregatedBatch::skip_processed).
    pub skipped: usize,
}

impl BatchStats {
    fn count(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Aggregated { filtered, .. } => {
                self.aggregates += 1;
                self.filtered += filtered;
            }
            Outcome::PassedThrough(PassThroughReason::DigestMismatch) => {
                self.digest_mismatches += 1;
            }
            Outcome::PassedThrough(PassThroughReason::Corrupt(_)) => {
                self.corrupt_passed_through += 1;
            }
            // Plain records, and outcomes added later: nothing to count.
            _ => {}
        }
    }
}
