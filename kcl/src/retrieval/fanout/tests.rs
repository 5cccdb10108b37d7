//! Unit tests of enhanced fan-out over an in-memory fake (paused tokio time): every failure
//! path the emulator cannot produce, and a property test over random fault sequences.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aggregation_proto::{HashRange, ReceivedRecord};
use kinesis_common::{
    Bounded, BoxFuture, ConsumerInfo, ConsumerStatus, EventStream, KinesisError, ListShards,
    ReadShard, RecordsPage, Shard as ShardSummary, ShardEvent, ShardIteratorStart, ShardListing,
    StreamConsumers, StreamSummary, SubscribeStart, SubscribeToShard, Timeouts,
};
use proptest::prelude::*;
use tokio::time::Instant;
use tracing::Span;

use super::config::FanOutConfig;
use super::registration::{RegistrationError, register};
use super::source::FanOutReader;
use crate::retrieval::compare_sequence_numbers;
use crate::retrieval::error::{Class, Operation};
use crate::retrieval::tests::{
    aggregate, plain, seq, standard_delivery, standard_records, summary,
};
use crate::retrieval::{ChildShard, RetrievalError, ShardBatch, StartingPosition, StreamId};

/// A delivered user record: sequence number, sub-sequence number, data.
type Delivered = (String, Option<u64>, String);

/// How one subscription of the fake goes.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    /// `Some(class, code)`: SubscribeToShard itself fails.
    refuse: Option<(Class, &'static str)>,
    /// Events delivered before the subscription ends (`None`: until the shard's end).
    events: Option<usize>,
    /// How it ends after those events.
    end: End,
    /// The subscription starts this many records before the requested position (a service
    /// that sends some again): the source must not deliver them twice.
    overlap: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    /// The service ends it normally (every 5 minutes).
    Ended,
    /// The connection drops.
    Dropped,
    /// No event ever comes again: the read timeout must fire.
    Stalled,
}

impl Plan {
    fn healthy() -> Self {
        Self {
            refuse: None,
            events: None,
            end: End::Ended,
            overlap: 0,
        }
    }
    fn refused(class: Class, code: &'static str) -> Self {
        Self {
            refuse: Some((class, code)),
            ..Self::healthy()
        }
    }
    fn ending(events: usize, end: End) -> Self {
        Self {
            events: Some(events),
            end,
            ..Self::healthy()
        }
    }
}

#[derive(Debug, Default)]
struct Shard {
    records: Vec<ReceivedRecord>,
    closed: bool,
    /// A closed shard whose subscriptions never say so (kinesis-mock 0.6.2).
    silent_end: bool,
    children: Vec<ChildShard>,
    listed: Vec<ShardSummary>,
    /// Records per event.
    per_event: usize,
    /// Plans of the next subscriptions; healthy once empty.
    plans: VecDeque<Plan>,
    subscribes: Vec<(Instant, SubscribeStart)>,
    /// Events handed out (across subscriptions).
    events_pulled: usize,
    open_subscriptions: usize,
    list_shards_calls: usize,
    /// Registration: the consumer's states, one per DescribeStreamConsumer call; `None`
    /// means not found. The last one stays.
    consumer_states: VecDeque<Option<ConsumerStatus>>,
    register_calls: usize,
    register_error: Option<(Class, &'static str)>,
}

#[derive(Debug, Clone, Default)]
struct Fake(Arc<Mutex<Shard>>);

impl Fake {
    fn with_records(records: Vec<ReceivedRecord>) -> Self {
        let fake = Self::default();
        fake.state().records = records;
        fake.state().per_event = 2;
        fake
    }
    fn state(&self) -> MutexGuard<'_, Shard> {
        self.0.lock().unwrap()
    }
    fn plan(&self, plans: impl IntoIterator<Item = Plan>) {
        self.state().plans.extend(plans);
    }
    fn close(&self, children: Vec<ChildShard>) {
        let mut state = self.state();
        state.closed = true;
        state.children = children;
    }
    fn starts(&self) -> Vec<SubscribeStart> {
        self.state()
            .subscribes
            .iter()
            .map(|(_, start)| start.clone())
            .collect()
    }
}

fn call_error(operation: Operation, class: Class, code: &'static str) -> KinesisError {
    operation.error(class, code, code)
}

