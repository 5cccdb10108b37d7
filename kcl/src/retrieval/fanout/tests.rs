//! Unit tests of enhanced fan-out over kinesis-common's `FakeKinesis` (paused tokio time):
//! every failure path the emulator cannot produce, and a property test over random fault
//! sequences.

use std::sync::Arc;
use std::time::Duration;

use aggregation_proto::{HashRange, ReceivedRecord};
use kinesis_common::testing::{
    FakeKinesis, Fault, MillisBehind, Operation, SubscriptionEnd as End, SubscriptionPlan as Plan,
};
use kinesis_common::{Bounded, ConsumerStatus, Shard as ShardSummary, SubscribeStart, Timeouts};
use proptest::prelude::*;
use tokio::time::Instant;
use tracing::Span;

use super::config::FanOutConfig;
use super::registration::{RegistrationError, register};
use super::source::FanOutReader;
use crate::retrieval::error::Class;
use crate::retrieval::tests::{
    after, aggregate, plain, seq, standard_delivery, standard_records, summary,
};
use crate::retrieval::{ChildShard, RetrievalError, ShardBatch, StartingPosition, StreamId};

/// A delivered user record: sequence number, sub-sequence number, data.
type Delivered = (String, Option<u64>, String);

/// The one shard these tests read, of stream `s`.
const SHARD: &str = "shardId-000000000000";

/// Stream `s` of one shard holding `records`, read by consumer `c` (ACTIVE): two records an
/// event, `MillisBehindLatest` 1 s per record left, an empty event a second when caught up.
fn with_records(records: Vec<ReceivedRecord>) -> FakeKinesis {
    let fake = FakeKinesis::new();
    fake.create_stream("s", 1);
    fake.append("s", SHARD, records);
    fake.add_consumer("s", "c");
    fake.set_records_per_event(2);
    fake.set_millis_behind(MillisBehind::PerRecord(1_000));
    fake
}

/// Stream `s` without consumers, for the registration tests.
fn registration_fake() -> FakeKinesis {
    let fake = FakeKinesis::new();
    fake.create_stream("s", 1);
    fake
}

/// Closes the shard with `children` (their parent the shard), which its last event names.
fn close(fake: &FakeKinesis, children: Vec<ChildShard>) {
    for child in children {
        let mut shard = ShardSummary::new(child.shard_id, child.hash_range);
        shard.parent_shard_id = Some(SHARD.into());
        fake.add_shard("s", shard);
    }
    fake.close_shard("s", SHARD);
}

/// Adds `shard` to what ListShards lists, not to the answers at the shard's end.
fn list_only(fake: &FakeKinesis, shard: ShardSummary) {
    fake.set_child_shards_in_answers(false);
    fake.add_shard("s", shard);
}

/// Where each SubscribeToShard call asked to start, in order.
fn starts(fake: &FakeKinesis) -> Vec<SubscribeStart> {
    fake.subscriptions().into_iter().map(|s| s.start).collect()
}

fn config() -> FanOutConfig {
    FanOutConfig::default()
        .read_timeout(Duration::from_secs(5))
        .subscribe_backoff(Duration::from_millis(100), Duration::from_secs(2))
}

fn driver(fake: &FakeKinesis, position: StartingPosition, config: FanOutConfig) -> FanOutReader {
    driver_in(fake, None, position, config)
}

