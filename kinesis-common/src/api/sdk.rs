//! [`SdkKinesis`]: the whole trait family over the AWS SDK's Kinesis client.

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::StalledStreamProtectionConfig;
use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::primitives::event_stream::EventReceiver;
use aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError;
use aws_sdk_kinesis::types::{ShardIteratorType, SubscribeToShardEventStream};

use super::bounded::{Bounded, Timeouts};
use super::convert;
use super::operation::{
    DESCRIBE_STREAM_CONSUMER, DESCRIBE_STREAM_SUMMARY, GET_RECORDS, GET_SHARD_ITERATOR,
    PUT_RECORDS, REGISTER_STREAM_CONSUMER, SUBSCRIBE_TO_SHARD,
};
use super::types::{
    ConsumerInfo, PutEntry, PutResult, RecordsPage, Shard, ShardEvent, ShardIteratorStart,
    ShardListing, StreamSummary, SubscribeStart,
};
use super::{
    BoxFuture, EventStream, ListShards, PutRecords, ReadShard, StreamConsumers, SubscribeToShard,
};
use crate::error::{KinesisError, classify};
use crate::stream::StreamId;

/// Every trait of the family over the AWS SDK's Kinesis client: one attempt per call, not
/// bounded in time (wrap it in [`Bounded`], see [`with_timeouts`](Self::with_timeouts), or
/// bound each call where it is made).
///
/// - **Retries**: off, set once: [`new`](Self::new) rebuilds the client's configuration with
///   [`RetryConfig::disabled`], so every retry is decided, paced and counted by the caller
///   (the producer within a record's TTL, the consumer by its backoff). The rebuilt
///   configuration keeps everything else of the client given (HTTP client, endpoint,
///   credentials, region), so a client over a custom HTTP connector works the same.
/// - **Stalled-stream protection**: off for SubscribeToShard only, per request: an idle shard's
///   subscription may send nothing for seconds, and the caller's read timeout is the one that
///   applies. Every other call (PutRecords bodies, GetRecords answers) keeps the client's.
/// - **Timeouts**: none here; see [`Bounded`] for why.
///
/// Cheap to clone (the SDK client is shared).
#[derive(Debug, Clone)]
pub struct SdkKinesis {
    client: Client,
}

impl SdkKinesis {
    /// Wraps `client`, turning its retries off (the rest of its configuration is kept).
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

    /// This client with every call bounded by `timeouts` (see [`Bounded`]).
    pub fn with_timeouts(self, timeouts: Timeouts) -> Bounded<Self> {
        Bounded::new(self, timeouts)
    }

    /// The SDK client the calls go through (retries off).
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl ListShards for SdkKinesis {
    fn list_shards<'a>(
        &'a self,
        stream: &'a StreamId,
        listing: &'a ShardListing,
    ) -> BoxFuture<'a, Result<Vec<Shard>, KinesisError>> {
        Box::pin(crate::shards::list_shards(&self.client, stream, listing))
    }
}

impl PutRecords for SdkKinesis {
    fn put_records<'a>(
        &'a self,
        stream: &'a StreamId,
        entries: &'a [PutEntry],
    ) -> BoxFuture<'a, Result<Vec<PutResult>, KinesisError>> {
        Box::pin(async move {
            let records = convert::put_request_entries(entries)?;
            let response = stream
                .apply(
                    self.client.put_records(),
                    |b, v| b.stream_name(v),
                    |b, v| b.stream_arn(v),
                )
                .set_records(Some(records))
                .send()
                .await
                .map_err(|error| classify(PUT_RECORDS, error))?;
            Ok(convert::put_results(response.records()))
        })
    }
}

impl ReadShard for SdkKinesis {
    fn get_shard_iterator<'a>(
        &'a self,
        stream: &'a StreamId,
        shard_id: &'a str,
        start: &'a ShardIteratorStart,
    ) -> BoxFuture<'a, Result<String, KinesisError>> {
        Box::pin(async move {
            let request = stream
                .apply(
                    self.client.get_shard_iterator(),
                    |b, v| b.stream_name(v),
                    |b, v| b.stream_arn(v),
                )
                .shard_id(shard_id);
            let request = match start {
                ShardIteratorStart::TrimHorizon => {
                    request.shard_iterator_type(ShardIteratorType::TrimHorizon)
                }
                ShardIteratorStart::Latest => {
                    request.shard_iterator_type(ShardIteratorType::Latest)
                }
                ShardIteratorStart::AtTimestamp(at) => request
                    .shard_iterator_type(ShardIteratorType::AtTimestamp)
                    .timestamp(DateTime::from(*at)),
                ShardIteratorStart::AtSequence(sequence_number) => request
                    .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                    .starting_sequence_number(sequence_number),
            };
            let output = request
                .send()
                .await
                .map_err(|error| classify(GET_SHARD_ITERATOR, error))?;
            output.shard_iterator.ok_or_else(|| {
                convert::malformed(GET_SHARD_ITERATOR, "the response has no ShardIterator")
            })
        })
    }

    fn get_records<'a>(
        &'a self,
        stream: &'a StreamId,
        iterator: &'a str,
        limit: i32,
    ) -> BoxFuture<'a, Result<RecordsPage, KinesisError>> {
        Box::pin(async move {
            let mut request = self
                .client
                .get_records()
                .shard_iterator(iterator)
                .limit(limit);
            // The iterator names the stream; an ARN is sent for policies written against it.
            if let StreamId::Arn(arn) = stream {
                request = request.stream_arn(arn);
            }
            let output = request
                .send()
                .await
                .map_err(|error| classify(GET_RECORDS, error))?;
            convert::records_page(GET_RECORDS, output)
        })
    }
}