/// The index of the first record a subscription at `start` reads.
fn start_index(records: &[ReceivedRecord], start: &SubscribeStart) -> usize {
    let position = |keep: &dyn Fn(&str) -> bool| {
        records
            .iter()
            .position(|r| keep(r.sequence_number.as_deref().unwrap_or("0")))
            .unwrap_or(records.len())
    };
    match start {
        SubscribeStart::TrimHorizon => 0,
        SubscribeStart::Latest => records.len(),
        SubscribeStart::AtTimestamp(at) => records
            .iter()
            .position(|r| r.approximate_arrival_timestamp.is_some_and(|t| t >= *at))
            .unwrap_or(records.len()),
        SubscribeStart::AtSequence(s) => position(&|seq| compare_sequence_numbers(seq, s).is_ge()),
        SubscribeStart::AfterSequence(s) => {
            position(&|seq| compare_sequence_numbers(seq, s).is_gt())
        }
    }
}

impl StreamConsumers for Fake {
    fn describe_stream_summary<'a>(
        &'a self,
        stream: &'a StreamId,
    ) -> BoxFuture<'a, Result<StreamSummary, KinesisError>> {
        Box::pin(async move {
            Ok(StreamSummary::new(
                stream.as_str(),
                format!("arn:aws:kinesis:us-east-1:1:stream/{}", stream.as_str()),
            ))
        })
    }

    fn stream_arn<'a>(
        &'a self,
        stream: &'a StreamId,
    ) -> BoxFuture<'a, Result<String, KinesisError>> {
        Box::pin(async move {
            Ok(format!(
                "arn:aws:kinesis:us-east-1:1:stream/{}",
                stream.as_str()
            ))
        })
    }

    fn register_consumer<'a>(
        &'a self,
        _stream_arn: &'a str,
        consumer_name: &'a str,
    ) -> BoxFuture<'a, Result<ConsumerInfo, KinesisError>> {
        Box::pin(async move {
            let mut state = self.state();
            state.register_calls += 1;
            if let Some((class, code)) = state.register_error.take() {
                return Err(call_error(Operation::RegisterStreamConsumer, class, code));
            }
            state.consumer_states =
                VecDeque::from([Some(ConsumerStatus::Creating), Some(ConsumerStatus::Active)]);
            Ok(ConsumerInfo {
                consumer_arn: format!("arn:consumer/{consumer_name}"),
                status: ConsumerStatus::Creating,
            })
        })
    }

    fn describe_consumer<'a>(
        &'a self,
        _stream_arn: &'a str,
        consumer_name: &'a str,
    ) -> BoxFuture<'a, Result<ConsumerInfo, KinesisError>> {
        Box::pin(async move {
            let mut state = self.state();
            let current = if state.consumer_states.len() > 1 {
                state.consumer_states.pop_front().flatten()
            } else {
                state.consumer_states.front().copied().flatten()
            };
            match current {
                Some(status) => Ok(ConsumerInfo {
                    consumer_arn: format!("arn:consumer/{consumer_name}"),
                    status,
                }),
                None => Err(call_error(
                    Operation::DescribeStreamConsumer,
                    Class::NotFound,
                    "ResourceNotFoundException",
                )),
            }
        })
    }
}

impl SubscribeToShard for Fake {
    fn subscribe<'a>(
        &'a self,
        _consumer_arn: &'a str,
        _shard_id: &'a str,
        start: &'a SubscribeStart,
    ) -> BoxFuture<'a, Result<Box<dyn EventStream>, KinesisError>> {
        Box::pin(async move {
            let mut state = self.state();
            state.subscribes.push((Instant::now(), start.clone()));
            let plan = state.plans.pop_front().unwrap_or_else(Plan::healthy);
            if let Some((class, code)) = plan.refuse {
                return Err(call_error(Operation::SubscribeToShard, class, code));
            }
            let at = start_index(&state.records, start).saturating_sub(plan.overlap);
            let continuation = match at {
                0 => seq(0),
                n => state.records[n - 1]
                    .sequence_number
                    .as_deref()
                    .unwrap_or("0")
                    .to_owned(),
            };
            state.open_subscriptions += 1;
            let events: Box<dyn EventStream> = Box::new(FakeEvents {
                fake: self.clone(),
                at,
                left: plan.events,
                end: plan.end,
                continuation,
                closed: false,
            });
            Ok(events)
        })
    }
}

impl ListShards for Fake {
    fn list_shards<'a>(
        &'a self,
        _stream: &'a StreamId,
        _listing: &'a ShardListing,
    ) -> BoxFuture<'a, Result<Vec<ShardSummary>, KinesisError>> {
        Box::pin(async move {
            let mut state = self.state();
            state.list_shards_calls += 1;
            Ok(state.listed.clone())
        })
    }
}

