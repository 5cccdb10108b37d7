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

impl_calls! {
    impl[] ListShards for SdkKinesis {
        async fn list_shards(&self, stream: &'a StreamId, listing: &'a ShardListing) -> Vec<Shard> {
            crate::shards::list_shards(&self.client, stream, listing).await
        }
    }

    impl[] PutRecords for SdkKinesis {
        async fn put_records(
            &self,
            stream: &'a StreamId,
            entries: &'a [PutEntry],
        ) -> Vec<PutResult> {
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
        }
    }

    impl[] ReadShard for SdkKinesis {
        async fn get_shard_iterator(
            &self,
            stream: &'a StreamId,
            shard_id: &'a str,
            start: &'a ShardIteratorStart,
        ) -> String {
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
        }

        async fn get_records(
            &self,
            stream: &'a StreamId,
            iterator: &'a str,
            limit: i32,
        ) -> RecordsPage {
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
        }
    }

    impl[] StreamConsumers for SdkKinesis {
        async fn describe_stream_summary(&self, stream: &'a StreamId) -> StreamSummary {
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
        }

        async fn register_consumer(
            &self,
            stream_arn: &'a str,
            consumer_name: &'a str,
        ) -> ConsumerInfo {
            let output = self
                .client
                .register_stream_consumer()
                .stream_arn(stream_arn)
                .consumer_name(consumer_name)
                .send()
                .await
                .map_err(|error| classify(REGISTER_STREAM_CONSUMER, error))?;
            let consumer = output
                .consumer
                .map(|consumer| (consumer.consumer_status, consumer.consumer_arn));
            convert::consumer_info(REGISTER_STREAM_CONSUMER, consumer, "Consumer")
        }

        async fn describe_consumer(
            &self,
            stream_arn: &'a str,
            consumer_name: &'a str,
        ) -> ConsumerInfo {
            let output = self
                .client
                .describe_stream_consumer()
                .stream_arn(stream_arn)
                .consumer_name(consumer_name)
                .send()
                .await
                .map_err(|error| classify(DESCRIBE_STREAM_CONSUMER, error))?;
            let consumer = output
                .consumer_description
                .map(|consumer| (consumer.consumer_status, consumer.consumer_arn));
            convert::consumer_info(DESCRIBE_STREAM_CONSUMER, consumer, "ConsumerDescription")
        }
    }

    impl[] SubscribeToShard for SdkKinesis {
        async fn subscribe(
            &self,
            consumer_arn: &'a str,
            shard_id: &'a str,
            start: &'a SubscribeStart,
        ) -> Box<dyn EventStream> {
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
        }
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
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
    use aws_smithy_runtime_api::client::http::{
        HttpConnector, HttpConnectorFuture, SharedHttpConnector, http_client_fn,
    };
    use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
    use aws_smithy_types::body::SdkBody;
    use bytes::Bytes;

    use super::*;
    use crate::ErrorClass;

    /// An HTTP connector that answers from a script (status, JSON body) and records every
    /// request (its `X-Amz-Target` and body): the SDK client's own HTTP client, replaced.
    #[derive(Debug, Clone, Default)]
    struct Scripted {
        answers: Arc<Mutex<VecDeque<(u16, &'static str)>>>,
        requests: Arc<Mutex<Vec<(String, String)>>>,
    }

    impl Scripted {
        fn new(answers: impl IntoIterator<Item = (u16, &'static str)>) -> Self {
            let scripted = Self::default();
            scripted.answers.lock().unwrap().extend(answers);
            scripted
        }

        fn requests(&self) -> Vec<(String, String)> {
            self.requests.lock().unwrap().clone()
        }

        /// A client over this connector, with the SDK's standard retries (3 attempts).
        fn client(&self) -> Client {
            let connector = self.clone();
            let http_client =
                http_client_fn(move |_, _| SharedHttpConnector::new(connector.clone()));
            let config = aws_sdk_kinesis::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new("us-east-1"))
                .credentials_provider(Credentials::new("AKID", "SECRET", None, None, "test"))
                .endpoint_url("http://kinesis.test")
                .http_client(http_client)
                .retry_config(RetryConfig::standard())
                .build();
            Client::from_conf(config)
        }
    }

    impl HttpConnector for Scripted {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            let target = request
                .headers()
                .get("x-amz-target")
                .unwrap_or_default()
                .to_owned();
            let body = String::from_utf8_lossy(request.body().bytes().unwrap_or_default()).into();
            self.requests.lock().unwrap().push((target, body));
            let (status, json) = self
                .answers
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or((500, r#"{"__type":"InternalFailure"}"#));
            let mut response = HttpResponse::new(
                status.try_into().unwrap(),
                SdkBody::from(Bytes::from_static(json.as_bytes())),
            );
            response
                .headers_mut()
                .insert("content-type", "application/x-amz-json-1.1");
            HttpConnectorFuture::ready(Ok(response))
        }
    }

    const FAILURE: (u16, &str) = (500, r#"{"__type":"InternalFailure","message":"boom"}"#);
    const STORED: (u16, &str) = (
        200,
        r#"{"FailedRecordCount":1,"Records":[{"SequenceNumber":"49","ShardId":"shardId-000000000001"},{"ErrorCode":"ProvisionedThroughputExceededException","ErrorMessage":"Rate exceeded"}]}"#,
    );

    fn entries() -> Vec<PutEntry> {
        ["a", "b"]
            .map(|key| PutEntry::new(key.into(), None, Bytes::from_static(b"data")))
            .to_vec()
    }

    #[tokio::test(start_paused = true)]
    async fn one_attempt_per_call_through_the_clients_own_http_client() {
        let stream = StreamId::from("orders");
        // The client as given retries a 500 (the SDK's standard mode)...
        let http = Scripted::new([FAILURE, FAILURE, STORED]);
        let results = PutRecords::put_records(&SdkKinesis::new(&http.client()), &stream, &[]).await;
        assert!(results.is_err(), "one attempt: the 500");
        assert_eq!(http.requests().len(), 1, "no retry by the SDK");
        let given = http.client();
        given
            .put_records()
            .stream_name("orders")
            .set_records(Some(Vec::new()))
            .send()
            .await
            .expect("the given client retries the 500");
        assert_eq!(
            http.requests().len(),
            3,
            "the given client keeps its retries"
        );

        // ... SdkKinesis makes one attempt, over the same HTTP client.
        let http = Scripted::new([FAILURE, STORED]);
        let kinesis = SdkKinesis::new(&http.client());
        let error = kinesis.put_records(&stream, &entries()).await.unwrap_err();
        assert_eq!(error.class(), ErrorClass::Transient);
        assert_eq!(error.code(), "InternalFailure");
        assert_eq!(http.requests().len(), 1);
        let results = kinesis.put_records(&stream, &entries()).await.unwrap();
        assert_eq!(
            results,
            [
                PutResult::Stored {
                    shard_id: "shardId-000000000001".into(),
                    sequence_number: "49".into(),
                },
                PutResult::Failed {
                    code: "ProvisionedThroughputExceededException".into(),
                    message: "Rate exceeded".into(),
                },
            ]
        );
        let requests = http.requests();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[1].0, "Kinesis_20131202.PutRecords");
        assert!(
            requests[1].1.contains(r#""StreamName":"orders""#),
            "{}",
            requests[1].1
        );
    }

    #[tokio::test]
    async fn a_listing_follows_every_page_with_its_filter_on_the_first() {
        let range = r#""HashKeyRange":{"StartingHashKey":"0","EndingHashKey":"340282366920938463463374607431768211455"}"#;
        let first: &'static str = Box::leak(
            format!(
                r#"{{"Shards":[{{"ShardId":"shardId-000000000000",{range},"SequenceNumberRange":{{"StartingSequenceNumber":"1"}}}}],"NextToken":"page-2"}}"#
            )
            .into_boxed_str(),
        );
        let second: &'static str = Box::leak(
            format!(
                r#"{{"Shards":[{{"ShardId":"shardId-000000000001","ParentShardId":"shardId-000000000000",{range},"SequenceNumberRange":{{"StartingSequenceNumber":"2","EndingSequenceNumber":"3"}}}}]}}"#
            )
            .into_boxed_str(),
        );
        let http = Scripted::new([(200, first), (200, second)]);
        let kinesis = SdkKinesis::new(&http.client());
        let shards = kinesis
            .list_shards(&StreamId::from("orders"), &ShardListing::Open)
            .await
            .unwrap();
        assert_eq!(shards.len(), 2);
        assert!(shards[0].open);
        assert!(!shards[1].open, "an ending sequence number: closed");
        assert_eq!(
            shards[1].parent_shard_id.as_deref(),
            Some("shardId-000000000000")
        );
        let requests = http.requests();
        assert_eq!(requests.len(), 2);
        assert!(requests[0].1.contains("AT_LATEST"), "{}", requests[0].1);
        assert!(
            requests[1].1.contains(r#""NextToken":"page-2""#),
            "{}",
            requests[1].1
        );
        assert!(!requests[1].1.contains("StreamName"), "{}", requests[1].1);
    }

    #[tokio::test]
    async fn consumers_are_registered_and_described() {
        let http = Scripted::new([
            (
                200,
                r#"{"Consumer":{"ConsumerName":"app","ConsumerARN":"arn:c","ConsumerStatus":"CREATING","ConsumerCreationTimestamp":0}}"#,
            ),
            (
                400,
                r#"{"__type":"ResourceInUseException","message":"Consumer app exists"}"#,
            ),
            (
                200,
                r#"{"ConsumerDescription":{"ConsumerName":"app","ConsumerARN":"arn:c","ConsumerStatus":"ACTIVE","ConsumerCreationTimestamp":0,"StreamARN":"arn:s"}}"#,
            ),
        ]);
        let kinesis = SdkKinesis::new(&http.client());
        let registered = kinesis.register_consumer("arn:s", "app").await.unwrap();
        assert_eq!(
            registered,
            ConsumerInfo {
                consumer_arn: "arn:c".into(),
                status: crate::ConsumerStatus::Creating,
            }
        );
        let again = kinesis.register_consumer("arn:s", "app").await.unwrap_err();
        assert_eq!(
            again.class(),
            ErrorClass::Transient,
            "another worker registers it"
        );
        assert_eq!(again.operation(), "RegisterStreamConsumer");
        let described = kinesis.describe_consumer("arn:s", "app").await.unwrap();
        assert_eq!(described.status, crate::ConsumerStatus::Active);
        let requests = http.requests();
        assert_eq!(requests.len(), 3);
        assert_eq!(requests[2].0, "Kinesis_20131202.DescribeStreamConsumer");
        assert!(
            requests[2].1.contains(r#""ConsumerName":"app""#),
            "{}",
            requests[2].1
        );
    }

    #[tokio::test]
    async fn reads_send_the_arn_they_were_given() {
        let arn = StreamId::from("arn:aws:kinesis:us-east-1:123456789012:stream/orders");
        let http = Scripted::new([
            (200, r#"{"ShardIterator":"it-1"}"#),
            (
                200,
                r#"{"Records":[],"NextShardIterator":"it-2","MillisBehindLatest":0}"#,
            ),
            (
                200,
                r#"{"StreamDescriptionSummary":{"StreamName":"orders","StreamARN":"arn:aws:kinesis:us-east-1:123456789012:stream/orders","StreamStatus":"ACTIVE","RetentionPeriodHours":24,"StreamCreationTimestamp":0,"EnhancedMonitoring":[],"OpenShardCount":2}}"#,
            ),
        ]);
        let kinesis = SdkKinesis::new(&http.client());
        let iterator = kinesis
            .get_shard_iterator(
                &arn,
                "shardId-000000000000",
                &ShardIteratorStart::AtSequence("7".into()),
            )
            .await
            .unwrap();
        assert_eq!(iterator, "it-1");
        let page = kinesis.get_records(&arn, &iterator, 100).await.unwrap();
        assert_eq!(page.next_iterator.as_deref(), Some("it-2"));
        let name = StreamId::from("orders");
        assert_eq!(kinesis.stream_arn(&name).await.unwrap(), arn.as_str());
        assert_eq!(kinesis.stream_arn(&arn).await.unwrap(), arn.as_str());
        let requests = http.requests();
        assert_eq!(requests.len(), 3, "an ARN needs no DescribeStreamSummary");
        assert!(
            requests[0].1.contains(r#""StreamARN""#),
            "{}",
            requests[0].1
        );
        assert!(
            requests[0].1.contains("AT_SEQUENCE_NUMBER"),
            "{}",
            requests[0].1
        );
        assert!(
            requests[1].1.contains(r#""StreamARN""#),
            "{}",
            requests[1].1
        );
        assert!(
            requests[1].1.contains(r#""Limit":100"#),
            "{}",
            requests[1].1
        );
        assert_eq!(requests[2].0, "Kinesis_20131202.DescribeStreamSummary");
    }

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
