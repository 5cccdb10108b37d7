//! Unit tests of polling retrieval over kinesis-common's `FakeKinesis` (paused tokio time).

use std::time::{Duration, SystemTime};

use aggregation_proto::{Aggregator, AggregatorConfig, HashRange, ReceivedRecord, UserRecord};
use kinesis_common::testing::{FakeKinesis, MillisBehind, Operation};
use kinesis_common::{Shard as ShardSummary, ShardIteratorStart as IteratorStart};
use tokio::time::Instant;
use tracing::Span;

use super::error::Class;
use super::fetcher::LATEST_CLOCK_SKEW_MARGIN;
use super::polling::PollingReader;
use super::*;

/// A 56-digit sequence number, like the service's.
pub(super) fn seq(n: u64) -> String {
    format!("4959033827149025660855969253836157109592157598{n:010}")
}

/// The position just after (`sequence_number`, `sub_sequence_number`).
pub(super) fn after(
    sequence_number: impl Into<String>,
    sub_sequence_number: u64,
) -> StartingPosition {
    StartingPosition::AfterSequence {
        sequence_number: sequence_number.into(),
        sub_sequence_number,
    }
}

pub(super) fn plain(n: u64, data: &str) -> ReceivedRecord {
    ReceivedRecord::new(format!("pk-{n}"), data.to_owned())
        .with_sequence_number(seq(n))
        .with_arrival_time(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 + n))
}

/// An aggregate of `users` (partition key, data, explicit hash key).
pub(super) fn aggregate(n: u64, users: &[(&str, &str, Option<u128>)]) -> ReceivedRecord {
    let mut aggregator = Aggregator::new(AggregatorConfig::default());
    for (key, data, hash_key) in users {
        let mut user = UserRecord::new(*key, data.to_string());
        if let Some(hash_key) = hash_key {
            user = user.with_explicit_hash_key(hash_key.to_string());
        }
        aggregator.try_add(&user).unwrap();
    }
    let kinesis = aggregator.finish().unwrap();
    ReceivedRecord::new(kinesis.partition_key, kinesis.data)
        .with_sequence_number(seq(n))
        .with_arrival_time(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 + n))
}

/// The standard shard of these tests: plain 1, aggregate 2 (a, b, c), plain 3, aggregate 4
/// (d, e), plain 5. As (sequence, sub-sequence, data).
pub(super) fn standard_records() -> Vec<ReceivedRecord> {
    vec![
        plain(1, "p1"),
        aggregate(2, &[("a", "a", None), ("b", "b", None), ("c", "c", None)]),
        plain(3, "p3"),
        aggregate(4, &[("d", "d", None), ("e", "e", None)]),
        plain(5, "p5"),
    ]
}

pub(super) fn standard_delivery() -> Vec<(String, Option<u64>, String)> {
    vec![
        (seq(1), None, "p1".into()),
        (seq(2), Some(0), "a".into()),
        (seq(2), Some(1), "b".into()),
        (seq(2), Some(2), "c".into()),
        (seq(3), None, "p3".into()),
        (seq(4), Some(0), "d".into()),
        (seq(4), Some(1), "e".into()),
        (seq(5), None, "p5".into()),
    ]
}

/// The one shard these tests read.
const SHARD: &str = "shardId-000000000000";

/// A one-shard stream `stream` holding `records` (hand-made sequence numbers kept).
fn shard_with(records: Vec<ReceivedRecord>) -> FakeKinesis {
    let api = FakeKinesis::new();
    api.create_stream("stream", 1);
    api.append("stream", SHARD, records);
    api
}

/// Where each GetShardIterator call asked to start, in order.
fn starts(api: &FakeKinesis) -> Vec<IteratorStart> {
    api.iterator_requests()
        .into_iter()
        .map(|request| request.start)
        .collect()
}

fn config() -> PollingConfig {
    PollingConfig::default()
        .prefetch(false)
        .idle_time_between_reads(Duration::from_millis(1_000))
        .min_time_between_calls(Duration::from_millis(200))
        .throttle_backoff(Duration::from_millis(100), Duration::from_secs(2))
}

fn driver(
    api: &FakeKinesis,
    position: StartingPosition,
    config: PollingConfig,
) -> PollingReader<FakeKinesis> {
    driver_in_range(api, position, config, None)
}