/// Enhanced fan-out never polls: the fake refuses it.
impl ReadShard for Fake {
    fn get_shard_iterator<'a>(
        &'a self,
        _stream: &'a StreamId,
        _shard_id: &'a str,
        _start: &'a ShardIteratorStart,
    ) -> BoxFuture<'a, Result<String, KinesisError>> {
        Box::pin(async {
            Err(call_error(
                Operation::GetShardIterator,
                Class::Unexpected,
                "NotPolled",
            ))
        })
    }

    fn get_records<'a>(
        &'a self,
        _stream: &'a StreamId,
        _iterator: &'a str,
        _limit: i32,
    ) -> BoxFuture<'a, Result<RecordsPage, KinesisError>> {
        Box::pin(async {
            Err(call_error(
                Operation::GetRecords,
                Class::Unexpected,
                "NotPolled",
            ))
        })
    }
}

struct FakeEvents {
    fake: Fake,
    at: usize,
    left: Option<usize>,
    end: End,
    continuation: String,
    closed: bool,
}

impl Drop for FakeEvents {
    fn drop(&mut self) {
        self.fake.state().open_subscriptions -= 1;
    }
}

impl EventStream for FakeEvents {
    fn next_event(&mut self) -> BoxFuture<'_, Result<Option<ShardEvent>, KinesisError>> {
        Box::pin(async move {
            if self.closed || self.left == Some(0) {
                return match self.end {
                    End::Ended => Ok(None),
                    End::Dropped => Err(call_error(
                        Operation::SubscribeToShard,
                        Class::Transient,
                        "StreamInterrupted",
                    )),
                    End::Stalled => std::future::pending().await,
                };
            }
            if let Some(left) = &mut self.left {
                *left -= 1;
            }
            let caught_up = {
                let state = self.fake.state();
                self.at >= state.records.len() && (!state.closed || state.silent_end)
            };
            if caught_up {
                // An idle shard: the service sends an empty event every few seconds.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let mut state = self.fake.state();
            state.events_pulled += 1;
            let end = (self.at + state.per_event.max(1)).min(state.records.len());
            let records: Vec<ReceivedRecord> = state.records[self.at..end].to_vec();
            self.at = end;
            if let Some(last) = records.last() {
                self.continuation = last.sequence_number.as_deref().unwrap_or("0").to_owned();
            }
            let at_end = state.closed && !state.silent_end && self.at >= state.records.len();
            if at_end {
                self.closed = true;
                self.end = End::Ended;
            }
            let behind = i64::try_from(state.records.len() - self.at).unwrap_or(0) * 1_000;
            Ok(Some(ShardEvent {
                records,
                continuation_sequence_number: (!at_end).then(|| self.continuation.clone()),
                millis_behind_latest: Some(behind),
                child_shards: if at_end {
                    state.children.clone()
                } else {
                    Vec::new()
                },
            }))
        })
    }
}

fn config() -> FanOutConfig {
    FanOutConfig::default()
        .read_timeout(Duration::from_secs(5))
        .subscribe_backoff(Duration::from_millis(100), Duration::from_secs(2))
}

fn driver(fake: &Fake, position: StartingPosition, config: FanOutConfig) -> FanOutReader {
    driver_in(fake, None, position, config)
}

fn driver_in(
    fake: &Fake,
    hash_range: Option<HashRange>,
    position: StartingPosition,
    config: FanOutConfig,
) -> FanOutReader {
    let api: Arc<dyn kinesis_common::ConsumerApi> = Arc::new(fake.clone());
    FanOutReader::new(
        api,
        "s".into(),
        "arn:consumer/c".into(),
        "shardId-000000000000".into(),
        hash_range,
        position,
        config,
        Span::none(),
    )
}

fn child(id: &str) -> ChildShard {
    ChildShard {
        shard_id: id.into(),
        parent_shard_ids: vec!["shardId-000000000000".into()],
        hash_range: HashRange::ALL,
    }
}

/// Reads until the shard ends; returns what was delivered and the last batch.
async fn read_to_end(
    driver: &mut FanOutReader,
) -> (Vec<(String, Option<u64>, String)>, ShardBatch) {
    let mut delivered = Vec::new();
    for _ in 0..10_000 {
        let batch = driver.next_batch().await.expect("a batch");
        delivered.extend(summary(&batch));
        if batch.shard_end.is_some() {
            return (delivered, batch);
        }
    }
    panic!("the shard never ended");
}

