//! The user records of a Lambda Kinesis event, with where they came from.

use std::sync::Arc;
use std::time::SystemTime;

use aggregation_proto::{DeaggregatedRecord, DeaggregationError, ReceivedRecord};
use bytes::Bytes;

use crate::position::Position;

/// What Lambda says about one Kinesis record besides its contents; shared by every user record
/// of that Kinesis record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventSource {
    /// The shard the record was read from (from `eventID`), e.g. `shardId-000000000006`.
    pub shard_id: String,
    /// Lambda's `eventID`: `shardId:sequenceNumber`.
    pub event_id: String,
    /// `eventSource`, normally `aws:kinesis`.
    pub event_source: Option<String>,
    /// `eventSourceARN`: the stream (or its consumer, for enhanced fan-out).
    pub event_source_arn: Option<String>,
    /// `awsRegion`.
    pub aws_region: Option<String>,
    /// `invokeIdentityArn`: the role the function was invoked with.
    pub invoke_identity_arn: Option<String>,
}

/// One user record of a Lambda Kinesis event: a sub-record of a KPL aggregate, or a plain
/// Kinesis record. Its data shares the event's decoded buffer (no copy per user record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LambdaUserRecord {
    record: DeaggregatedRecord,
    source: Arc<EventSource>,
}

impl LambdaUserRecord {
    pub(crate) fn new(record: DeaggregatedRecord, source: Arc<EventSource>) -> Self {
        Self { record, source }
    }

    /// The user record's data.
    pub fn data(&self) -> &[u8] {
        self.record.data()
    }

    /// The user record's data as [`Bytes`] sharing the Kinesis record's buffer.
    pub fn data_bytes(&self) -> Bytes {
        self.record.data_bytes()
    }

    /// The user record's partition key (its own, for a sub-record of an aggregate).
    pub fn partition_key(&self) -> &str {
        self.record.partition_key()
    }

    /// The user record's explicit hash key, if it had one (only aggregates carry it).
    pub fn explicit_hash_key(&self) -> Option<&str> {
        self.record.explicit_hash_key()
    }

    /// The Kinesis record's sequence number: what `batchItemFailures[].itemIdentifier` names.
    pub fn sequence_number(&self) -> &str {
        // Every record built by this crate has one (checked in `deaggregate`).
        self.record.sequence_number().unwrap_or_default()
    }

    /// Position inside the aggregate (`0..n`); `None` for a plain Kinesis record.
    pub fn sub_sequence_number(&self) -> Option<u64> {
        self.record.sub_sequence_number()
    }

    /// When Kinesis accepted the Kinesis record (`approximateArrivalTimestamp`).
    pub fn approximate_arrival_timestamp(&self) -> SystemTime {
        self.record
            .approximate_arrival_timestamp()
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// The shard the record was read from.
    pub fn shard_id(&self) -> &str {
        &self.source.shard_id
    }

    /// What Lambda said about the Kinesis record this user record came from.
    pub fn event_source(&self) -> &EventSource {
        &self.source
    }

    /// Whether the record came out of a KPL aggregate.
    pub fn is_aggregated(&self) -> bool {
        self.record.is_aggregated()
    }

    /// Where this user record is in its shard: keep the position of the last record processed
    /// to skip, on a retry, what was already done (see [`Position`]).
    pub fn position(&self) -> Position {
        Position::new(
            self.shard_id(),
            self.sequence_number(),
            self.sub_sequence_number().unwrap_or(0),
        )
    }

    /// The deaggregated record underneath (for code written against `aggregation-proto`).
    pub fn as_deaggregated(&self) -> &DeaggregatedRecord {
        &self.record
    }
}

/// A Kinesis record whose magic and MD5 say it is a KPL aggregate but whose protobuf body does
/// not decode (with [`CorruptAggregates::Report`](crate::CorruptAggregates::Report), the
/// default). Its user records cannot be recovered: the handler decides whether to fail the
/// batch at it ([`retry_from_here`](Self::retry_from_here)) or to set it aside and go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRecord {
    record: ReceivedRecord,
    source: Arc<EventSource>,
    error: DeaggregationError,
}

impl CorruptRecord {
    pub(crate) fn new(
        record: ReceivedRecord,
        source: Arc<EventSource>,
        error: DeaggregationError,
    ) -> Self {
        Self {
            record,
            source,
            error,
        }
    }

    /// What is wrong with the aggregate.
    pub fn error(&self) -> &DeaggregationError {
        &self.error
    }

    /// The Kinesis record's sequence number.
    pub fn sequence_number(&self) -> &str {
        self.record.sequence_number.as_deref().unwrap_or_default()
    }

    /// The shard the record was read from.
    pub fn shard_id(&self) -> &str {
        &self.source.shard_id
    }

    /// The Kinesis record's partition key.
    pub fn partition_key(&self) -> &str {
        &self.record.partition_key
    }

    /// The whole Kinesis record's data, as received (for a dead-letter store).
    pub fn data(&self) -> &Bytes {
        &self.record.data
    }

    /// What Lambda said about the record.
    pub fn event_source(&self) -> &EventSource {
        &self.source
    }

    /// The partial batch response that makes Lambda retry from this record.
    pub fn retry_from_here(&self) -> aws_lambda_events::event::streams::KinesisEventResponse {
        crate::response::retry_from_sequence_number(self.sequence_number())
    }

    /// Its position, as a plain record of the shard: a handler that sets the record aside
    /// records this as processed.
    pub fn position(&self) -> Position {
        Position::new(self.shard_id(), self.sequence_number(), 0)
    }
}
