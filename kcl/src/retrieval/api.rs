//! The narrow seam between the retrieval logic and the network: [`KinesisApi`], with the AWS
//! SDK behind [`SdkKinesis`] and scripted fakes in the unit tests.

use std::future::Future;
use std::time::{Duration, SystemTime};

use aggregation_proto::{HashRange, ReceivedRecord};
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::{Record, ShardIteratorType};
use bytes::Bytes;
use bytestring::ByteString;

use super::error::{CallError, Class, Operation, classify};
use super::types::{ChildShard, StreamId};

/// Where a new shard iterator points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IteratorStart {
    TrimHorizon,
    Latest,
    AtTimestamp(SystemTime),
    AtSequence(String),
}

/// One GetRecords answer, converted.
#[derive(Debug, Default)]
pub(crate) struct RecordsPage {
    pub(crate) records: Vec<ReceivedRecord>,
    /// `None` at the end of a closed shard.
    pub(crate) next_iterator: Option<String>,
    pub(crate) millis_behind_latest: Option<i64>,
    /// Empty when the response had none.
    pub(crate) child_shards: Vec<ChildShard>,
}

/// One shard as ListShards describes it, and which shards to list: the workspace's shared
/// types.
pub(crate) use kinesis_common::{Shard as ShardSummary, ShardListing};

/// The Kinesis calls polling retrieval makes. Each returns a classified [`CallError`]; retrying
/// is the caller's business (the SDK's own retries are off).
pub(crate) trait KinesisApi: Send + Sync + 'static {
    fn get_shard_iterator(
        &self,
        stream: &StreamId,
        shard_id: &str,
        start: &IteratorStart,
    ) -> impl Future<Output = Result<String, CallError>> + Send;

    fn get_records(
        &self,
        stream: &StreamId,
        iterator: &str,
        limit: i32,
    ) -> impl Future<Output = Result<RecordsPage, CallError>> + Send;

    /// The shards of `listing` (ListShards, all pages): the one ListShards of the crate, used
    /// by shard sync, lease cleanup and retrieval alike.
    fn list_shards(
        &self,
        stream: &StreamId,
        listing: &ShardListing,
    ) -> impl Future<Output = Result<Vec<ShardSummary>, CallError>> + Send;
}

/// [`KinesisApi`] over the AWS SDK, each call bounded by a timeout and with the SDK's own
/// retries turned off, so every retry is counted and paced in one place.
///
/// [`ShardListing::AtTimestamp`] and [`ShardListing::After`] use ListShards' `ShardFilter`.
#[derive(Debug, Clone)]
pub(crate) struct SdkKinesis {
    client: Client,
    /// The same client with its retries off, for the shared ListShards pager.
    no_retry_client: Client,
    timeout: Duration,
    no_retries: aws_sdk_kinesis::config::Builder,
}

impl SdkKinesis {
    pub(crate) fn new(client: Client, timeout: Duration) -> Self {
        let no_retry_client = Client::from_conf(
            client
                .config()
                .to_builder()
                .retry_config(RetryConfig::disabled())
                .build(),
        );
        Self {
            client,
            no_retry_client,
            timeout,
            no_retries: aws_sdk_kinesis::config::Builder::default()
                .retry_config(RetryConfig::disabled()),
        }
    }

    async fn bounded<T, F>(&self, operation: Operation, call: F) -> Result<T, CallError>
    where
        F: Future<Output = Result<T, CallError>>,
    {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(CallError::timeout(operation, self.timeout)),
        }
    }
}