#[tokio::test(start_paused = true)]
async fn delivers_every_record_once_in_order_and_ends_with_the_children() {
    let fake = Fake::with_records(standard_records());
    fake.close(vec![child("shardId-000000000001")]);
    let mut source = driver(&fake, StartingPosition::TrimHorizon, config());
    let (delivered, last) = read_to_end(&mut source).await;
    assert_eq!(delivered, standard_delivery());
    assert_eq!(last.shard_end, Some(vec![child("shardId-000000000001")]));
    // Every later call repeats the end without subscribing again.
    let again = source.next_batch().await.unwrap();
    assert!(again.is_empty());
    assert_eq!(again.shard_end, Some(vec![child("shardId-000000000001")]));
    assert_eq!(fake.starts(), vec![SubscribeStart::TrimHorizon]);
    assert_eq!(fake.state().list_shards_calls, 0);
    let stats = source.counters.snapshot();
    assert_eq!(stats.records_delivered, 8);
    assert_eq!(stats.subscribe_calls, 1);
}

#[tokio::test(start_paused = true)]
async fn millis_behind_latest_comes_from_the_events() {
    let fake = Fake::with_records(standard_records());
    let mut source = driver(&fake, StartingPosition::TrimHorizon, config());
    let first = source.next_batch().await.unwrap();
    assert_eq!(first.millis_behind_latest, Some(3_000));
}

#[tokio::test(start_paused = true)]
async fn a_subscription_ended_by_the_service_resumes_after_the_continuation_at_once() {
    let fake = Fake::with_records(standard_records());
    fake.close(Vec::new());
    fake.state().listed = vec![ShardSummary {
        shard_id: "shardId-000000000002".into(),
        parent_shard_id: Some("shardId-000000000000".into()),
        adjacent_parent_shard_id: None,
        hash_range: HashRange::ALL,
        open: true,
    }];
    // Every subscription ends after one event (the 5-minute end, compressed).
    fake.plan((0..10).map(|_| Plan::ending(1, End::Ended)));
    let started = Instant::now();
    let mut source = driver(&fake, StartingPosition::TrimHorizon, config());
    let (delivered, last) = read_to_end(&mut source).await;
    assert_eq!(delivered, standard_delivery());
    let starts = fake.starts();
    assert_eq!(starts[0], SubscribeStart::TrimHorizon);
    assert_eq!(starts[1], SubscribeStart::AfterSequence(seq(2)));
    assert_eq!(starts[2], SubscribeStart::AfterSequence(seq(4)));
    // A normal end costs no backoff.
    assert_eq!(Instant::now(), started);
    // No ChildShards in the last event: ListShards found the child.
    assert_eq!(last.shard_end.unwrap()[0].shard_id, "shardId-000000000002");
    assert_eq!(fake.state().list_shards_calls, 1);
    assert!(source.counters.snapshot().subscriptions_ended >= 2);
}

#[tokio::test(start_paused = true)]
async fn a_closed_shard_whose_subscription_never_ends_is_ended_by_the_listing_check() {
    let fake = Fake::with_records(standard_records());
    {
        let mut state = fake.state();
        state.silent_end = true;
        state.closed = true;
    }
    // Not closed yet when the check first runs: nothing ends.
    let config = config().closed_shard_check(Some(Duration::from_secs(10)));
    let mut source = driver(&fake, StartingPosition::TrimHorizon, config);
    let mut delivered = Vec::new();
    for _ in 0..20 {
        delivered.extend(summary(&source.next_batch().await.unwrap()));
    }
    assert_eq!(delivered, standard_delivery());
    assert!(fake.state().list_shards_calls >= 1);
    assert_eq!(fake.starts().len(), 1, "an open shard is not resubscribed");
    // Now the listing shows a child: the source resubscribes and ends at the caught-up event.
    fake.state().listed = vec![ShardSummary {
        shard_id: "shardId-000000000001".into(),
        parent_shard_id: Some("shardId-000000000000".into()),
        adjacent_parent_shard_id: None,
        hash_range: HashRange::ALL,
        open: true,
    }];
    let (more, last) = read_to_end(&mut source).await;
    assert!(more.is_empty(), "nothing delivered twice: {more:?}");
    assert_eq!(last.shard_end.unwrap()[0].shard_id, "shardId-000000000001");
    assert_eq!(fake.starts().len(), 2);
    assert_eq!(fake.starts()[1], SubscribeStart::AfterSequence(seq(5)));
}

