//! The set-ups kcl's private fakes made, built on the one fake: a worker's whole stream
//! (`scheduler/tests/fake.rs`), one polled shard of hand-made records (`retrieval/tests.rs`),
//! one subscribed shard (`retrieval/fanout/tests.rs`); and the fake behind the bundles.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aggregation_proto::{HashRange, ReceivedRecord, UserRecord};
use tokio::time::Instant;

use super::{FakeKinesis, MillisBehind, Operation, SubscriptionEnd, SubscriptionPlan};
use crate::{
    Bounded, ChildShard, ConsumerApi, ErrorClass, ListShards, ProducerApi, PutEntry, ReadShard,
    Shard, ShardIteratorStart, ShardListing, StreamId, SubscribeStart, Timeouts,
};

const S0: &str = "shardId-000000000000";

fn shard_id(n: u32) -> String {
    format!("shardId-{n:012}")
}

/// Reads `shard` from its start to its end (or tip) in pages of `limit`.
async fn read_all(
    api: &dyn ConsumerApi,
    stream: &StreamId,
    shard: &str,
    limit: i32,
) -> (Vec<ReceivedRecord>, Vec<ChildShard>) {
    let mut iterator = api
        .get_shard_iterator(stream, shard, &ShardIteratorStart::TrimHorizon)
        .await
        .unwrap();
    let mut records = Vec::new();
    loop {
        let page = api.get_records(stream, &iterator, limit).await.unwrap();
        let empty = page.records.is_empty();
        records.extend(page.records);
        match page.next_iterator {
            Some(next) if !empty => iterator = next,
            Some(_) => return (records, Vec::new()),
            None => return (records, page.child_shards),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_whole_stream_as_the_scheduler_tests_use_it() {
    let fake = FakeKinesis::new();
    fake.set_sequence_format(100_000, 0);
    fake.create_stream("stream", 2);
    let put_n = |shard: &str, prefix: &str, count: usize| {
        fake.append_data(
            "stream",
            shard,
            "key",
            (0..count).map(|i| format!("{prefix}-{i}")),
        )
    };
    let (s0, s1) = (shard_id(0), shard_id(1));
    assert_eq!(put_n(&s0, "s0", 3), ["100001", "100002", "100003"]);
    put_n(&s1, "s1", 1);
    let (c2, c3) = fake.split_in_half("stream", &s0);
    assert_eq!((c2.as_str(), c3.as_str()), (&*shard_id(2), &*shard_id(3)));
    let m4 = fake.merge("stream", &c3, &s1);
    assert_eq!(m4, shard_id(4));
    fake.fail(Operation::GetRecords, ErrorClass::Throttled, 1);

    let api: Arc<dyn ConsumerApi> = Arc::new(fake.clone());
    let stream = StreamId::from("stream");
    assert!(
        api.get_records(&stream, "x", 1).await.is_err(),
        "the injected failure comes first"
    );
    let (records, children) = read_all(&*api, &stream, &s0, 2).await;
    assert_eq!(records.len(), 3);
    let ids: Vec<&str> = children.iter().map(|c| c.shard_id.as_str()).collect();
    assert_eq!(ids, [c2.as_str(), c3.as_str()]);
    let (_, children) = read_all(&*api, &stream, &s1, 10).await;
    assert_eq!(children[0].shard_id, m4);
    assert_eq!(children[0].parent_shard_ids, [c3.as_str(), s1.as_str()]);

    // A shard trimmed away: NotFound, and listings leave it out.
    fake.remove_shard("stream", &s0);
    let gone = api
        .get_shard_iterator(&stream, &s0, &ShardIteratorStart::TrimHorizon)
        .await
        .unwrap_err();
    assert_eq!(gone.class(), ErrorClass::NotFound);
    let listed = api.list_shards(&stream, &ShardListing::All).await.unwrap();
    assert!(listed.iter().all(|s| s.shard_id != s0));
    assert_eq!(fake.call_count(Operation::GetShardIterator), 3);

    // Enhanced fan-out as the scheduler's fake did it: consumers ACTIVE at once, 10 records an
    // event, 20 events a subscription, an idle event every 100 ms.
    fake.set_registration_states([crate::ConsumerStatus::Active]);
    fake.set_events_per_subscription(Some(20));
    fake.set_idle_event_interval(Duration::from_millis(100));
    let arn = api.stream_arn(&stream).await.unwrap();
    let consumer = api.register_consumer(&arn, "app").await.unwrap();
    assert_eq!(consumer.status, crate::ConsumerStatus::Active);
    put_n(&m4, "m4", 25);
    let mut events = api
        .subscribe(&consumer.consumer_arn, &m4, &SubscribeStart::TrimHorizon)
        .await
        .unwrap();
    let mut sizes = Vec::new();
    while let Some(event) = events.next_event().await.unwrap() {
        sizes.push(event.records.len());
    }
    assert_eq!(sizes.len(), 20);
    assert_eq!(sizes[..4], [10, 10, 5, 0]);
}

/// A 56-digit sequence number, as kcl's retrieval tests write them.
fn seq(n: u64) -> String {
    format!("4959033827149025660855969253836157109592157598{n:010}")
}

fn plain(n: u64, data: &str) -> ReceivedRecord {
    ReceivedRecord::new(format!("pk-{n}"), data.to_owned())
        .with_sequence_number(seq(n))
        .with_arrival_time(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 + n))
}

#[tokio::test(start_paused = true)]
async fn one_polled_shard_of_hand_made_records() {
    let fake = FakeKinesis::new();
    fake.create_stream("stream", 1);
    fake.append("stream", S0, [plain(1, "p1"), plain(2, "p2")]);
    fake.append_user_records(
        "stream",
        S0,
        ["a", "b"].map(|k| UserRecord::new(k, k.to_owned())),
    );
    fake.append("stream", S0, [plain(4, "p4")]);
    fake.set_millis_behind(MillisBehind::Fixed(5_000));
    fake.set_delay(Operation::GetRecords, Duration::from_millis(500));
    let stream = StreamId::from("stream");
    let start = ShardIteratorStart::AtSequence(seq(2));
    let iterator = fake.get_shard_iterator(&stream, S0, &start).await.unwrap();
    let started = Instant::now();
    let page = fake.get_records(&stream, &iterator, 2).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(500));
    assert_eq!(page.records[0].sequence_number.as_deref(), Some(&*seq(2)));
    assert_eq!(page.millis_behind_latest, Some(5_000));
    assert_eq!(fake.iterator_requests()[0].start, start);

    // The end of a shard whose children only ListShards names: a hand-written lineage.
    fake.set_child_shards_in_answers(false);
    let mut merged = Shard::new("shardId-000000000004", HashRange::ALL);
    merged.parent_shard_id = Some("shardId-000000000002".into());
    merged.adjacent_parent_shard_id = Some(S0.into());
    fake.add_shard("stream", merged);
    fake.close_shard("stream", S0);
    let (records, children) = read_all(&fake, &stream, S0, 100).await;
    assert_eq!(records.len(), 4);
    assert!(children.is_empty());
    let after = fake
        .list_shards(&stream, &ShardListing::After(S0.into()))
        .await
        .unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(
        after[0].parents().collect::<Vec<_>>(),
        ["shardId-000000000002", S0]
    );
}

#[tokio::test(start_paused = true)]
async fn one_subscribed_shard_with_a_single_child() {
    let fake = FakeKinesis::new();
    fake.create_stream("s", 1);
    fake.append("s", S0, (1..=5).map(|n| plain(n, "x")));
    fake.set_records_per_event(2);
    fake.set_millis_behind(MillisBehind::PerRecord(1_000));
    let mut child = Shard::new(shard_id(1), HashRange::ALL);
    child.parent_shard_id = Some(S0.into());
    fake.add_shard("s", child);
    fake.close_shard("s", S0);
    let consumer = fake.add_consumer("s", "c");
    fake.plan_subscriptions([SubscriptionPlan::ending(1, SubscriptionEnd::Ended)]);
    let api: Arc<dyn ConsumerApi> = Arc::new(fake.clone());
    let mut first = api
        .subscribe(&consumer, S0, &SubscribeStart::TrimHorizon)
        .await
        .unwrap();
    let event = first.next_event().await.unwrap().unwrap();
    assert_eq!(event.millis_behind_latest, Some(3_000));
    assert_eq!(event.continuation_sequence_number, Some(seq(2)));
    assert!(first.next_event().await.unwrap().is_none());
    let start = SubscribeStart::AfterSequence(seq(2));
    let mut second = api.subscribe(&consumer, S0, &start).await.unwrap();
    let mut last = None;
    while let Some(event) = second.next_event().await.unwrap() {
        last = Some(event);
    }
    let last = last.unwrap();
    assert_eq!(last.child_shards.len(), 1);
    assert_eq!(last.child_shards[0].hash_range, HashRange::ALL);
    assert_eq!(fake.events_sent(), 3);
    assert_eq!(fake.open_subscriptions(), 2);
    drop((first, second));
    assert_eq!(fake.open_subscriptions(), 0);
    let starts: Vec<SubscribeStart> = fake.subscriptions().into_iter().map(|s| s.start).collect();
    assert_eq!(starts, [SubscribeStart::TrimHorizon, start]);
}

#[tokio::test(start_paused = true)]
async fn one_fake_behind_both_bundles_and_bounded() {
    let fake = FakeKinesis::new();
    fake.create_stream("s", 1);
    let producer: Arc<dyn ProducerApi> = Arc::new(fake.clone());
    let entry = PutEntry::new("k".into(), None, bytes::Bytes::from_static(b"d"));
    producer
        .put_records(&StreamId::from("s"), &[entry])
        .await
        .unwrap();
    let timeouts = Timeouts::uniform(Duration::from_secs(10));
    let bounded = Bounded::new(fake.clone(), timeouts);
    fake.set_hang(Operation::GetShardIterator, true);
    let hung = bounded
        .get_shard_iterator(&StreamId::from("s"), S0, &ShardIteratorStart::Latest)
        .await
        .unwrap_err();
    assert_eq!(hung.class(), ErrorClass::Transient, "{hung}");
    fake.set_hang(Operation::GetShardIterator, false);
    let (records, _) = read_all(&bounded, &StreamId::from("s"), S0, 10).await;
    assert_eq!(records.len(), 1, "what PutRecords stored is read back");
}
