//! [`Bounded`]: any implementation of the trait family with each call bounded in time, by
//! operation group ([`Timeouts`]).

use std::time::Duration;

use super::operation::{
    DESCRIBE_STREAM_CONSUMER, DESCRIBE_STREAM_SUMMARY, GET_RECORDS, GET_SHARD_ITERATOR,
    LIST_SHARDS, PUT_RECORDS, REGISTER_STREAM_CONSUMER, SUBSCRIBE_TO_SHARD,
};
use super::types::{
    ConsumerInfo, PutEntry, PutResult, RecordsPage, Shard, ShardIteratorStart, ShardListing,
    StreamSummary, SubscribeStart,
};
use super::{
    BoxFuture, EventStream, ListShards, PutRecords, ReadShard, StreamConsumers, SubscribeToShard,
};
use crate::error::KinesisError;
use crate::stream::StreamId;

/// How long each group of calls may take; `None` (the default for every group): not bounded
/// here, the caller bounds the call.
///
/// ```
/// use std::time::Duration;
/// use kinesis_common::Timeouts;
/// let mut timeouts = Timeouts::uniform(Duration::from_secs(30));
/// timeouts.subscribe = Some(Duration::from_secs(35));
/// assert_eq!(Timeouts::default().put_records, None);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timeouts {
    /// ListShards: the whole listing, every page.
    pub list_shards: Option<Duration>,
    /// PutRecords.
    pub put_records: Option<Duration>,
    /// GetShardIterator.
    pub get_shard_iterator: Option<Duration>,
    /// GetRecords.
    pub get_records: Option<Duration>,
    /// The control calls of enhanced fan-out: DescribeStreamSummary, RegisterStreamConsumer,
    /// DescribeStreamConsumer.
    pub control: Option<Duration>,
    /// SubscribeToShard, until the service accepted the subscription (its events are never
    /// bounded here: see [`EventStream::next_event`]).
    pub subscribe: Option<Duration>,
}

impl Timeouts {
    /// No call bounded (the same as [`Default`]).
    pub fn none() -> Self {
        Self::default()
    }

    /// Every group bounded by `limit`.
    pub fn uniform(limit: Duration) -> Self {
        Self {
            list_shards: Some(limit),
            put_records: Some(limit),
            get_shard_iterator: Some(limit),
            get_records: Some(limit),
            control: Some(limit),
            subscribe: Some(limit),
        }
    }
}

/// An implementation of the trait family with each call bounded by its group's [`Timeouts`]: a
/// call that takes longer fails with [`KinesisError::timeout`] (class `Transient`, code
/// `Timeout`) and is dropped.
///
/// Why a decorator rather than timeouts inside [`SdkKinesis`](crate::SdkKinesis): the bound is
/// then one piece of code for every implementation, so a test wraps a fake that hangs and sees
/// the very timeout production uses; and the SDK implementation stays "one attempt, as long as
/// it takes", which is what a caller that bounds each call itself needs (the producer bounds
/// PutRecords by an adaptive timeout and its records' TTL, and ListShards by
/// `list_shards_timeout`: it uses `SdkKinesis` unwrapped). A group set to `None` costs nothing
/// (the inner future is returned as it is).
///
/// ```
/// # async fn demo(client: &aws_sdk_kinesis::Client) {
/// use std::time::Duration;
/// use kinesis_common::{ConsumerApi, SdkKinesis, Timeouts};
/// let kinesis = SdkKinesis::new(client).with_timeouts(Timeouts::uniform(Duration::from_secs(30)));
/// let _api: std::sync::Arc<dyn ConsumerApi> = std::sync::Arc::new(kinesis);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Bounded<A> {
    inner: A,
    timeouts: Timeouts,
}

impl<A> Bounded<A> {
    /// `inner` with its calls bounded by `timeouts`.
    pub fn new(inner: A, timeouts: Timeouts) -> Self {
        Self { inner, timeouts }
    }

    /// The timeouts applied.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// The implementation inside.
    pub fn inner(&self) -> &A {
        &self.inner
    }
}

/// `call`, failing with [`KinesisError::timeout`] after `limit`; `call` itself when `None`.
fn bounded<'a, T: 'a>(
    operation: &'static str,
    limit: Option<Duration>,
    call: BoxFuture<'a, Result<T, KinesisError>>,
) -> BoxFuture<'a, Result<T, KinesisError>> {
    match limit {
        None => call,
        Some(limit) => Box::pin(async move {
            tokio::time::timeout(limit, call)
                .await
                .unwrap_or_else(|_| Err(KinesisError::timeout(operation, limit)))
        }),
    }
}

