//! The seam between the producer and Kinesis: [`KinesisApi`], the two calls the pipeline makes
//! (ListShards and PutRecords), implemented over the AWS SDK by [`SdkKinesis`] and in memory by
//! [`FakeKinesis`](crate::testing::FakeKinesis) (feature `test-util`).
//!
//! The pipeline bounds every call with its own timeout and decides every retry itself, so an
//! implementation makes exactly one attempt per call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use bytes::Bytes;
pub use kinesis_common::{ErrorClass, KinesisError, Shard, StreamId};
use kinesis_common::{ShardListing, classify, list_shards};

/// A boxed, sendable future, as the [`KinesisApi`] methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

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

/// The Kinesis calls the producer makes. One attempt per call; the producer bounds each call in
/// time and retries by itself.
///
/// Implement it to put the producer in front of something other than the AWS SDK (a test fake,
/// a proxy); [`SdkKinesis`] is the real one.
pub trait KinesisApi: Send + Sync + fmt::Debug + 'static {
    /// The open shards of `stream` (closed ones may be included: they are ignored), following
    /// every page.
    fn list_shards<'a>(
        &'a self,
        stream: &'a StreamId,
    ) -> BoxFuture<'a, Result<Vec<Shard>, KinesisError>>;

    /// One PutRecords call with `entries` (at most 500, at most 5 MiB unless the stream's
    /// MaxRecordSize was raised). The answer has one result per entry, in order; a shorter
    /// answer leaves the missing entries' fate unknown.
    fn put_records<'a>(
        &'a self,
        stream: &'a StreamId,
        entries: &'a [PutEntry],
    ) -> BoxFuture<'a, Result<Vec<PutResult>, KinesisError>>;
}

/// [`KinesisApi`] over the AWS SDK's Kinesis client, with the SDK's own retries turned off.
#[derive(Debug, Clone)]
pub struct SdkKinesis {
    client: Client,
}

impl SdkKinesis {
    /// Wraps `client`, turning its retries off (the producer retries per record, bounded by the
    /// record's TTL).
    pub fn new(client: &Client) -> Self {
        let client = Client::from_conf(
            client
                .config()
                .to_builder()
                .retry_config(RetryConfig::disabled())
                .build(),
        );
        Self { client }
    }
}

impl KinesisApi for SdkKinesis {
    fn list_shards<'a>(
        &'a self,
        stream: &'a StreamId,
    ) -> BoxFuture<'a, Result<Vec<Shard>, KinesisError>> {
        // The producer routes to open shards only: closed ones are pages for nothing.
        Box::pin(list_shards(&self.client, stream, &ShardListing::Open))
    }

    fn put_records<'a>(
        &'a self,
        stream: &'a StreamId,
        entries: &'a [PutEntry],
    ) -> BoxFuture<'a, Result<Vec<PutResult>, KinesisError>> {
        Box::pin(async move {
            const OPERATION: &str = "PutRecords";
            let records = entries
                .iter()
                .map(|entry| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(&entry.partition_key)
                        .set_explicit_hash_key(entry.explicit_hash_key.clone())
                        .data(Blob::new(entry.data.to_vec()))
                        .build()
                        .map_err(|error| {
                            KinesisError::new(
                                OPERATION,
                                ErrorClass::InvalidRequest,
                                "ConstructionFailure",
                                error.to_string(),
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let response = stream
                .apply(
                    self.client.put_records(),
                    |b, v| b.stream_name(v),
                    |b, v| b.stream_arn(v),
                )
                .set_records(Some(records))
                .send()
                .await
                .map_err(|error| classify(OPERATION, error))?;
            Ok(response
                .records()
                .iter()
                .map(|entry| {
                    match (
                        entry.error_code(),
                        entry.shard_id(),
                        entry.sequence_number(),
                    ) {
                        (None, Some(shard_id), Some(sequence_number)) => PutResult::Stored {
                            shard_id: shard_id.to_owned(),
                            sequence_number: sequence_number.to_owned(),
                        },
                        (code, _, _) => PutResult::Failed {
                            code: code.unwrap_or("MissingResult").to_owned(),
                            message: entry.error_message().unwrap_or_default().to_owned(),
                        },
                    }
                })
                .collect())
        })
    }
}

impl<T: KinesisApi + ?Sized> KinesisApi for Arc<T> {
    fn list_shards<'a>(
        &'a self,
        stream: &'a StreamId,
    ) -> BoxFuture<'a, Result<Vec<Shard>, KinesisError>> {
        (**self).list_shards(stream)
    }

    fn put_records<'a>(
        &'a self,
        stream: &'a StreamId,
        entries: &'a [PutEntry],
    ) -> BoxFuture<'a, Result<Vec<PutResult>, KinesisError>> {
        (**self).put_records(stream, entries)
    }
}
