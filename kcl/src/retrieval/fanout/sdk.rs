//! [`SdkFanOut`]: [`FanOutApi`] over the AWS SDK.

use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::StalledStreamProtectionConfig;
use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::{
    ConsumerStatus as SdkStatus, ShardIteratorType, StartingPosition as SdkStart,
    SubscribeToShardEventStream,
};

use super::api::{
    BoxFuture, ConsumerInfo, ConsumerStatus, EventStream, FanOutApi, ShardEvent, SubscribeStart,
};
use crate::retrieval::api::{KinesisApi, SdkKinesis, convert_children, received};
use crate::retrieval::error::{CallError, Class, Operation, classify};
use crate::retrieval::types::StreamId;
use crate::retrieval::{ShardListing, ShardSummary};

/// [`FanOutApi`] over the AWS SDK, with the SDK's retries off (the subscriber retries) and its
/// stalled-stream protection off for subscriptions (an idle shard's stream may go seconds
/// without a byte; the subscriber's read timeout is the one that applies).
#[derive(Debug, Clone)]
pub(crate) struct SdkFanOut {
    client: Client,
    kinesis: SdkKinesis,
    overrides: aws_sdk_kinesis::config::Builder,
}

impl SdkFanOut {
    /// `timeout` bounds the ListShards calls (SubscribeToShard is bounded by the subscriber).
    pub(crate) fn new(client: Client, timeout: Duration) -> Self {
        let kinesis = SdkKinesis::new(client.clone(), timeout);
        Self {
            client,
            kinesis,
            overrides: aws_sdk_kinesis::config::Builder::default()
                .retry_config(RetryConfig::disabled())
                .stalled_stream_protection(StalledStreamProtectionConfig::disabled()),
        }
    }
}

fn status(status: &SdkStatus) -> ConsumerStatus {
    match status {
        SdkStatus::Active => ConsumerStatus::Active,
        SdkStatus::Deleting => ConsumerStatus::Deleting,
        // CREATING, and any state a newer service adds: wait for ACTIVE.
        _ => ConsumerStatus::Creating,
    }
}

fn malformed(operation: Operation, reason: &'static str) -> CallError {
    CallError::new(operation, Class::Malformed, reason, reason)
}

impl FanOutApi for SdkFanOut {
    fn stream_arn<'a>(&'a self, stream: &'a StreamId) -> BoxFuture<'a, Result<String, CallError>> {
        Box::pin(async move {
            let name = match stream {
                StreamId::Arn(arn) => return Ok(arn.clone()),
                StreamId::Name(name) => name,
            };
            let operation = Operation::DescribeStreamSummary;
            let output = self
                .client
                .describe_stream_summary()
                .stream_name(name)
                .customize()
                .config_override(self.overrides.clone())
                .send()
                .await
                .map_err(|error| classify(operation, error))?;
            output
                .stream_description_summary
                .map(|summary| summary.stream_arn)
                .ok_or_else(|| malformed(operation, "the response has no StreamDescriptionSummary"))
        })
    }

    fn register_consumer<'a>(
        &'a self,
        stream_arn: &'a str,
        consumer_name: &'a str,
    ) -> BoxFuture<'a, Result<ConsumerInfo, CallError>> {
        Box::pin(async move {
            let operation = Operation::RegisterStreamConsumer;
            let output = self
                .client
                .register_stream_consumer()
                .stream_arn(stream_arn)
                .consumer_name(consumer_name)
                .customize()
                .config_override(self.overrides.clone())
                .send()
                .await
                .map_err(|error| classify(operation, error))?;
            let consumer = output
                .consumer
                .ok_or_else(|| malformed(operation, "the response has no Consumer"))?;
            Ok(ConsumerInfo {
                status: status(&consumer.consumer_status),
                consumer_arn: consumer.consumer_arn,
            })
        })
    }

    fn describe_consumer<'a>(
        &'a self,
        stream_arn: &'a str,
        consumer_name: &'a str,
    ) -> BoxFuture<'a, Result<ConsumerInfo, CallError>> {
        Box::pin(async move {
            let operation = Operation::DescribeStreamConsumer;
            let output = self
                .client
                .describe_stream_consumer()
                .stream_arn(stream_arn)
                .consumer_name(consumer_name)
                .customize()
                .config_override(self.overrides.clone())
                .send()
                .await
                .map_err(|error| classify(operation, error))?;
            let consumer = output
                .consumer_description
                .ok_or_else(|| malformed(operation, "the response has no ConsumerDescription"))?;
            Ok(ConsumerInfo {
                status: status(&consumer.consumer_status),
                consumer_arn: consumer.consumer_arn,
            })
        })
    }

    fn subscribe<'a>(
        &'a self,
        consumer_arn: &'a str,
        shard_id: &'a str,
        start: &'a SubscribeStart,
    ) -> BoxFuture<'a, Result<Box<dyn EventStream>, CallError>> {
        Box::pin(async move {
            let operation = Operation::SubscribeToShard;
            let position = match start {
                SubscribeStart::TrimHorizon => {
                    SdkStart::builder().r#type(ShardIteratorType::TrimHorizon)
                }
                SubscribeStart::Latest => SdkStart::builder().r#type(ShardIteratorType::Latest),
                SubscribeStart::AtTimestamp(at) => SdkStart::builder()
                    .r#type(ShardIteratorType::AtTimestamp)
                    .timestamp(DateTime::from(*at)),
                SubscribeStart::AtSequence(sequence_number) => SdkStart::builder()
                    .r#type(ShardIteratorType::AtSequenceNumber)
                    .sequence_number(sequence_number),
                SubscribeStart::AfterSequence(sequence_number) => SdkStart::builder()
                    .r#type(ShardIteratorType::AfterSequenceNumber)
                    .sequence_number(sequence_number),
            }
            .build()
            .map_err(|error| {
                CallError::new(
                    operation,
                    Class::InvalidRequest,
                    "ConstructionFailure",
                    error,
                )
            })?;
            let output = self
                .client
                .subscribe_to_shard()
                .consumer_arn(consumer_arn)
                .shard_id(shard_id)
                .starting_position(position)
                .customize()
                .config_override(self.overrides.clone())
                .send()
                .await
                .map_err(|error| classify(operation, error))?;
            let events: Box<dyn EventStream> = Box::new(SdkEvents {
                receiver: output.event_stream,
            });
            Ok(events)
        })
    }

    fn list_shards<'a>(
        &'a self,
        stream: &'a StreamId,
        listing: &'a ShardListing,
    ) -> BoxFuture<'a, Result<Vec<ShardSummary>, CallError>> {
        Box::pin(self.kinesis.list_shards(stream, listing))
    }
}