impl KinesisApi for SdkKinesis {
    async fn get_shard_iterator(
        &self,
        stream: &StreamId,
        shard_id: &str,
        start: &IteratorStart,
    ) -> Result<String, CallError> {
        let operation = Operation::GetShardIterator;
        let mut request = match stream {
            StreamId::Name(name) => self.client.get_shard_iterator().stream_name(name),
            StreamId::Arn(arn) => self.client.get_shard_iterator().stream_arn(arn),
        }
        .shard_id(shard_id);
        request = match start {
            IteratorStart::TrimHorizon => {
                request.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            IteratorStart::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
            IteratorStart::AtTimestamp(at) => request
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(DateTime::from(*at)),
            IteratorStart::AtSequence(sequence_number) => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(sequence_number),
        };
        let call = async {
            let output = request
                .customize()
                .config_override(self.no_retries.clone())
                .send()
                .await
                .map_err(|error| classify(operation, error))?;
            output.shard_iterator.ok_or_else(|| {
                CallError::new(
                    operation,
                    Class::Malformed,
                    "the response has no ShardIterator",
                    "no ShardIterator",
                )
            })
        };
        self.bounded(operation, call).await
    }

    async fn get_records(
        &self,
        stream: &StreamId,
        iterator: &str,
        limit: i32,
    ) -> Result<RecordsPage, CallError> {
        let operation = Operation::GetRecords;
        let mut request = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(limit);
        if let StreamId::Arn(arn) = stream {
            request = request.stream_arn(arn);
        }
        let call = async {
            let output = request
                .customize()
                .config_override(self.no_retries.clone())
                .send()
                .await
                .map_err(|error| classify(operation, error))?;
            let child_shards = convert_children(output.child_shards.unwrap_or_default())
                .map_err(|reason| CallError::new(operation, Class::Malformed, reason, reason))?;
            Ok(RecordsPage {
                records: output.records.into_iter().map(received).collect(),
                next_iterator: output.next_shard_iterator.filter(|it| !it.is_empty()),
                millis_behind_latest: output.millis_behind_latest,
                child_shards,
            })
        };
        self.bounded(operation, call).await
    }

    async fn list_shards(
        &self,
        stream: &StreamId,
        listing: &ShardListing,
    ) -> Result<Vec<ShardSummary>, CallError> {
        let operation = Operation::ListShards;
        let call = async {
            kinesis_common::list_shards(&self.no_retry_client, stream, listing)
                .await
                .map_err(|error| CallError::from_kinesis(operation, error))
        };
        self.bounded(operation, call).await
    }
}

/// The SDK's child shards (of GetRecords or a SubscribeToShard event) as [`ChildShard`]s.
pub(crate) fn convert_children(
    children: Vec<aws_sdk_kinesis::types::ChildShard>,
) -> Result<Vec<ChildShard>, &'static str> {
    children
        .iter()
        .map(|child| {
            let range = child
                .hash_key_range()
                .ok_or("a child shard has no HashKeyRange")?;
            let hash_range =
                HashRange::from_decimal(range.starting_hash_key(), range.ending_hash_key())
                    .map_err(|_| "a child shard's HashKeyRange is not a valid range")?;
            Ok(ChildShard {
                shard_id: child.shard_id().to_owned(),
                parent_shard_ids: child.parent_shards().to_vec(),
                hash_range,
            })
        })
        .collect()
}

/// The SDK's record as deaggregation input, without copying data or strings.
pub(crate) fn received(record: Record) -> ReceivedRecord {
    let Record {
        sequence_number,
        approximate_arrival_timestamp,
        data,
        partition_key,
        ..
    } = record;
    let received = ReceivedRecord::new(
        ByteString::from(partition_key),
        Bytes::from(data.into_inner()),
    )
    .with_sequence_number(ByteString::from(sequence_number));
    match approximate_arrival_timestamp.and_then(|at| SystemTime::try_from(at).ok()) {
        Some(arrival) => received.with_arrival_time(arrival),
        None => received,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kinesis::primitives::Blob;

    #[test]
    fn sdk_records_convert_without_losing_fields() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let record = Record::builder()
            .sequence_number("49590338271490256608559692538361571095921575989136588898")
            .partition_key("pk")
            .data(Blob::new(b"payload".to_vec()))
            .approximate_arrival_timestamp(DateTime::from(at))
            .build()
            .unwrap();
        let received = received(record);
        assert_eq!(received.partition_key, "pk");
        assert_eq!(received.data, "payload");
        assert_eq!(
            received.sequence_number.as_deref(),
            Some("49590338271490256608559692538361571095921575989136588898")
        );
        assert_eq!(received.approximate_arrival_timestamp, Some(at));
    }
}