fn driver_in(
    fake: &FakeKinesis,
    hash_range: Option<HashRange>,
    position: StartingPosition,
    config: FanOutConfig,
) -> FanOutReader {
    let api: Arc<dyn kinesis_common::ConsumerApi> = Arc::new(fake.clone());
    FanOutReader::new(
        api,
        "s".into(),
        fake.consumer_arn("s", "c"),
        SHARD.into(),
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
    let fake = with_records(standard_records());
    close(&fake, vec![child("shardId-000000000001")]);
    let mut source = driver(&fake, StartingPosition::TrimHorizon, config());
    let (delivered, last) = read_to_end(&mut source).await;
    assert_eq!(delivered, standard_delivery());
    assert_eq!(last.shard_end, Some(vec![child("shardId-000000000001")]));
    // Every later call repeats the end without subscribing again.
    let again = source.next_batch().await.unwrap();
    assert!(again.is_empty());
    assert_eq!(again.shard_end, Some(vec![child("shardId-000000000001")]));
    assert_eq!(starts(&fake), vec![SubscribeStart::TrimHorizon]);
    assert_eq!(fake.list_shards_calls(), 0);
    let stats = source.counters.snapshot();
    assert_eq!(stats.records_delivered, 8);
    assert_eq!(stats.subscribe_calls, 1);
}

#[tokio::test(start_paused = true)]
async fn millis_behind_latest_comes_from_the_events() {
    let fake = with_records(standard_records());
    let mut source = driver(&fake, StartingPosition::TrimHorizon, config());
    let first = source.next_batch().await.unwrap();
    assert_eq!(first.millis_behind_latest, Some(3_000));
}

#[tokio::test(start_paused = true)]
async fn a_subscription_ended_by_the_service_resumes_after_the_continuation_at_once() {
    let fake = with_records(standard_records());
    list_only(
        &fake,
        ShardSummary {
            shard_id: "shardId-000000000002".into(),
            parent_shard_id: Some("shardId-000000000000".into()),
            adjacent_parent_shard_id: None,
            hash_range: HashRange::ALL,
            open: true,
        },
    );
    close(&fake, Vec::new());
    // Every subscription ends after one event (the 5-minute end, compressed).
    fake.plan_subscriptions((0..10).map(|_| Plan::ending(1, End::Ended)));
    let started = Instant::now();
    let mut source = driver(&fake, StartingPosition::TrimHorizon, config());
    let (delivered, last) = read_to_end(&mut source).await;
    assert_eq!(delivered, standard_delivery());
    let starts = starts(&fake);
    assert_eq!(starts[0], SubscribeStart::TrimHorizon);
    assert_eq!(starts[1], SubscribeStart::AfterSequence(seq(2)));
    assert_eq!(starts[2], SubscribeStart::AfterSequence(seq(4)));
    // A normal end costs no backoff.
    assert_eq!(Instant::now(), started);
    // No ChildShards in the last event: ListShards found the child.
    assert_eq!(last.shard_end.unwrap()[0].shard_id, "shardId-000000000002");
    assert_eq!(fake.list_shards_calls(), 1);
    assert!(source.counters.snapshot().subscriptions_ended >= 2);
}

#[tokio::test(start_paused = true)]
async fn a_closed_shard_whose_subscription_never_ends_is_ended_by_the_listing_check() {
    let fake = with_records(standard_records());
    fake.set_silent_shard_end(true);
    close(&fake, Vec::new());
    // Not closed yet when the check first runs: nothing ends.
    let config = config().closed_shard_check(Some(Duration::from_secs(10)));
    let mut source = driver(&fake, StartingPosition::TrimHorizon, config);
    let mut delivered = Vec::new();
    for _ in 0..20 {
        delivered.extend(summary(&source.next_batch().await.unwrap()));
    }
    assert_eq!(delivered, standard_delivery());
    assert!(fake.list_shards_calls() >= 1);
    assert_eq!(starts(&fake).len(), 1, "an open shard is not resubscribed");
    // Now the listing shows a child: the source resubscribes and ends at the caught-up event.
    list_only(
        &fake,
        ShardSummary {
            shard_id: "shardId-000000000001".into(),
            parent_shard_id: Some("shardId-000000000000".into()),
            adjacent_parent_shard_id: None,
            hash_range: HashRange::ALL,
            open: true,
        },
    );
    let (more, last) = read_to_end(&mut source).await;
    assert!(more.is_empty(), "nothing delivered twice: {more:?}");
    assert_eq!(last.shard_end.unwrap()[0].shard_id, "shardId-000000000001");
    assert_eq!(starts(&fake).len(), 2);
    assert_eq!(starts(&fake)[1], SubscribeStart::AfterSequence(seq(5)));
}

#[tokio::test(start_paused = true)]
async fn resource_in_use_and_throttling_back_off_then_resume() {
    let fake = with_records(standard_records());
    close(&fake, Vec::new());
    fake.plan_subscriptions([
        Plan::refused(Class::Transient, "ResourceInUseException"),
        Plan::refused(Class::Transient, "ResourceInUseException"),
        Plan::refused(Class::Throttled, "LimitExceededException"),
    ]);
    let mut source = driver(&fake, StartingPosition::TrimHorizon, config());
    let (delivered, _) = read_to_end(&mut source).await;
    assert_eq!(delivered, standard_delivery());
    let times: Vec<Instant> = fake.subscriptions().iter().map(|s| s.at).collect();
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
    let fake = with_records(standard_records());
    close(&fake, Vec::new());
    fake.plan_subscriptions((0..4).map(|_| Plan::ending(0, End::Ended)));
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
    let fake = with_records(standard_records());
    close(&fake, Vec::new());
    fake.plan_subscriptions([Plan::ending(1, End::Dropped), Plan::ending(1, End::Dropped)]);
    let mut source = driver(&fake, StartingPosition::TrimHorizon, config());
    let (delivered, _) = read_to_end(&mut source).await;
    assert_eq!(delivered, standard_delivery());
    assert_eq!(
        starts(&fake)[1..3],
        [
            SubscribeStart::AfterSequence(seq(2)),
            SubscribeStart::AfterSequence(seq(4))
        ]
    );
    assert_eq!(source.counters.snapshot().transient_errors, 2);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_subscription_times_out_and_resumes() {
    let fake = with_records(standard_records());
    close(&fake, Vec::new());
    fake.plan_subscriptions([Plan::ending(1, End::Stalled)]);
    let started = Instant::now();
    let mut source = driver(&fake, StartingPosition::TrimHorizon, config());
    let (delivered, _) = read_to_end(&mut source).await;
    assert_eq!(delivered, standard_delivery());
    // The read timeout (5 s) passed, then a backoff.
    assert!(Instant::now() - started >= Duration::from_secs(5));
    assert_eq!(starts(&fake)[1], SubscribeStart::AfterSequence(seq(2)));
    assert_eq!(fake.open_subscriptions(), 0, "the stalled one was closed");
}

#[tokio::test(start_paused = true)]
async fn records_sent_again_by_a_new_subscription_are_not_delivered_twice() {
    let fake = with_records(standard_records());
    close(&fake, Vec::new());
    fake.plan_subscriptions([
        Plan::ending(1, End::Ended),
        Plan::ending(2, End::Dropped).overlapping(2),
    ]);
    let mut source = driver(&fake, StartingPosition::TrimHorizon, config());
    let (delivered, _) = read_to_end(&mut source).await;
    assert_eq!(delivered, standard_delivery());
    assert!(source.counters.snapshot().records_skipped >= 4);
}

#[tokio::test(start_paused = true)]
async fn a_checkpoint_inside_an_aggregate_resumes_at_the_next_sub_record() {
    let fake = with_records(standard_records());
    close(&fake, Vec::new());
    let position = after(seq(2), 1);
    let mut source = driver(&fake, position, config());
    let (delivered, _) = read_to_end(&mut source).await;
    assert_eq!(delivered, standard_delivery()[3..]);
    assert_eq!(starts(&fake)[0], SubscribeStart::AtSequence(seq(2)));
}

#[tokio::test(start_paused = true)]
async fn each_sub_record_is_filtered_to_the_hash_range() {
    let low = 1u128 << 100;
    let high = u128::MAX - 5;
    let records = vec![
        aggregate(1, &[("a", "in", Some(low)), ("b", "out", Some(high))]),
        plain(2, "plain"),
    ];
    let fake = with_records(records);
    close(&fake, Vec::new());
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
    let fake = with_records(records);
    fake.set_records_per_event(1);
    let mut source = driver(&fake, StartingPosition::TrimHorizon, config());
    for consumed in 1..=5 {
        let batch = source.next_batch().await.unwrap();
        assert_eq!(batch.records.len(), 1);
        // A processor that takes a minute per batch: the reader runs ahead by one event only.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(fake.events_sent(), consumed + 1);
    }
}

#[tokio::test(start_paused = true)]
async fn fatal_errors_are_returned_and_give_up_after_exhausts() {
    let fake = with_records(standard_records());
    fake.plan_subscriptions([Plan::refused(Class::NotFound, "ResourceNotFoundException")]);
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

    let fake = with_records(standard_records());
    fake.plan_subscriptions(
        (0..100).map(|_| Plan::refused(Class::Transient, "ResourceInUseException")),
    );
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
    let fake = with_records(standard_records());
    let position = after("SHARD_END", 0);
    let mut source = driver(&fake, position, config());
    let error = source.next_batch().await.unwrap_err();
    assert!(matches!(
        error,
        RetrievalError::InvalidStartingPosition { .. }
    ));
    assert!(starts(&fake).is_empty());
}

#[tokio::test(start_paused = true)]
async fn latest_is_kept_as_a_timestamp_across_resubscriptions() {
    let fake = with_records(Vec::new());
    fake.plan_subscriptions([Plan::ending(0, End::Dropped)]);
    let mut source = driver(&fake, StartingPosition::Latest, config());
    let batch = source.next_batch().await.unwrap();
    assert!(batch.is_empty());
    let starts = starts(&fake);
    assert_eq!(starts[0], SubscribeStart::Latest);
    assert!(
        matches!(starts[1], SubscribeStart::AtTimestamp(_)),
        "{starts:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_source_closes_the_subscription() {
    let fake = with_records(standard_records());
    let mut source = driver(&fake, StartingPosition::TrimHorizon, config());
    source.next_batch().await.unwrap();
    assert_eq!(fake.open_subscriptions(), 1);
    drop(source);
    tokio::task::yield_now().await;
    assert_eq!(fake.open_subscriptions(), 0);
}

// Registration.

fn registration_config() -> FanOutConfig {
    FanOutConfig::default()
        .registration_poll_interval(Duration::from_millis(100))
        .registration_timeout(Duration::from_secs(10))
}

#[tokio::test(start_paused = true)]
async fn registration_registers_a_missing_consumer_and_waits_for_active() {
    let fake = registration_fake();
    let consumer = register(&fake, &"s".into(), "app", &registration_config())
        .await
        .unwrap();
    assert_eq!(
        consumer.consumer_arn,
        "arn:aws:kinesis:us-east-1:123456789012:stream/s/consumer/app:1"
    );
    assert_eq!(
        consumer.stream_arn,
        "arn:aws:kinesis:us-east-1:123456789012:stream/s"
    );
    assert_eq!(fake.call_count(Operation::RegisterStreamConsumer), 1);
    // Again: already ACTIVE, nothing registered.
    register(&fake, &"s".into(), "app", &registration_config())
        .await
        .unwrap();
    assert_eq!(fake.call_count(Operation::RegisterStreamConsumer), 1);
}

#[tokio::test(start_paused = true)]
async fn registration_waits_out_creating_and_deleting() {
    let fake = registration_fake();
    fake.set_consumer_states(
        "s",
        "app",
        [
            Some(ConsumerStatus::Deleting),
            Some(ConsumerStatus::Deleting),
            None,
        ],
    );
    let started = Instant::now();
    register(&fake, &"s".into(), "app", &registration_config())
        .await
        .unwrap();
    assert_eq!(fake.call_count(Operation::RegisterStreamConsumer), 1);
    assert!(Instant::now() - started >= Duration::from_millis(300));

    let fake = registration_fake();
    fake.set_consumer_states(
        "s",
        "app",
        [Some(ConsumerStatus::Creating), Some(ConsumerStatus::Active)],
    );
    register(&fake, &"s".into(), "app", &registration_config())
        .await
        .unwrap();
    assert_eq!(fake.call_count(Operation::RegisterStreamConsumer), 0);
}

#[tokio::test(start_paused = true)]
async fn registration_race_resource_in_use_is_not_an_error() {
    let fake = registration_fake();
    fake.inject(
        Operation::RegisterStreamConsumer,
        [Fault::Error {
            class: Class::Transient,
            code: "ResourceInUseException".into(),
        }],
    );
    // Meanwhile another worker registered it: the next describe finds it.
    let other = fake.clone();
    let racer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        other.set_consumer_states("s", "app", [Some(ConsumerStatus::Active)]);
    });
    register(&fake, &"s".into(), "app", &registration_config())
        .await
        .unwrap();
    racer.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn registration_fails_typed() {
    let fake = registration_fake();
    fake.set_consumer_states("s", "app", [Some(ConsumerStatus::Deleting)]);
    let error = register(&fake, &"s".into(), "app", &registration_config())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RegistrationError::NotActive { last_problem, .. } if last_problem == "DELETING"),
        "{error}"
    );
    let fake = registration_fake();
    // InvalidArgumentException.
    fake.fail(Operation::RegisterStreamConsumer, Class::InvalidRequest, 1);
    let error = register(&fake, &"s".into(), "bad name!", &registration_config())
        .await
        .unwrap_err();
    assert!(matches!(error, RegistrationError::Failed { .. }), "{error}");
}