#[tokio::test(start_paused = true)]
async fn resource_in_use_and_throttling_back_off_then_resume() {
    let fake = Fake::with_records(standard_records());
    fake.close(Vec::new());
    fake.plan([
        Plan::refused(Class::Transient, "ResourceInUseException"),
        Plan::refused(Class::Transient, "ResourceInUseException"),
        Plan::refused(Class::Throttled, "LimitExceededException"),
    ]);
    let mut source = driver(&fake, StartingPosition::TrimHorizon, config());
    let (delivered, _) = read_to_end(&mut source).await;
    assert_eq!(delivered, standard_delivery());
    let times: Vec<Instant> = fake.state().subscribes.iter().map(|(t, _)| *t).collect();
    assert_eq!(times.len(), 4);
    // Jittered exponential backoff: from the upper half of 100 ms, 200 ms, 400 ms.
    for (i, pair) in times.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let envelope = Duration::from_millis(100 << i);
        assert!(gap >= envelope / 2 && gap <= envelope, "gap {i}: {gap:?}");
    }
    let stats = source.counters.snapshot();
    assert_eq!((stats.transient_errors, stats.throttled), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn subscriptions_that_end_before_any_event_back_off() {
    let fake = Fake::with_records(standard_records());
    fake.close(Vec::new());
    fake.plan((0..4).map(|_| Plan::ending(0, End::Ended)));
    let started = Instant::now();
    let mut source = driver(&fake, StartingPosition::TrimHorizon, config());
    let (delivered, _) = read_to_end(&mut source).await;
    assert_eq!(delivered, standard_delivery());
    // 4 empty subscriptions, each followed by a backoff: 50-100, 100-200, 200-400, 400-800 ms.
    assert!(Instant::now() - started >= Duration::from_millis(750));
    assert_eq!(source.counters.snapshot().transient_errors, 4);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_connection_mid_stream_resumes_without_loss_or_repeat() {
    let fake = Fake::with_records(standard_records());
    fake.close(Vec::new());
    fake.plan([Plan::ending(1, End::Dropped), Plan::ending(1, End::Dropped)]);
    let mut source = driver(&fake, StartingPosition::TrimHorizon, config());
    let (delivered, _) = read_to_end(&mut source).await;
    assert_eq!(delivered, standard_delivery());
    assert_eq!(
        fake.starts()[1..3],
        [
            SubscribeStart::AfterSequence(seq(2)),
            SubscribeStart::AfterSequence(seq(4))
        ]
    );
    assert_eq!(source.counters.snapshot().transient_errors, 2);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_subscription_times_out_and_resumes() {
    let fake = Fake::with_records(standard_records());
    fake.close(Vec::new());
    fake.plan([Plan::ending(1, End::Stalled)]);
    let started = Instant::now();
    let mut source = driver(&fake, StartingPosition::TrimHorizon, config());
    let (delivered, _) = read_to_end(&mut source).await;
    assert_eq!(delivered, standard_delivery());
    // The read timeout (5 s) passed, then a backoff.
    assert!(Instant::now() - started >= Duration::from_secs(5));
    assert_eq!(fake.starts()[1], SubscribeStart::AfterSequence(seq(2)));
    assert_eq!(
        fake.state().open_subscriptions,
        0,
        "the stalled one was closed"
    );
}

#[tokio::test(start_paused = true)]
async fn records_sent_again_by_a_new_subscription_are_not_delivered_twice() {
    let fake = Fake::with_records(standard_records());
    fake.close(Vec::new());
    fake.plan([
        Plan::ending(1, End::Ended),
        Plan {
            overlap: 2,
            ..Plan::ending(2, End::Dropped)
        },
    ]);
    let mut source = driver(&fake, StartingPosition::TrimHorizon, config());
    let (delivered, _) = read_to_end(&mut source).await;
    assert_eq!(delivered, standard_delivery());
    assert!(source.counters.snapshot().records_skipped >= 4);
}

#[tokio::test(start_paused = true)]
async fn a_checkpoint_inside_an_aggregate_resumes_at_the_next_sub_record() {
    let fake = Fake::with_records(standard_records());
    fake.close(Vec::new());
    let position = StartingPosition::AfterSequence {
        sequence_number: seq(2),
        sub_sequence_number: 1,
    };
    let mut source = driver(&fake, position, config());
    let (delivered, _) = read_to_end(&mut source).await;
    assert_eq!(delivered, standard_delivery()[3..]);
    assert_eq!(fake.starts()[0], SubscribeStart::AtSequence(seq(2)));
}

#[tokio::test(start_paused = true)]
async fn each_sub_record_is_filtered_to_the_hash_range() {
    let low = 1u128 << 100;
    let high = u128::MAX - 5;
    let records = vec![
        aggregate(1, &[("a", "in", Some(low)), ("b", "out", Some(high))]),
        plain(2, "plain"),
    ];
    let fake = Fake::with_records(records);
    fake.close(Vec::new());
    let range = HashRange::new(0, 1u128 << 127).unwrap();
    let mut source = driver_in(&fake, Some(range), StartingPosition::TrimHorizon, config());
    let (delivered, _) = read_to_end(&mut source).await;
    let data: Vec<&str> = delivered.iter().map(|(_, _, d)| d.as_str()).collect();
    assert_eq!(data, ["in", "plain"]);
    assert_eq!(source.counters.snapshot().records_filtered, 1);
}

#[tokio::test(start_paused = true)]
async fn a_slow_processor_pauses_demand_instead_of_buffering() {
    let records: Vec<ReceivedRecord> = (1..=200).map(|n| plain(n, "x")).collect();
    let fake = Fake::with_records(records);
    fake.state().per_event = 1;
    let mut source = driver(&fake, StartingPosition::TrimHorizon, config());
    for consumed in 1..=5 {
        let batch = source.next_batch().await.unwrap();
        assert_eq!(batch.records.len(), 1);
        // A processor that takes a minute per batch: the reader runs ahead by one event only.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(fake.state().events_pulled, consumed + 1);
    }
}

#[tokio::test(start_paused = true)]
async fn fatal_errors_are_returned_and_give_up_after_exhausts() {
    let fake = Fake::with_records(standard_records());
    fake.plan([Plan::refused(Class::NotFound, "ResourceNotFoundException")]);
    let mut source = driver(&fake, StartingPosition::TrimHorizon, config());
    let error = source.next_batch().await.unwrap_err();
    assert!(matches!(
        error,
        RetrievalError::NotFound {
            operation: "SubscribeToShard",
            ..
        }
    ));
    // The source stays usable: the next call subscribes again.
    assert_eq!(source.next_batch().await.unwrap().kinesis_records, 2);

    let fake = Fake::with_records(standard_records());
    fake.plan((0..100).map(|_| Plan::refused(Class::Transient, "ResourceInUseException")));
    let config = config().give_up_after(Some(Duration::from_secs(3)));
    let mut source = driver(&fake, StartingPosition::TrimHorizon, config);
    let error = source.next_batch().await.unwrap_err();
    assert!(
        matches!(error, RetrievalError::RetriesExhausted { .. }),
        "{error:?}"
    );
    assert!(!error.is_fatal());
}

#[tokio::test(start_paused = true)]
async fn invalid_starting_position_is_fatal() {
    let fake = Fake::with_records(standard_records());
    let position = StartingPosition::AfterSequence {
        sequence_number: "SHARD_END".into(),
        sub_sequence_number: 0,
    };
    let mut source = driver(&fake, position, config());
    let error = source.next_batch().await.unwrap_err();
    assert!(matches!(
        error,
        RetrievalError::InvalidStartingPosition { .. }
    ));
    assert!(fake.starts().is_empty());
}

#[tokio::test(start_paused = true)]
async fn latest_is_kept_as_a_timestamp_across_resubscriptions() {
    let fake = Fake::with_records(Vec::new());
    fake.plan([Plan::ending(0, End::Dropped)]);
    let mut source = driver(&fake, StartingPosition::Latest, config());
    let batch = source.next_batch().await.unwrap();
    assert!(batch.is_empty());
    let starts = fake.starts();
    assert_eq!(starts[0], SubscribeStart::Latest);
    assert!(
        matches!(starts[1], SubscribeStart::AtTimestamp(_)),
        "{starts:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_source_closes_the_subscription() {
    let fake = Fake::with_records(standard_records());
    let mut source = driver(&fake, StartingPosition::TrimHorizon, config());
    source.next_batch().await.unwrap();
    assert_eq!(fake.state().open_subscriptions, 1);
    drop(source);
    tokio::task::yield_now().await;
    assert_eq!(fake.state().open_subscriptions, 0);
}

// Registration.

fn registration_config() -> FanOutConfig {
    FanOutConfig::default()
        .registration_poll_interval(Duration::from_millis(100))
        .registration_timeout(Duration::from_secs(10))
}

#[tokio::test(start_paused = true)]
async fn registration_registers_a_missing_consumer_and_waits_for_active() {
    let fake = Fake::default();
    let consumer = register(&fake, &"s".into(), "app", &registration_config())
        .await
        .unwrap();
    assert_eq!(consumer.consumer_arn, "arn:consumer/app");
    assert_eq!(consumer.stream_arn, "arn:aws:kinesis:us-east-1:1:stream/s");
    assert_eq!(fake.state().register_calls, 1);
    // Again: already ACTIVE, nothing registered.
    register(&fake, &"s".into(), "app", &registration_config())
        .await
        .unwrap();
    assert_eq!(fake.state().register_calls, 1);
}

#[tokio::test(start_paused = true)]
async fn registration_waits_out_creating_and_deleting() {
    let fake = Fake::default();
    fake.state().consumer_states = VecDeque::from([
        Some(ConsumerStatus::Deleting),
        Some(ConsumerStatus::Deleting),
        None,
    ]);
    let started = Instant::now();
    register(&fake, &"s".into(), "app", &registration_config())
        .await
        .unwrap();
    assert_eq!(fake.state().register_calls, 1);
    assert!(Instant::now() - started >= Duration::from_millis(300));

    let fake = Fake::default();
    fake.state().consumer_states =
        VecDeque::from([Some(ConsumerStatus::Creating), Some(ConsumerStatus::Active)]);
    register(&fake, &"s".into(), "app", &registration_config())
        .await
        .unwrap();
    assert_eq!(fake.state().register_calls, 0);
}

#[tokio::test(start_paused = true)]
async fn registration_race_resource_in_use_is_not_an_error() {
    let fake = Fake::default();
    fake.state().register_error = Some((Class::Transient, "ResourceInUseException"));
    // Meanwhile another worker registered it: the next describe finds it.
    let other = fake.clone();
    let racer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        other.state().consumer_states = VecDeque::from([Some(ConsumerStatus::Active)]);
    });
    register(&fake, &"s".into(), "app", &registration_config())
        .await
        .unwrap();
    racer.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn registration_fails_typed() {
    let fake = Fake::default();
    fake.state().consumer_states = VecDeque::from([Some(ConsumerStatus::Deleting)]);
    let error = register(&fake, &"s".into(), "app", &registration_config())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RegistrationError::NotActive { last_problem, .. } if last_problem == "DELETING"),
        "{error}"
    );
    let fake = Fake::default();
    fake.state().register_error = Some((Class::InvalidRequest, "InvalidArgumentException"));
    let error = register(&fake, &"s".into(), "bad name!", &registration_config())
        .await
        .unwrap_err();
    assert!(matches!(error, RegistrationError::Failed { .. }), "{error}");
}

/// Registration calls that never answer (a connection the service stopped reading).
#[derive(Debug)]
struct Hung;

impl StreamConsumers for Hung {
    fn describe_stream_summary<'a>(
        &'a self,
        _stream: &'a StreamId,
    ) -> BoxFuture<'a, Result<StreamSummary, KinesisError>> {
        Box::pin(std::future::pending())
    }

    fn register_consumer<'a>(
        &'a self,
        _stream_arn: &'a str,
        _consumer_name: &'a str,
    ) -> BoxFuture<'a, Result<ConsumerInfo, KinesisError>> {
        Box::pin(std::future::pending())
    }

    fn describe_consumer<'a>(
        &'a self,
        _stream_arn: &'a str,
        _consumer_name: &'a str,
    ) -> BoxFuture<'a, Result<ConsumerInfo, KinesisError>> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test(start_paused = true)]