impl StreamConsumers for SdkKinesis {
    fn describe_stream_summary<'a>(
        &'a self,
        stream: &'a StreamId,
    ) -> BoxFuture<'a, Result<StreamSummary, KinesisError>> {
        Box::pin(async move {
            let output = stream
                .apply(
                    self.client.describe_stream_summary(),
                    |b, v| b.stream_name(v),
                    |b, v| b.stream_arn(v),
                )
                .send()
                .await
                .map_err(|error| classify(DESCRIBE_STREAM_SUMMARY, error))?;
            output
                .stream_description_summary
                .map(convert::stream_summary)
                .ok_or_else(|| {
                    convert::malformed(
                        DESCRIBE_STREAM_SUMMARY,
                        "the response has no StreamDescriptionSummary",
                    )
                })
        })
    }

    fn register_consumer<'a>(
        &'a self,
        stream_arn: &'a str,
        consumer_name: &'a str,
    ) -> BoxFuture<'a, Result<ConsumerInfo, KinesisError>> {
        Box::pin(async move {
            let output = self
                .client
                .register_stream_consumer()
                .stream_arn(stream_arn)
                .consumer_name(consumer_name)
                .send()
                .await
                .map_err(|error| classify(REGISTER_STREAM_CONSUMER, error))?;
            let consumer = output.consumer.ok_or_else(|| {
                convert::malformed(REGISTER_STREAM_CONSUMER, "the response has no Consumer")
            })?;
            Ok(ConsumerInfo {
                status: convert::consumer_status(&consumer.consumer_status),
                consumer_arn: consumer.consumer_arn,
            })
        })
    }

    fn describe_consumer<'a>(
        &'a self,
        stream_arn: &'a str,
        consumer_name: &'a str,
    ) -> BoxFuture<'a, Result<ConsumerInfo, KinesisError>> {
        Box::pin(async move {
            let output = self
                .client
                .describe_stream_consumer()
                .stream_arn(stream_arn)
                .consumer_name(consumer_name)
                .send()
                .await
                .map_err(|error| classify(DESCRIBE_STREAM_CONSUMER, error))?;
            let consumer = output.consumer_description.ok_or_else(|| {
                convert::malformed(
                    DESCRIBE_STREAM_CONSUMER,
                    "the response has no ConsumerDescription",
                )
            })?;
            Ok(ConsumerInfo {
                status: convert::consumer_status(&consumer.consumer_status),
                consumer_arn: consumer.consumer_arn,
            })
        })
    }
}

impl SubscribeToShard for SdkKinesis {
    fn subscribe<'a>(
        &'a self,
        consumer_arn: &'a str,
        shard_id: &'a str,
        start: &'a SubscribeStart,
    ) -> BoxFuture<'a, Result<Box<dyn EventStream>, KinesisError>> {
        Box::pin(async move {
            let position = convert::starting_position(start)?;
            let output = self
                .client
                .subscribe_to_shard()
                .consumer_arn(consumer_arn)
                .shard_id(shard_id)
                .starting_position(position)
                .customize()
                .config_override(subscription_overrides())
                .send()
                .await
                .map_err(|error| classify(SUBSCRIBE_TO_SHARD, error))?;
            let events: Box<dyn EventStream> = Box::new(SdkEvents {
                receiver: output.event_stream,
            });
            Ok(events)
        })
    }
}

/// What a subscription request changes in the client's configuration: stalled-stream protection
/// off (retries are already off on the client).
fn subscription_overrides() -> aws_sdk_kinesis::config::Builder {
    aws_sdk_kinesis::config::Builder::default()
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
}

/// One subscription's events from the SDK's event-stream receiver.
struct SdkEvents {
    receiver: EventReceiver<SubscribeToShardEventStream, SubscribeToShardEventStreamError>,
}

impl EventStream for SdkEvents {
    fn next_event(&mut self) -> BoxFuture<'_, Result<Option<ShardEvent>, KinesisError>> {
        Box::pin(async move {
            loop {
                return match self.receiver.recv().await {
                    Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(event))) => {
                        convert::shard_event(event).map(Some)
                    }
                    // A kind of event this SDK does not know: nothing to deliver, read on.
                    Ok(Some(_)) => continue,
                    Ok(None) => Ok(None),
                    Err(error) => Err(convert::classify_stream_error(error)),
                };
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kinesis::config::{BehaviorVersion, Region};

    fn client() -> Client {
        let config = aws_sdk_kinesis::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .retry_config(RetryConfig::standard().with_max_attempts(5))
            .build();
        Client::from_conf(config)
    }

    #[test]
    fn retries_are_turned_off_once_and_the_rest_is_kept() {
        let given = client();
        let kinesis = SdkKinesis::new(&given);
        let config = kinesis.client().config();
        assert_eq!(
            config.retry_config().map(RetryConfig::max_attempts),
            Some(1)
        );
        assert_eq!(config.region(), given.config().region());
        // The caller's client keeps its own retries.
        assert_eq!(
            given.config().retry_config().map(RetryConfig::max_attempts),
            Some(5)
        );
    }

    #[test]
    fn only_subscriptions_turn_stalled_stream_protection_off() {
        let overrides = subscription_overrides().build();
        assert_eq!(
            overrides
                .stalled_stream_protection()
                .map(|config| config.is_enabled()),
            Some(false)
        );
        // The override leaves the retries as the client has them (off).
        assert!(overrides.retry_config().is_none());
    }
}