fn driver_in_range(
    api: &FakeKinesis,
    position: StartingPosition,
    config: PollingConfig,
    range: Option<HashRange>,
) -> PollingReader<FakeKinesis> {
    PollingReader::new(
        api.clone(),
        StreamId::from("stream"),
        SHARD.into(),
        range,
        position,
        config,
        Span::none(),
    )
}

pub(super) fn summary(batch: &ShardBatch) -> Vec<(String, Option<u64>, String)> {
    batch
        .records
        .iter()
        .map(|r| {
            (
                r.sequence_number().unwrap().to_owned(),
                r.sub_sequence_number(),
                String::from_utf8(r.data().to_vec()).unwrap(),
            )
        })
        .collect()
}

/// Reads until a caught-up empty batch (or the shard's end), returning everything delivered.
async fn read_to_tip(
    driver: &mut PollingReader<FakeKinesis>,
) -> Vec<(String, Option<u64>, String)> {
    let mut delivered = Vec::new();
    loop {
        let batch = driver.next_batch().await.unwrap();
        delivered.extend(summary(&batch));
        if batch.shard_end.is_some()
            || (batch.kinesis_records == 0 && batch.millis_behind_latest == Some(0))
        {
            return delivered;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn delivers_every_record_in_order_across_pages() {
    let api = shard_with(standard_records());
    let mut source = driver(&api, StartingPosition::TrimHorizon, config().max_records(2));
    let first = source.next_batch().await.unwrap();
    assert_eq!(first.kinesis_records, 2);
    assert_eq!(first.records.len(), 4);
    assert_eq!(first.millis_behind_latest, Some(1_000));
    assert_eq!(
        first.bytes,
        standard_records()[..2]
            .iter()
            .map(|r| r.data.len())
            .sum::<usize>()
    );
    let mut delivered = summary(&first);
    delivered.extend(read_to_tip(&mut source).await);
    assert_eq!(delivered, standard_delivery());
    let stats = source.counters.snapshot();
    assert_eq!(stats.records_delivered, 8);
    assert_eq!(stats.kinesis_records, 5);
    assert_eq!(stats.get_shard_iterator_calls, 1);
    assert_eq!(stats.records_skipped, 0);
    // Sub-records of one Kinesis record share its buffer.
    assert!(
        first.records[1].kinesis_record().data.as_ptr()
            == first.records[2].kinesis_record().data.as_ptr()
    );
}

#[tokio::test(start_paused = true)]
async fn after_sequence_resumes_inside_an_aggregate_or_after_a_plain_record() {
    let api = shard_with(standard_records());
    let inside = after(seq(2), 0);
    let mut source = driver(&api, inside, config());
    assert_eq!(read_to_tip(&mut source).await, standard_delivery()[2..]);
    assert_eq!(source.counters.snapshot().records_skipped, 1);
    assert_eq!(starts(&api), vec![IteratorStart::AtSequence(seq(2))]);

    let last_of_aggregate = after(seq(2), 2);
    let mut source = driver(&api, last_of_aggregate, config());
    assert_eq!(read_to_tip(&mut source).await, standard_delivery()[4..]);

    let after_plain = after(seq(3), 0);
    let mut source = driver(&api, after_plain, config());
    assert_eq!(read_to_tip(&mut source).await, standard_delivery()[5..]);

    // Leading zeros do not change the position.
    let padded = after(format!("000{}", seq(4)), 1);
    let mut source = driver(&api, padded, config());
    assert_eq!(read_to_tip(&mut source).await, standard_delivery()[7..]);
}

#[tokio::test(start_paused = true)]
async fn invalid_after_sequence_is_a_fatal_error() {
    let api = shard_with(standard_records());
    let position = after("SHARD_END", 0);
    let mut source = driver(&api, position, config());
    let error = source.next_batch().await.unwrap_err();
    assert!(
        matches!(error, RetrievalError::InvalidStartingPosition { .. }),
        "{error:?}"
    );
    assert!(error.is_fatal());
    assert!(api.call_log().is_empty());
}

#[tokio::test(start_paused = true)]
async fn expired_iterator_resumes_after_the_last_delivered_record() {
    let api = shard_with(standard_records());
    let mut source = driver(&api, StartingPosition::TrimHorizon, config().max_records(2));
    // p1 and the aggregate a, b, c.
    let first = source.next_batch().await.unwrap();
    assert_eq!(summary(&first), standard_delivery()[..4]);
    api.expire_iterators();
    let rest = read_to_tip(&mut source).await;
    assert_eq!(rest, standard_delivery()[4..]);
    // The new iterator re-reads the aggregate and skips what was delivered.
    assert_eq!(
        starts(&api),
        vec![
            IteratorStart::TrimHorizon,
            IteratorStart::AtSequence(seq(2))
        ]
    );
    let stats = source.counters.snapshot();
    assert_eq!(stats.expired_iterators, 1);
    assert_eq!(stats.records_skipped, 3);
    assert_eq!(stats.records_delivered, 8);
}

#[tokio::test(start_paused = true)]
async fn expired_iterator_inside_a_checkpointed_aggregate_never_redelivers() {
    let api = shard_with(standard_records());
    let position = after(seq(4), 0);
    // The very first iterator expires: the replacement starts at the checkpoint again, and
    // the skip still drops the checkpointed sub-record.
    api.fail(Operation::GetRecords, Class::ExpiredIterator, 1);
    let mut source = driver(&api, position, config());
    assert_eq!(read_to_tip(&mut source).await, standard_delivery()[6..]);
    assert_eq!(
        starts(&api),
        vec![
            IteratorStart::AtSequence(seq(4)),
            IteratorStart::AtSequence(seq(4))
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn expired_iterator_before_any_record_reuses_the_starting_position() {
    // TRIM_HORIZON and AT_TIMESTAMP are reused as they are.
    for (position, expected) in [
        (StartingPosition::TrimHorizon, IteratorStart::TrimHorizon),
        (
            StartingPosition::AtTimestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(1_003)),
            IteratorStart::AtTimestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(1_003)),
        ),
    ] {
        let api = shard_with(Vec::new());
        api.fail(Operation::GetRecords, Class::ExpiredIterator, 1);
        let mut source = driver(&api, position, config());
        let batch = source.next_batch().await.unwrap();
        assert!(batch.is_empty());
        assert_eq!(starts(&api), vec![expected.clone(), expected]);
    }

    // LATEST becomes AT_TIMESTAMP of the first request, minus the clock-skew margin, so the
    // records put in between are not skipped.
    let api = shard_with(Vec::new());
    api.fail(Operation::GetRecords, Class::ExpiredIterator, 1);
    let before = SystemTime::now();
    let mut source = driver(&api, StartingPosition::Latest, config());
    source.next_batch().await.unwrap();
    let after = SystemTime::now();
    let starts = starts(&api);
    assert_eq!(starts[0], IteratorStart::Latest);
    let IteratorStart::AtTimestamp(at) = starts[1] else {
        panic!("{starts:?}");
    };
    assert!(at >= before - LATEST_CLOCK_SKEW_MARGIN && at <= after - LATEST_CLOCK_SKEW_MARGIN);
}

#[tokio::test(start_paused = true)]
async fn iterators_that_keep_expiring_are_retried_with_backoff() {
    let api = shard_with(standard_records());
    api.fail(Operation::GetRecords, Class::ExpiredIterator, 4);
    let mut source = driver(&api, StartingPosition::TrimHorizon, config());
    let started = Instant::now();
    assert_eq!(read_to_tip(&mut source).await, standard_delivery());
    // The first expiry is handled at once, the next three back off (>= 50, 100, 200 ms).
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(source.counters.snapshot().expired_iterators, 4);
}

#[tokio::test(start_paused = true)]
async fn throttling_and_transient_failures_are_retried_invisibly() {
    let api = shard_with(standard_records());
    api.fail(Operation::GetShardIterator, Class::Throttled, 1);
    api.fail(Operation::GetRecords, Class::Throttled, 3);
    api.fail(Operation::GetRecords, Class::Transient, 2);
    let mut source = driver(&api, StartingPosition::TrimHorizon, config().max_records(2));
    let started = Instant::now();
    assert_eq!(read_to_tip(&mut source).await, standard_delivery());
    let stats = source.counters.snapshot();
    assert_eq!(stats.throttled, 4);
    assert_eq!(stats.transient_errors, 2);
    assert_eq!(stats.get_shard_iterator_calls, 2);
    // Six failures in a row (a successful GetShardIterator does not end the streak; only
    // GetRecords does): envelopes 100, 200, 400, 800, 1600, 2000 (capped) ms, each wait in the
    // upper half, plus the pacing after the three pages: 200 ms twice, then the idle time
    // (1 s) after the third, which reached the tip.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(2_550), "{elapsed:?}");
    assert!(
        elapsed <= Duration::from_millis(5_100 + 1_400),
        "{elapsed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn backoff_is_capped_by_the_maximum() {
    let api = shard_with(standard_records());
    api.fail(Operation::GetRecords, Class::Throttled, 10);
    let mut source = driver(&api, StartingPosition::TrimHorizon, config());
    read_to_tip(&mut source).await;
    let calls = api.calls(Operation::GetRecords);
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
    // Envelope 100 ms doubling to 2 s; each wait in its upper half.
    assert!(
        gaps.iter()
            .take(10)
            .all(|gap| *gap <= Duration::from_secs(2)),
        "{gaps:?}"
    );
    assert!(gaps[9] >= Duration::from_secs(1), "{gaps:?}");
}

#[tokio::test(start_paused = true)]
async fn fatal_errors_are_returned_and_the_source_resumes_where_it_was() {
    let api = shard_with(standard_records());
    let mut source = driver(&api, StartingPosition::TrimHorizon, config().max_records(2));
    let first = source.next_batch().await.unwrap();
    api.fail(Operation::GetRecords, Class::AccessDenied, 1);
    let error = source.next_batch().await.unwrap_err();
    assert!(
        matches!(error, RetrievalError::AccessDenied { .. }),
        "{error:?}"
    );
    assert!(error.is_fatal());
    assert_eq!(error.operation(), Some("GetRecords"));
    api.fail(Operation::GetShardIterator, Class::NotFound, 1);
    let error = source.next_batch().await.unwrap_err();
    assert!(
        matches!(error, RetrievalError::NotFound { .. }),
        "{error:?}"
    );
    let mut delivered = summary(&first);
    delivered.extend(read_to_tip(&mut source).await);
    assert_eq!(delivered, standard_delivery());
}

#[tokio::test(start_paused = true)]
async fn give_up_after_returns_retries_exhausted_and_can_go_on() {
    let api = shard_with(standard_records());
    api.fail(Operation::GetRecords, Class::Throttled, 100);
    let mut source = driver(
        &api,
        StartingPosition::TrimHorizon,
        config().give_up_after(Some(Duration::from_secs(3))),
    );
    let started = Instant::now();
    let error = source.next_batch().await.unwrap_err();
    assert!(
        matches!(
            error,
            RetrievalError::RetriesExhausted {
                operation: "GetRecords",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!error.is_fatal());
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert!(started.elapsed() < Duration::from_secs(6));
    api.clear_faults(Operation::GetRecords);
    assert_eq!(read_to_tip(&mut source).await, standard_delivery());
}

#[tokio::test(start_paused = true)]
async fn caught_up_source_makes_one_call_per_idle_time_and_answers_at_once() {
    for prefetch in [false, true] {
        let api = shard_with(Vec::new());
        let mut source = driver(&api, StartingPosition::Latest, config().prefetch(prefetch));
        let started = Instant::now();
        let first = source.next_batch().await.unwrap();
        assert!(first.is_empty());
        assert_eq!(first.millis_behind_latest, Some(0));
        // The empty batch comes back without waiting for the idle time.
        assert!(
            started.elapsed() < Duration::from_millis(10),
            "{:?}",
            started.elapsed()
        );
        for _ in 0..5 {
            source.next_batch().await.unwrap();
        }
        let calls = api.calls(Operation::GetRecords);
        let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps.iter().all(|gap| *gap >= Duration::from_millis(1_000)),
            "prefetch {prefetch}: {gaps:?}"
        );
        // 10 s without a call to next_batch: at most the one call the prefetch task runs ahead.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let calls = api.calls(Operation::GetRecords).len();
        assert!(calls <= 7, "prefetch {prefetch}: {calls} calls");
    }
}

#[tokio::test(start_paused = true)]
async fn a_source_that_is_behind_reads_without_the_idle_wait() {
    let records: Vec<_> = (1..=20).map(|n| plain(n, "x")).collect();
    let api = shard_with(records);
    let mut source = driver(&api, StartingPosition::TrimHorizon, config().max_records(5));
    let started = Instant::now();
    let delivered = read_to_tip(&mut source).await;
    assert_eq!(delivered.len(), 20);
    // 4 full pages and one empty one. The first three answers are 1 s behind (the threshold,
    // not under it): paced by min_time_between_calls (200 ms), never by the idle time (1 s).
    // The fourth reached the tip: the empty call after it waits the idle time.
    let calls = api.calls(Operation::GetRecords);
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(
        gaps,
        [200, 200, 200, 1_000].map(Duration::from_millis),
        "{gaps:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// Appends a record to the fake shard every `every`, until aborted.
fn trickle(api: &FakeKinesis, every: Duration) -> tokio::task::JoinHandle<()> {
    let api = api.clone();
    tokio::spawn(async move {
        for n in 1.. {
            tokio::time::sleep(every).await;
            api.append("stream", SHARD, [plain(n, "x")]);
        }
    })
}

#[tokio::test(start_paused = true)]
async fn at_the_tip_a_trickle_of_records_gets_one_call_per_idle_interval() {
    // The shard's 5 calls/s are shared by every application polling it: a source at the tip
    // must not spend them on answers of one or two records (issue 15: 2 calls/s at
    // 2 records/s, 5 calls/s at 6 records/s, with a 1 s idle interval).
    for (per_second, prefetch) in [(2, false), (6, false), (6, true)] {
        let api = shard_with(Vec::new());
        let writer = trickle(&api, Duration::from_secs(1) / per_second);
        let mut source = driver(
            &api,
            StartingPosition::TrimHorizon,
            config().prefetch(prefetch),
        );
        let window = Duration::from_secs(30);
        let started = Instant::now();
        let mut delivered = 0;
        while started.elapsed() < window {
            delivered += source.next_batch().await.unwrap().records.len();
        }
        writer.abort();
        let calls: Vec<Instant> = api
            .calls(Operation::GetRecords)
            .into_iter()
            .filter(|at| *at - started < window)
            .collect();
        let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps.iter().all(|gap| *gap >= Duration::from_secs(1)),
            "{per_second}/s, prefetch {prefetch}: {} calls in {window:?}, gaps {gaps:?}",
            calls.len()
        );
        assert!(calls.len() <= 31, "{} calls", calls.len());
        // Nothing is held back longer than one idle interval.
        assert!(
            delivered >= 29 * per_second as usize,
            "{per_second}/s, prefetch {prefetch}: {delivered} delivered"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn behind_the_threshold_calls_follow_at_full_speed_even_with_records() {
    let records: Vec<_> = (1..=100).map(|n| plain(n, "x")).collect();
    let api = shard_with(records);
    api.set_millis_behind(MillisBehind::Fixed(5_000));
    let mut source = driver(
        &api,
        StartingPosition::TrimHorizon,
        config().max_records(10),
    );
    assert_eq!(read_to_tip(&mut source).await.len(), 100);
    // Ten full pages, the first nine answered 5 s behind: one call per
    // min_time_between_calls. The tenth reached the tip: the next call waits the idle time.
    let calls = api.calls(Operation::GetRecords);
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps[..9]
            .iter()
            .all(|gap| *gap == Duration::from_millis(200)),
        "{gaps:?}"
    );
    assert_eq!(gaps[9], Duration::from_secs(1), "{gaps:?}");
}

#[tokio::test(start_paused = true)]
async fn a_page_under_the_threshold_waits_the_idle_interval() {
    // Pages cut short by max_records but under the threshold (300 ms < 1 s): at the tip for
    // pacing purposes, so one call per idle interval.
    let records: Vec<_> = (1..=20).map(|n| plain(n, "x")).collect();
    let api = shard_with(records);
    api.set_millis_behind(MillisBehind::Fixed(300));
    let mut source = driver(&api, StartingPosition::TrimHorizon, config().max_records(5));
    assert_eq!(read_to_tip(&mut source).await.len(), 20);
    let calls = api.calls(Operation::GetRecords);
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|gap| *gap >= Duration::from_secs(1)),
        "{gaps:?}"
    );
    // A zero threshold turns the rule off: only an empty answer at the tip waits.
    let api = shard_with((1..=20).map(|n| plain(n, "x")).collect());
    api.set_millis_behind(MillisBehind::Fixed(300));
    let mut source = driver(
        &api,
        StartingPosition::TrimHorizon,
        config().max_records(5).caught_up_threshold(Duration::ZERO),
    );
    assert_eq!(read_to_tip(&mut source).await.len(), 20);
    let calls = api.calls(Operation::GetRecords);
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter()
            .take(3)
            .all(|gap| *gap == Duration::from_millis(200)),
        "{gaps:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn shard_end_carries_the_response_children_and_repeats() {
    let api = shard_with(standard_records());
    let low = HashRange::new(0, u128::MAX / 2).unwrap();
    let high = HashRange::new(u128::MAX / 2 + 1, u128::MAX).unwrap();
    let children = vec![
        ChildShard {
            shard_id: "shardId-000000000001".into(),
            parent_shard_ids: vec!["shardId-000000000000".into()],
            hash_range: low,
        },
        ChildShard {
            shard_id: "shardId-000000000002".into(),
            parent_shard_ids: vec!["shardId-000000000000".into()],
            hash_range: high,
        },
    ];
    // Split in half: the fake's answer at the end names these two children.
    api.split_in_half("stream", SHARD);
    let mut source = driver(&api, StartingPosition::TrimHorizon, config().max_records(3));
    let first = source.next_batch().await.unwrap();
    assert_eq!(first.shard_end, None);
    let last = source.next_batch().await.unwrap();
    assert_eq!(summary(&last), standard_delivery()[5..]);
    assert_eq!(last.shard_end.as_ref(), Some(&children));
    let calls = api.call_log().len();
    for _ in 0..3 {
        let again = source.next_batch().await.unwrap();
        assert!(again.is_empty());
        assert_eq!(again.shard_end.as_ref(), Some(&children));
    }
    assert_eq!(api.call_log().len(), calls, "no call after the end");
    assert_eq!(source.counters.snapshot().list_shards_calls, 0);
}

#[tokio::test(start_paused = true)]
async fn shard_end_without_children_in_the_response_asks_list_shards() {
    let api = shard_with(vec![plain(1, "only")]);
    let range = |start, end| HashRange::new(start, end).unwrap();
    // Answers at the end name no child; ListShards lists these (a lineage written by hand).
    api.set_child_shards_in_answers(false);
    let listed = [
        // Not a child: another shard's child.
        ShardSummary {
            shard_id: "shardId-000000000003".into(),
            parent_shard_id: Some("shardId-000000000001".into()),
            adjacent_parent_shard_id: None,
            hash_range: range(0, 10),
            open: true,
        },
        // A merge of this shard with its neighbour.
        ShardSummary {
            shard_id: "shardId-000000000004".into(),
            parent_shard_id: Some("shardId-000000000002".into()),
            adjacent_parent_shard_id: Some("shardId-000000000000".into()),
            hash_range: range(0, u128::MAX),
            open: true,
        },
    ];
    for shard in listed {
        api.add_shard("stream", shard);
    }
    api.close_shard("stream", SHARD);
    api.fail(Operation::ListShards, Class::Throttled, 2);
    let mut source = driver(&api, StartingPosition::TrimHorizon, config());
    let batch = source.next_batch().await.unwrap();
    assert_eq!(summary(&batch).len(), 1);
    assert_eq!(
        batch.shard_end,
        Some(vec![ChildShard {
            shard_id: "shardId-000000000004".into(),
            parent_shard_ids: vec!["shardId-000000000002".into(), "shardId-000000000000".into()],
            hash_range: range(0, u128::MAX),
        }])
    );
    let stats = source.counters.snapshot();
    assert_eq!(stats.list_shards_calls, 3);
    assert_eq!(stats.throttled, 2);
}

#[tokio::test(start_paused = true)]
async fn hash_range_filters_each_sub_record() {
    let lower = HashRange::new(0, u128::MAX / 2).unwrap();
    let records = vec![
        aggregate(
            1,
            &[
                ("a", "low-1", Some(1)),
                ("b", "high-1", Some(u128::MAX)),
                ("c", "low-2", Some(u128::MAX / 2)),
                ("d", "high-2", Some(u128::MAX / 2 + 1)),
            ],
        ),
        // Plain records are never filtered: Kinesis routed them here.
        plain(2, "plain"),
    ];
    let api = shard_with(records);
    let mut source = driver_in_range(&api, StartingPosition::TrimHorizon, config(), Some(lower));
    let delivered = read_to_tip(&mut source).await;
    assert_eq!(
        delivered,
        vec![
            (seq(1), Some(0), "low-1".into()),
            (seq(1), Some(2), "low-2".into()),
            (seq(2), None, "plain".into()),
        ]
    );
    assert_eq!(source.counters.snapshot().records_filtered, 2);
}

#[tokio::test(start_paused = true)]
async fn prefetch_runs_at_most_one_batch_ahead_and_stops_when_dropped() {
    let records: Vec<_> = (1..=50).map(|n| plain(n, "x")).collect();
    let api = shard_with(records);
    let mut source = driver(
        &api,
        StartingPosition::TrimHorizon,
        config().prefetch(true).max_records(1),
    );
    let first = source.next_batch().await.unwrap();
    assert_eq!(summary(&first)[0].0, seq(1));
    // The caller is busy: the task fetches one batch ahead, then waits.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(api.calls(Operation::GetRecords).len(), 2);
    let second = source.next_batch().await.unwrap();
    assert_eq!(summary(&second)[0].0, seq(2));
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(api.calls(Operation::GetRecords).len(), 3);
    // Dropping the source aborts the task, which releases its API handle.
    drop(source);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(api.handles(), 1);
    assert_eq!(api.calls(Operation::GetRecords).len(), 3);
}

#[tokio::test(start_paused = true)]
async fn prefetch_overlaps_the_next_call_with_processing() {
    let records: Vec<_> = (1..=4).map(|n| plain(n, "x")).collect();
    let api = shard_with(records);
    api.set_delay(Operation::GetRecords, Duration::from_millis(500));
    let mut source = driver(
        &api,
        StartingPosition::TrimHorizon,
        config()
            .prefetch(true)
            .max_records(1)
            .min_time_between_calls(Duration::ZERO),
    );
    source.next_batch().await.unwrap();
    // "Process" for as long as a call takes: the next batch is then ready at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waited = Instant::now();
    let batch = source.next_batch().await.unwrap();
    assert_eq!(summary(&batch)[0].0, seq(2));
    assert_eq!(waited.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_next_batch_loses_and_repeats_nothing() {
    let api = shard_with(standard_records());
    api.set_delay(Operation::GetRecords, Duration::from_millis(500));
    let mut source = driver(&api, StartingPosition::TrimHorizon, config().max_records(2));
    let mut delivered = Vec::new();
    for _ in 0..3 {
        // Give up half-way through each call.
        let cancelled = tokio::time::timeout(Duration::from_millis(300), source.next_batch()).await;
        assert!(cancelled.is_err());
        delivered.extend(summary(&source.next_batch().await.unwrap()));
    }
    delivered.extend(read_to_tip(&mut source).await);
    assert_eq!(delivered, standard_delivery());
}

#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send::<PollingSource>();
    send_sync::<ShardBatch>();
    send_sync::<RetrievalError>();
    send_sync::<PollingConfig>();
    send_sync::<StreamId>();
    send_sync::<StartingPosition>();
}

#[tokio::test(start_paused = true)]
async fn a_dead_prefetch_task_is_reported_not_hung_on() {
    let api = shard_with(standard_records());
    api.set_panic(Operation::GetRecords, true);
    let mut source = driver(&api, StartingPosition::TrimHorizon, config().prefetch(true));
    let error = source.next_batch().await.unwrap_err();
    assert!(
        matches!(error, RetrievalError::PrefetchStopped),
        "{error:?}"
    );
    assert!(error.is_fatal());
    let again = source.next_batch().await.unwrap_err();
    assert!(
        matches!(again, RetrievalError::PrefetchStopped),
        "{again:?}"
    );
}