async fn a_hung_registration_call_ends_within_the_registration_timeout() {
    let config = registration_config();
    let started = Instant::now();
    let stream = StreamId::from("s");
    let registration = register(&Hung, &stream, "app", &config);
    let error = tokio::time::timeout(config.registration_timeout * 2, registration)
        .await
        .expect("registration outlived its timeout")
        .unwrap_err();
    assert!(
        matches!(&error, RegistrationError::NotActive { .. }),
        "{error}"
    );
    assert!(started.elapsed() <= config.registration_timeout);
}

#[tokio::test(start_paused = true)]
async fn a_hung_registration_call_is_abandoned_at_the_control_bound_and_retried() {
    let config = registration_config();
    let mut timeouts = Timeouts::none();
    timeouts.control = Some(Duration::from_secs(1));
    let api = Bounded::new(Hung, timeouts);
    let error = register(&api, &"s".into(), "app", &config)
        .await
        .unwrap_err();
    // Each attempt ended after 1 s as a retryable timeout, until the registration timeout.
    assert!(
        matches!(&error, RegistrationError::NotActive { last_problem, .. } if last_problem == "Timeout"),
        "{error}"
    );
}

/// The fake's registration calls, each answering after `0`.
#[derive(Debug)]
struct Slow(Duration, Fake);