type StreamError = aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError;
type Receiver = aws_sdk_kinesis::primitives::event_stream::EventReceiver<
    SubscribeToShardEventStream,
    StreamError,
>;

/// One subscription's events from the SDK's event-stream receiver.
struct SdkEvents {
    receiver: Receiver,
}

impl EventStream for SdkEvents {
    fn next_event(&mut self) -> BoxFuture<'_, Result<Option<ShardEvent>, CallError>> {
        Box::pin(async move {
            let operation = Operation::SubscribeToShard;
            loop {
                let event = match self.receiver.recv().await {
                    Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(event))) => event,
                    // A kind of event this SDK does not know: nothing to deliver, read on.
                    Ok(Some(_)) => continue,
                    Ok(None) => return Ok(None),
                    Err(error) => return Err(classify_stream_error(error)),
                };
                let child_shards = convert_children(event.child_shards.unwrap_or_default())
                    .map_err(|reason| malformed(operation, reason))?;
                return Ok(Some(ShardEvent {
                    records: event.records.into_iter().map(received).collect(),
                    continuation_sequence_number: Some(event.continuation_sequence_number)
                        .filter(|c| !c.is_empty()),
                    millis_behind_latest: Some(event.millis_behind_latest),
                    child_shards,
                }));
            }
        })
    }
}

/// An error inside the event stream: a modeled exception by its kind (an exception sent in the
/// stream has no error code in its metadata, so the variant says what it is), anything else (a
/// dropped connection, a frame that does not decode) as transient.
fn classify_stream_error<R>(error: SdkError<StreamError, R>) -> CallError
where
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let operation = Operation::SubscribeToShard;
    let (class, code) = match &error {
        SdkError::ServiceError(context) => {
            let code = stream_error_code(context.err());
            let class = kinesis_common::classify_code(&code).unwrap_or(Class::Unexpected);
            (class, code)
        }
        SdkError::ConstructionFailure(_) => (Class::InvalidRequest, "ConstructionFailure".into()),
        _ => (Class::Transient, "StreamInterrupted".into()),
    };
    CallError::new(operation, class, code, error)
}

/// The service's error code of an exception received in a subscription's stream.
fn stream_error_code(error: &StreamError) -> String {
    let code = match error {
        StreamError::ResourceNotFoundException(_) => "ResourceNotFoundException",
        StreamError::ResourceInUseException(_) => "ResourceInUseException",
        StreamError::KmsDisabledException(_) => "KMSDisabledException",
        StreamError::KmsInvalidStateException(_) => "KMSInvalidStateException",
        StreamError::KmsAccessDeniedException(_) => "KMSAccessDeniedException",
        StreamError::KmsNotFoundException(_) => "KMSNotFoundException",
        StreamError::KmsOptInRequired(_) => "KMSOptInRequired",
        StreamError::KmsThrottlingException(_) => "KMSThrottlingException",
        StreamError::InternalFailureException(_) => "InternalFailure",
        other => other.code().unwrap_or("Unknown"),
    };
    code.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kinesis::types::error::{
        InternalFailureException, KmsThrottlingException, ResourceInUseException,
        ResourceNotFoundException,
    };

    #[test]
    fn exceptions_in_the_stream_are_classified_by_kind() {
        let cases = [
            (
                StreamError::ResourceInUseException(ResourceInUseException::builder().build()),
                Class::Transient,
            ),
            (
                StreamError::ResourceNotFoundException(
                    ResourceNotFoundException::builder().build(),
                ),
                Class::NotFound,
            ),
            (
                StreamError::KmsThrottlingException(KmsThrottlingException::builder().build()),
                Class::Throttled,
            ),
            (
                StreamError::InternalFailureException(InternalFailureException::builder().build()),
                Class::Transient,
            ),
        ];
        for (error, class) in cases {
            let code = stream_error_code(&error);
            assert_eq!(kinesis_common::classify_code(&code), Some(class), "{code}");
        }
    }
}