impl_calls! {
    impl[A: ListShards] ListShards for Bounded<A> {
        fn list_shards(&self, stream: &'a StreamId, listing: &'a ShardListing) -> Vec<Shard> {
            let call = self.inner.list_shards(stream, listing);
            bounded(LIST_SHARDS, self.timeouts.list_shards, call)
        }
    }

    impl[A: PutRecords] PutRecords for Bounded<A> {
        fn put_records(&self, stream: &'a StreamId, entries: &'a [PutEntry]) -> Vec<PutResult> {
            let call = self.inner.put_records(stream, entries);
            bounded(PUT_RECORDS, self.timeouts.put_records, call)
        }
    }

    impl[A: ReadShard] ReadShard for Bounded<A> {
        fn get_shard_iterator(
            &self,
            stream: &'a StreamId,
            shard_id: &'a str,
            start: &'a ShardIteratorStart,
        ) -> String {
            let call = self.inner.get_shard_iterator(stream, shard_id, start);
            bounded(GET_SHARD_ITERATOR, self.timeouts.get_shard_iterator, call)
        }
        fn get_records(&self, stream: &'a StreamId, iterator: &'a str, limit: i32) -> RecordsPage {
            let call = self.inner.get_records(stream, iterator, limit);
            bounded(GET_RECORDS, self.timeouts.get_records, call)
        }
    }

    // `stream_arn` is not forwarded: the trait's default goes through the bounded
    // `describe_stream_summary`.
    impl[A: StreamConsumers] StreamConsumers for Bounded<A> {
        fn describe_stream_summary(&self, stream: &'a StreamId) -> StreamSummary {
            let call = self.inner.describe_stream_summary(stream);
            bounded(DESCRIBE_STREAM_SUMMARY, self.timeouts.control, call)
        }
        fn register_consumer(&self, stream_arn: &'a str, consumer_name: &'a str) -> ConsumerInfo {
            let call = self.inner.register_consumer(stream_arn, consumer_name);
            bounded(REGISTER_STREAM_CONSUMER, self.timeouts.control, call)
        }
        fn describe_consumer(&self, stream_arn: &'a str, consumer_name: &'a str) -> ConsumerInfo {
            let call = self.inner.describe_consumer(stream_arn, consumer_name);
            bounded(DESCRIBE_STREAM_CONSUMER, self.timeouts.control, call)
        }
    }

    impl[A: SubscribeToShard] SubscribeToShard for Bounded<A> {
        fn subscribe(
            &self,
            consumer_arn: &'a str,
            shard_id: &'a str,
            start: &'a SubscribeStart,
        ) -> Box<dyn EventStream> {
            let call = self.inner.subscribe(consumer_arn, shard_id, start);
            bounded(SUBSCRIBE_TO_SHARD, self.timeouts.subscribe, call)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorClass;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Answers every call after `delay`, counting calls.
    #[derive(Debug, Default)]
    struct Slow {
        delay: Duration,
        calls: AtomicUsize,
    }

    impl Slow {
        fn answer<'a, T: Send + 'a>(&'a self, value: T) -> BoxFuture<'a, Result<T, KinesisError>> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            Box::pin(async move {
                tokio::time::sleep(self.delay).await;
                Ok(value)
            })
        }
    }

    impl ListShards for Slow {
        fn list_shards<'a>(
            &'a self,
            _: &'a StreamId,
            _: &'a ShardListing,
        ) -> BoxFuture<'a, Result<Vec<Shard>, KinesisError>> {
            self.answer(Vec::new())
        }
    }

    impl PutRecords for Slow {
        fn put_records<'a>(
            &'a self,
            _: &'a StreamId,
            entries: &'a [PutEntry],
        ) -> BoxFuture<'a, Result<Vec<PutResult>, KinesisError>> {
            self.answer(vec![
                PutResult::Failed {
                    code: "x".into(),
                    message: String::new()
                };
                entries.len()
            ])
        }
    }

    impl ReadShard for Slow {
        fn get_shard_iterator<'a>(
            &'a self,
            _: &'a StreamId,
            shard_id: &'a str,
            _: &'a ShardIteratorStart,
        ) -> BoxFuture<'a, Result<String, KinesisError>> {
            self.answer(shard_id.to_owned())
        }

        fn get_records<'a>(
            &'a self,
            _: &'a StreamId,
            _: &'a str,
            _: i32,
        ) -> BoxFuture<'a, Result<RecordsPage, KinesisError>> {
            self.answer(RecordsPage::default())
        }
    }

    impl StreamConsumers for Slow {
        fn describe_stream_summary<'a>(
            &'a self,
            stream: &'a StreamId,
        ) -> BoxFuture<'a, Result<StreamSummary, KinesisError>> {
            self.answer(StreamSummary::new(
                stream.as_str(),
                "arn:aws:kinesis:::stream/s",
            ))
        }

        fn register_consumer<'a>(
            &'a self,
            _: &'a str,
            name: &'a str,
        ) -> BoxFuture<'a, Result<ConsumerInfo, KinesisError>> {
            self.answer(ConsumerInfo {
                consumer_arn: name.to_owned(),
                status: super::super::ConsumerStatus::Creating,
            })
        }

        fn describe_consumer<'a>(
            &'a self,
            arn: &'a str,
            name: &'a str,
        ) -> BoxFuture<'a, Result<ConsumerInfo, KinesisError>> {
            self.register_consumer(arn, name)
        }
    }

    struct NoEvents;

    impl EventStream for NoEvents {
        fn next_event(
            &mut self,
        ) -> BoxFuture<'_, Result<Option<super::super::ShardEvent>, KinesisError>> {
            Box::pin(async { Ok(None) })
        }
    }

    impl SubscribeToShard for Slow {
        fn subscribe<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: &'a SubscribeStart,
        ) -> BoxFuture<'a, Result<Box<dyn EventStream>, KinesisError>> {
            let events: Box<dyn EventStream> = Box::new(NoEvents);
            self.answer(events)
        }
    }

    fn slow(delay: Duration) -> Slow {
        Slow {
            delay,
            calls: AtomicUsize::new(0),
        }
    }

    fn timed_out<T: std::fmt::Debug>(result: Result<T, KinesisError>, operation: &str) {
        let error = result.expect_err("bounded");
        assert_eq!(error.operation(), operation);
        assert_eq!(error.class(), ErrorClass::Transient);
        assert_eq!(error.code(), "Timeout");
    }

    #[tokio::test(start_paused = true)]
    async fn every_group_is_bounded_by_its_own_timeout() {
        let stream = StreamId::from("s");
        let second = Duration::from_secs(1);
        let api = Bounded::new(slow(Duration::from_secs(10)), Timeouts::uniform(second));
        let start = tokio::time::Instant::now();
        timed_out(
            api.list_shards(&stream, &ShardListing::All).await,
            "ListShards",
        );
        timed_out(api.put_records(&stream, &[]).await, "PutRecords");
        timed_out(
            api.get_shard_iterator(&stream, "shard", &ShardIteratorStart::Latest)
                .await,
            "GetShardIterator",
        );
        timed_out(api.get_records(&stream, "it", 10).await, "GetRecords");
        timed_out(
            api.describe_stream_summary(&stream).await,
            "DescribeStreamSummary",
        );
        timed_out(api.stream_arn(&stream).await, "DescribeStreamSummary");
        timed_out(
            api.register_consumer("arn", "c").await,
            "RegisterStreamConsumer",
        );
        timed_out(
            api.describe_consumer("arn", "c").await,
            "DescribeStreamConsumer",
        );
        timed_out(
            api.subscribe("arn", "shard", &SubscribeStart::Latest)
                .await
                .map(|_| ()),
            "SubscribeToShard",
        );
        assert_eq!(start.elapsed(), second * 9);
        assert_eq!(api.inner().calls.load(Ordering::Relaxed), 9);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unset_group_is_left_to_the_caller() {
        let stream = StreamId::from("s");
        let mut timeouts = Timeouts::none();
        timeouts.get_records = Some(Duration::from_secs(1));
        let api = Arc::new(Bounded::new(slow(Duration::from_secs(10)), timeouts));
        let start = tokio::time::Instant::now();
        let page = api.get_records(&stream, "it", 10).await;
        timed_out(page, "GetRecords");
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        // PutRecords is not bounded: it answers after the inner delay.
        let results = api.put_records(&stream, &[]).await.unwrap();
        assert!(results.is_empty());
        assert_eq!(start.elapsed(), Duration::from_secs(11));
        // An ARN needs no call at all.
        let arn = StreamId::from("arn:aws:kinesis:us-east-1:1:stream/s");
        assert_eq!(api.stream_arn(&arn).await.unwrap(), arn.as_str());
        assert_eq!(api.inner().calls.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_within_its_bound_answers() {
        let api = Bounded::new(
            slow(Duration::from_millis(500)),
            Timeouts::uniform(Duration::from_secs(1)),
        );
        let arn = api.stream_arn(&StreamId::from("s")).await.unwrap();
        assert_eq!(arn, "arn:aws:kinesis:::stream/s");
        let consumer: Arc<dyn super::super::ConsumerApi> = Arc::new(api);
        let mut events = consumer
            .subscribe("arn", "shard", &SubscribeStart::TrimHorizon)
            .await
            .unwrap();
        assert_eq!(events.next_event().await.unwrap(), None);
    }
}