impl StreamConsumers for Slow {
    fn describe_stream_summary<'a>(
        &'a self,
        stream: &'a StreamId,
    ) -> BoxFuture<'a, Result<StreamSummary, KinesisError>> {
        Box::pin(async move {
            tokio::time::sleep(self.0).await;
            self.1.describe_stream_summary(stream).await
        })
    }

    fn register_consumer<'a>(
        &'a self,
        stream_arn: &'a str,
        consumer_name: &'a str,
    ) -> BoxFuture<'a, Result<ConsumerInfo, KinesisError>> {
        Box::pin(async move {
            tokio::time::sleep(self.0).await;
            self.1.register_consumer(stream_arn, consumer_name).await
        })
    }

    fn describe_consumer<'a>(
        &'a self,
        stream_arn: &'a str,
        consumer_name: &'a str,
    ) -> BoxFuture<'a, Result<ConsumerInfo, KinesisError>> {
        Box::pin(async move {
            tokio::time::sleep(self.0).await;
            self.1.describe_consumer(stream_arn, consumer_name).await
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_registration_cut_at_its_deadline_names_the_last_state_seen() {
    let fake = Fake::default();
    fake.state().consumer_states = VecDeque::from([Some(ConsumerStatus::Deleting)]);
    let config = registration_config();
    let started = Instant::now();
    // Every call takes 300 ms: the call in flight at the deadline is cut, and the error
    // names the state the calls before it saw.
    let error = register(
        &Slow(Duration::from_millis(300), fake),
        &"s".into(),
        "app",
        &config,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&error, RegistrationError::NotActive { last_problem, .. } if last_problem == "DELETING"),
        "{error}"
    );
    assert!(started.elapsed() <= config.registration_timeout);
}

// Every record once, in order, whatever the faults.

fn plan_strategy() -> impl Strategy<Value = Plan> {
    let refuse = prop_oneof![
        6 => Just(None),
        1 => Just(Some((Class::Transient, "ResourceInUseException"))),
        1 => Just(Some((Class::Throttled, "LimitExceededException"))),
        1 => Just(Some((Class::Transient, "InternalFailure"))),
    ];
    let end = prop_oneof![Just(End::Ended), Just(End::Dropped), Just(End::Stalled)];
    (refuse, 0usize..4, end, 0usize..3).prop_map(|(refuse, events, end, overlap)| Plan {
        refuse,
        events: Some(events),
        end,
        overlap,
    })
}

/// A shard of `kinds` (true: an aggregate of three, false: a plain record).
fn shard_of(kinds: &[bool]) -> (Vec<ReceivedRecord>, Vec<Delivered>) {
    let mut records = Vec::new();
    let mut expected = Vec::new();
    for (i, aggregated) in kinds.iter().enumerate() {
        let n = i as u64 + 1;
        if *aggregated {
            let users: Vec<(String, String)> = (0..3)
                .map(|j| (format!("k{n}-{j}"), format!("r{n}.{j}")))
                .collect();
            let refs: Vec<(&str, &str, Option<u128>)> = users
                .iter()
                .map(|(k, d)| (k.as_str(), d.as_str(), None))
                .collect();
            records.push(aggregate(n, &refs));
            for (j, (_, data)) in users.iter().enumerate() {
                expected.push((seq(n), Some(j as u64), data.clone()));
            }
        } else {
            records.push(plain(n, &format!("r{n}")));
            expected.push((seq(n), None, format!("r{n}")));
        }
    }
    (records, expected)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn every_record_once_in_order_whatever_the_faults(
        kinds in proptest::collection::vec(any::<bool>(), 1..25),
        plans in proptest::collection::vec(plan_strategy(), 0..12),
        per_event in 1usize..4,
        skip in 0usize..10,
    ) {
        let (records, expected) = shard_of(&kinds);
        // Resume from a checkpoint at some delivered position (or from the start).
        let (position, expected) = match skip.checked_sub(1).and_then(|i| expected.get(i)) {
            Some((sequence_number, sub, _)) => (
                StartingPosition::AfterSequence {
                    sequence_number: sequence_number.clone(),
                    sub_sequence_number: sub.unwrap_or(0),
                },
                expected[skip..].to_vec(),
            ),
            None => (StartingPosition::TrimHorizon, expected),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let delivered = runtime.block_on(async {
            let fake = Fake::with_records(records);
            fake.state().per_event = per_event;
            fake.close(vec![child("shardId-000000000001")]);
            fake.plan(plans);
            let mut source = driver(&fake, position, config());
            read_to_end(&mut source).await.0
        });
        prop_assert_eq!(delivered, expected);
    }
}
