//! The narrow seam between enhanced fan-out and the network: [`FanOutApi`] (stream ARN,
//! RegisterStreamConsumer, DescribeStreamConsumer, SubscribeToShard, ListShards) and the
//! [`EventStream`] of one subscription. The AWS SDK is behind [`SdkFanOut`](super::sdk::SdkFanOut);
//! the unit tests script an in-memory fake.
//!
//! The traits are object safe (boxed futures), so the shard consumer holds one
//! `Arc<dyn FanOutApi>` whatever is behind it.

use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use aggregation_proto::ReceivedRecord;

use crate::retrieval::error::CallError;
use crate::retrieval::types::{ChildShard, StreamId};
use crate::retrieval::{ShardListing, ShardSummary};

/// A boxed, sendable future.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a subscription starts (SubscribeToShard's `StartingPosition`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SubscribeStart {
    TrimHorizon,
    Latest,
    AtTimestamp(SystemTime),
    AtSequence(String),
    AfterSequence(String),
}

/// One `SubscribeToShardEvent`, converted.
#[derive(Debug, Default)]
pub(crate) struct ShardEvent {
    pub(crate) records: Vec<ReceivedRecord>,
    /// Where the next subscription resumes (`AFTER_SEQUENCE_NUMBER`); `None` at the end of a
    /// closed shard.
    pub(crate) continuation_sequence_number: Option<String>,
    pub(crate) millis_behind_latest: Option<i64>,
    /// Empty when the event had none.
    pub(crate) child_shards: Vec<ChildShard>,
}

/// A stream consumer's state, as the service reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConsumerStatus {
    Creating,
    Active,
    Deleting,
}

/// A registered (or registering) stream consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConsumerInfo {
    pub(crate) consumer_arn: String,
    pub(crate) status: ConsumerStatus,
}

/// The events of one open subscription.
pub(crate) trait EventStream: Send {
    /// The next event; `Ok(None)` when the service ended the subscription without an error
    /// (it does every 5 minutes). Not bounded in time: the caller applies the read timeout.
    fn next_event(&mut self) -> BoxFuture<'_, Result<Option<ShardEvent>, CallError>>;
}

/// The Kinesis calls enhanced fan-out makes. Each returns a classified [`CallError`]; retrying
/// is the caller's business (the SDK's own retries are off).
pub(crate) trait FanOutApi: Send + Sync + 'static {
    /// The stream's ARN (RegisterStreamConsumer needs it).
    fn stream_arn<'a>(&'a self, stream: &'a StreamId) -> BoxFuture<'a, Result<String, CallError>>;

    fn register_consumer<'a>(
        &'a self,
        stream_arn: &'a str,
        consumer_name: &'a str,
    ) -> BoxFuture<'a, Result<ConsumerInfo, CallError>>;

    fn describe_consumer<'a>(
        &'a self,
        stream_arn: &'a str,
        consumer_name: &'a str,
    ) -> BoxFuture<'a, Result<ConsumerInfo, CallError>>;

    /// Opens a subscription; it resolves once the service accepted it.
    fn subscribe<'a>(
        &'a self,
        consumer_arn: &'a str,
        shard_id: &'a str,
        start: &'a SubscribeStart,
    ) -> BoxFuture<'a, Result<Box<dyn EventStream>, CallError>>;

    /// The shards of `listing` (to find a closed shard's children when the last event had
    /// none).
    fn list_shards<'a>(
        &'a self,
        stream: &'a StreamId,
        listing: &'a ShardListing,
    ) -> BoxFuture<'a, Result<Vec<ShardSummary>, CallError>>;
}