/// Stream `s` whose registration calls never answer (a connection the service stopped
/// reading).
fn hung() -> FakeKinesis {
    let fake = registration_fake();
    for operation in REGISTRATION_CALLS {
        fake.set_hang(operation, true);
    }
    fake
}

/// The calls registration makes.
const REGISTRATION_CALLS: [Operation; 3] = [
    Operation::DescribeStreamSummary,
    Operation::RegisterStreamConsumer,
    Operation::DescribeStreamConsumer,
];

#[tokio::test(start_paused = true)]
async fn a_hung_registration_call_ends_within_the_registration_timeout() {
    let config = registration_config();
    let started = Instant::now();
    let stream = StreamId::from("s");
    let fake = hung();
    let registration = register(&fake, &stream, "app", &config);
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
    let api = Bounded::new(hung(), timeouts);
    let error = register(&api, &"s".into(), "app", &config)
        .await
        .unwrap_err();
    // Each attempt ended after 1 s as a retryable timeout, until the registration timeout.
    assert!(
        matches!(&error, RegistrationError::NotActive { last_problem, .. } if last_problem == "Timeout"),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_registration_cut_at_its_deadline_names_the_last_state_seen() {
    let fake = registration_fake();
    fake.set_consumer_states("s", "app", [Some(ConsumerStatus::Deleting)]);
    let config = registration_config();
    // Every call takes 300 ms: the call in flight at the deadline is cut, and the error
    // names the state the calls before it saw.
    for operation in REGISTRATION_CALLS {
        fake.set_delay(operation, Duration::from_millis(300));
    }
    let started = Instant::now();
    let error = register(&fake, &"s".into(), "app", &config)
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
    (refuse, 0usize..4, end, 0usize..3).prop_map(|(refuse, events, end, overlap)| {
        let mut plan = Plan::ending(events, end).overlapping(overlap);
        plan.refuse = refuse.map(|(class, code): (Class, &str)| (class, code.to_owned()));
        plan
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
                after(sequence_number.clone(), sub.unwrap_or(0)),
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
            let fake = with_records(records);
            fake.set_records_per_event(per_event);
            close(&fake, vec![child("shardId-000000000001")]);
            fake.plan_subscriptions(plans);
            let mut source = driver(&fake, position, config());
            read_to_end(&mut source).await.0
        });
        prop_assert_eq!(delivered, expected);
    }
}
