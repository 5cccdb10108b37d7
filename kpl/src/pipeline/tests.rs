//! The pipeline's failure paths, each made to happen through the in-memory fake with paused
//! time: calls that never answer, tasks that panic, refreshes that hang or race a reshard,
//! misrouted aggregates, the TTL wherever a record waits, a slow link, and random faults with
//! splits and merges (a property test of order and completeness).

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;

use crate::testing::{CallFault, FakeKinesis, RandomFaults};
use crate::{
    ErrorClass, FailureReason, FlushError, MisroutedRecords, Producer, ProducerBuilder,
    RecordResult, SendError, UserRecord,
};

pub(super) const STREAM: &str = "orders";

pub(super) fn builder(fake: &FakeKinesis) -> ProducerBuilder {
    Producer::builder(STREAM)
        .kinesis_api(fake.clone())
        .linger(Duration::from_millis(10))
        .min_backoff(Duration::from_millis(5))
        .max_backoff(Duration::from_millis(100))
        .ordered(true)
        .jitter_seed(7)
}

fn record(i: usize, keys: usize) -> UserRecord {
    UserRecord::new(format!("key-{}", i % keys), format!("{i}"))
}

pub(super) async fn send_all(
    producer: &Producer,
    count: usize,
    keys: usize,
) -> Vec<crate::Receipt> {
    let mut receipts = Vec::with_capacity(count);
    for i in 0..count {
        receipts.push(producer.send(record(i, keys)).await.expect("accepted"));
    }
    receipts
}

pub(super) async fn results(receipts: Vec<crate::Receipt>) -> Vec<RecordResult> {
    let mut out = Vec::with_capacity(receipts.len());
    for receipt in receipts {
        out.push(receipt.await);
    }
    out
}

/// The indexes a filtering consumer reads, per key, first occurrences only, in read order;
/// and how many user records it reads in all.
pub(super) fn read_back(fake: &FakeKinesis, stream: &str) -> (HashMap<String, Vec<usize>>, usize) {
    let mut per_key: HashMap<String, Vec<usize>> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    for (_, _, key, data) in fake.user_records(stream) {
        total += 1;
        let index: usize = std::str::from_utf8(&data).unwrap().parse().unwrap();
        if seen.insert(index) {
            per_key.entry(key).or_default().push(index);
        }
    }
    (per_key, total)
}

pub(super) fn assert_in_order(per_key: &HashMap<String, Vec<usize>>) {
    for (key, indexes) in per_key {
        assert!(
            indexes.windows(2).all(|w| w[0] < w[1]),
            "{key} out of order: {indexes:?}"
        );
    }
}

pub(super) fn distinct(per_key: &HashMap<String, Vec<usize>>) -> usize {
    per_key.values().map(Vec::len).sum()
}

#[tokio::test(start_paused = true)]
async fn everything_sent_is_stored_once_in_order_and_flush_reports_it() {
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 4);
    let producer = builder(&fake).build().await.unwrap();
    let receipts = send_all(&producer, 5_000, 50).await;
    let report = producer.flush().await.unwrap();
    assert_eq!((report.stored, report.failed), (5_000, 0));
    assert!(report.all_stored());
    let results = results(receipts).await;
    assert!(results.iter().all(Result::is_ok));
    let (per_key, total) = read_back(&fake, STREAM);
    assert_eq!((distinct(&per_key), total), (5_000, 5_000));
    assert_in_order(&per_key);
    assert_eq!(producer.outstanding_records(), 0);
    let metrics = producer.metrics();
    assert_eq!(metrics.user_records_put, 5_000);
    assert!(metrics.user_records_per_kinesis_record > 10.0);
    producer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_call_that_never_answers_times_out_and_is_retried() {
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 2);
    fake.script([CallFault::Hang, CallFault::StoreThenHang]);
    let producer = builder(&fake)
        .request_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let results = results(send_all(&producer, 200, 10).await).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "bounded by timeouts"
    );
    assert!(results.iter().all(Result::is_ok));
    assert!(
        results
            .iter()
            .flatten()
            .any(|s| s.possibly_duplicated && s.attempt_count >= 2)
    );
    let metrics = producer.metrics();
    assert!(metrics.put_records_timed_out >= 2, "{metrics:?}");
    assert!(metrics.user_records_possibly_duplicated > 0);
    let (per_key, _) = read_back(&fake, STREAM);
    assert_eq!(distinct(&per_key), 200);
    assert_in_order(&per_key);
    producer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_put_records_task_that_panics_loses_nothing() {
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 2);
    fake.script([CallFault::Panic, CallFault::Panic]);
    let producer = builder(&fake).build().await.unwrap();
    let results = results(send_all(&producer, 300, 7).await).await;
    assert!(
        results.iter().all(Result::is_ok),
        "{:?}",
        results.iter().find(|r| r.is_err())
    );
    let retried = results
        .iter()
        .flatten()
        .filter(|s| s.attempt_count > 1)
        .count();
    assert!(retried > 0);
    let failure = results
        .iter()
        .flatten()
        .flat_map(|s| &s.attempts)
        .find_map(|a| a.error_code.as_deref().filter(|c| *c == "TaskFailed"));
    assert_eq!(failure, Some("TaskFailed"));
    assert_eq!(producer.outstanding_records(), 0, "the budget came back");
    let (per_key, _) = read_back(&fake, STREAM);
    assert_eq!(distinct(&per_key), 300);
    assert_in_order(&per_key);
    producer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn build_is_bounded_when_list_shards_never_answers() {
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 1);
    fake.set_list_shards_hang(true);
    let error = builder(&fake)
        .list_shards_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect_err("no map");
    assert_eq!(error.kinesis_error().map(|e| e.code()), Some("Timeout"));

    let missing = Producer::builder("nope")
        .kinesis_api(FakeKinesis::new())
        .build()
        .await
        .expect_err("no such stream");
    assert_eq!(
        missing.kinesis_error().map(|e| e.class()),
        Some(ErrorClass::NotFound)
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_refresh_never_holds_dispatch_forever() {
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 2);
    let producer = builder(&fake)
        .list_shards_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    // The producer's map is now stale: a split it does not know of.
    let first = fake.open_shards(STREAM)[0].shard_id.clone();
    fake.split_in_half(STREAM, &first);
    fake.set_list_shards_hang(true);
    let receipts = send_all(&producer, 400, 40).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Refreshes keep timing out; the stale map is used rather than stalling.
    fake.set_list_shards_hang(false);
    let results = results(receipts).await;
    assert!(
        results.iter().all(Result::is_ok),
        "{:?}",
        results.iter().find(|r| r.is_err())
    );
    let (per_key, _) = read_back(&fake, STREAM);
    assert_eq!(distinct(&per_key), 400);
    assert_in_order(&per_key);
    producer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_misrouted_aggregate_is_sent_again_whole_so_every_consumer_reads_every_record() {
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 1);
    let producer = builder(&fake).build().await.unwrap();
    let parent = fake.open_shards(STREAM)[0].shard_id.clone();
    fake.split_in_half(STREAM, &parent);
    let results = results(send_all(&producer, 1_000, 100).await).await;
    assert!(results.iter().all(Result::is_ok));
    let misrouted = results
        .iter()
        .flatten()
        .filter(|s| {
            s.attempts
                .iter()
                .any(|a| a.error_code.as_deref() == Some("Misrouted"))
        })
        .count();
    assert!(
        misrouted > 0,
        "aggregates built for the parent landed in a child"
    );
    assert!(results.iter().flatten().all(|s| *s.shard_id != *parent));
    // A consumer that filters per record reads everything, in order.
    let (per_key, _) = read_back(&fake, STREAM);
    assert_eq!(distinct(&per_key), 1_000);
    assert_in_order(&per_key);
    // So does the Java KCL, which drops a whole aggregate at its first foreign record.
    let java_reads = java_kcl_reads(&fake, STREAM);
    assert_eq!(java_reads, 1_000);
    producer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_aggregate_landing_on_a_shard_that_owns_all_of_it_is_stored_once() {
    // Aggregates built for two neighbours land on the shard they were merged into, which owns
    // every record of them: nothing is misrouted, nothing is sent twice, whatever the policy.
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 2);
    let producer = builder(&fake).build().await.unwrap();
    let open = fake.open_shards(STREAM);
    let merged = fake.merge(STREAM, &open[0].shard_id, &open[1].shard_id);
    let results = results(send_all(&producer, 1_000, 100).await).await;
    assert!(results.iter().all(Result::is_ok));
    assert!(
        results.iter().flatten().all(|s| *s.shard_id == *merged),
        "everything lands on the merged shard"
    );
    assert!(
        results.iter().flatten().all(|s| !s.possibly_duplicated),
        "no record is sent again"
    );
    let (per_key, total) = read_back(&fake, STREAM);
    assert_eq!(distinct(&per_key), 1_000);
    assert_eq!(total, 1_000, "nothing stored twice");
    assert_in_order(&per_key);
    assert_eq!(java_kcl_reads(&fake, STREAM), 1_000);
    producer.shutdown().await;
}

/// Distinct user records a consumer dropping whole aggregates with a foreign record reads.
fn java_kcl_reads(fake: &FakeKinesis, stream: &str) -> usize {
    use aggregation_proto::{ReceivedRecord, deaggregate, partition_key_hash};
    let mut seen = std::collections::HashSet::new();
    for (shard, records) in fake.stored(stream) {
        for record in records {
            let users: Vec<_> = deaggregate(&ReceivedRecord::new(
                record.partition_key.clone(),
                record.data.clone(),
            ));
            if users.iter().any(|u| {
                u.is_aggregated()
                    && !shard
                        .hash_range
                        .contains(partition_key_hash(u.partition_key()))
            }) {
                continue;
            }
            for user in users {
                seen.insert(user.data_bytes());
            }
        }
    }
    seen.len()
}

#[tokio::test(start_paused = true)]
async fn resending_out_of_range_only_stores_owned_records_once() {
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 1);
    let producer = builder(&fake)
        .misrouted_records(MisroutedRecords::ResendOutOfRange)
        .build()
        .await
        .unwrap();
    let parent = fake.open_shards(STREAM)[0].shard_id.clone();
    fake.split_in_half(STREAM, &parent);
    let results = results(send_all(&producer, 1_000, 100).await).await;
    assert!(results.iter().all(Result::is_ok));
    let (per_key, total) = read_back(&fake, STREAM);
    assert_eq!(distinct(&per_key), 1_000);
    assert_eq!(total, 1_000, "a filtering consumer reads nothing twice");
    assert_in_order(&per_key);
    producer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn records_waiting_for_their_rate_limit_expire_at_their_ttl() {
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 1);
    let producer = builder(&fake)
        .aggregation(false)
        .rate_limit_percent(1) // 10 records/s
        .record_ttl(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    let results = results(send_all(&producer, 200, 200).await).await;
    let expired = results
        .iter()
        .filter(|r| r.as_ref().is_err_and(|f| f.is_expired()))
        .count();
    let stored = results.iter().filter(|r| r.is_ok()).count();
    assert!(expired > 100, "expired while waiting: {expired}");
    assert!((10..=40).contains(&stored), "about 2 s at 10/s: {stored}");
    assert_eq!(expired + stored, 200);
    let failure = results.into_iter().find_map(Result::err).unwrap();
    assert!(failure.record().is_some(), "the record comes back");
    assert_eq!(failure.attempt_count(), 0, "never sent");
    producer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_ttl_that_never_ends_keeps_retrying_with_bounded_attempts() {
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 1);
    let mut faults = RandomFaults::none();
    faults.throttle_call = 1.0;
    fake.set_random_faults(faults, 1);
    let producer = builder(&fake)
        .record_ttl(Duration::MAX)
        .max_backoff(Duration::from_millis(20))
        .build()
        .await
        .unwrap();
    let receipt = producer.send(record(0, 1)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    fake.set_random_faults(RandomFaults::none(), 1);
    let stored = receipt.await.unwrap();
    assert!(stored.attempt_count > crate::MAX_KEPT_ATTEMPTS as u32);
    assert_eq!(stored.attempts.len(), crate::MAX_KEPT_ATTEMPTS);
    producer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn rejected_records_fail_at_once_and_give_the_record_back() {
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 1);
    fake.script([CallFault::Error {
        class: ErrorClass::AccessDenied,
        code: "AccessDeniedException".into(),
    }]);
    let producer = builder(&fake).build().await.unwrap();
    let receipt = producer.send(record(3, 1)).await.unwrap();
    let failure = receipt.await.unwrap_err();
    assert!(
        matches!(failure.reason(), FailureReason::Rejected { code, .. } if &**code == "AccessDeniedException")
    );
    assert_eq!(failure.into_record().unwrap().data, "3");
    producer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn one_producer_writes_to_several_streams() {
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 2);
    fake.create_stream("audit", 3);
    let producer = builder(&fake).build().await.unwrap();
    let audit = producer.for_stream("audit");
    assert_eq!(audit.stream().as_str(), "audit");
    let mut receipts = send_all(&producer, 100, 10).await;
    receipts.extend(send_all(&audit, 50, 5).await);
    let missing = producer.for_stream("missing");
    let lost = missing.send(record(0, 1)).await.unwrap();
    assert!(results(receipts).await.iter().all(Result::is_ok));
    let failure = lost.await.unwrap_err();
    assert!(
        matches!(failure.reason(), FailureReason::Rejected { code, .. } if &**code == "ResourceNotFoundException")
    );
    assert_eq!(read_back(&fake, STREAM).1, 100);
    assert_eq!(read_back(&fake, "audit").1, 50);
    assert_eq!(producer.metrics().user_records_put, 150);
    producer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn extreme_durations_work() {
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 1);
    let producer = builder(&fake)
        .linger(Duration::MAX)
        .shard_map_refresh_interval(Duration::MAX)
        .record_ttl(Duration::MAX)
        .build()
        .await
        .unwrap();
    let receipts = send_all(&producer, 10, 2).await;
    // Nothing lingers past a flush.
    let report = producer.flush().await.unwrap();
    assert_eq!(report.stored, 10);
    assert!(results(receipts).await.iter().all(Result::is_ok));
    producer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn flush_timeout_bounds_the_wait() {
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 1);
    fake.set_link(None, Duration::from_secs(60));
    let producer = builder(&fake)
        .request_timeout(Duration::from_secs(120))
        // Longer than the answer takes: a call is never waited for past its records' TTL.
        .record_ttl(Duration::from_secs(300))
        .build()
        .await
        .unwrap();
    let receipt = producer.send(record(0, 1)).await.unwrap();
    let outcome = producer.flush_timeout(Duration::from_secs(1)).await;
    assert_eq!(outcome, Err(FlushError::TimedOut(Duration::from_secs(1))));
    assert!(receipt.await.is_ok());
    producer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_pipeline_answers_everything_with_the_cause() {
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 1);
    // Slow answers keep records inside the pipeline when it fails.
    fake.set_link(None, Duration::from_secs(5));
    let producer = builder(&fake).build().await.unwrap();
    let receipts = send_all(&producer, 50, 5).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(producer.shared_inbox_crash());
    for result in results(receipts).await {
        let failure = result.unwrap_err();
        assert!(
            matches!(failure.reason(), FailureReason::Stopped { cause } if cause.contains("injected crash")),
            "{failure}"
        );
    }
    match producer.send(record(1, 1)).await {
        Err(SendError::Stopped { cause, record }) => {
            assert!(cause.contains("injected crash"));
            assert_eq!(record.data, "1");
        }
        other => panic!("expected Stopped, got {other:?}"),
    }
    assert!(matches!(
        producer.flush().await,
        Err(FlushError::Stopped { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_slow_link_stores_almost_nothing_twice() {
    // The new user's run of issue 9 against kinesis-mock: 20,000 records of 10 B to 3 KB over
    // 400 keys, 4 shards, one link of about 1 MB/s.
    let (duplicates, elapsed, inversions, failed) = slow_link_run(true, true).await;
    assert_eq!(failed, 0);
    assert!(duplicates <= 200, "at most 1 % stored twice: {duplicates}");
    assert_eq!(inversions, 0);
    assert!(elapsed < Duration::from_secs(90), "{elapsed:?}");
    // Without order, calls carry 5 MiB each: adaptation alone keeps them from timing out.
    let (duplicates, elapsed, _, failed) = slow_link_run(true, false).await;
    assert_eq!(failed, 0);
    assert!(duplicates <= 200, "at most 1 % stored twice: {duplicates}");
    assert!(elapsed < Duration::from_secs(90), "{elapsed:?}");
}

#[tokio::test(start_paused = true)]
async fn without_adaptation_a_slow_link_times_calls_out_and_stores_records_twice() {
    let (duplicates, _, _, failed) = slow_link_run(false, false).await;
    assert!(
        duplicates > 1_000 && failed > 0,
        "the behaviour adaptation fixes: {duplicates} stored twice, {failed} failed"
    );
}

/// Stored twice, time taken, key-order inversions, records failed.
async fn slow_link_run(adaptive: bool, ordered: bool) -> (usize, Duration, usize, usize) {
    use rand::{Rng, SeedableRng};
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 4);
    fake.set_link(Some(1_000_000.0), Duration::from_millis(20));
    let producer = Producer::builder(STREAM)
        .kinesis_api(fake.clone())
        .adaptive_concurrency(adaptive)
        .ordered(ordered)
        .record_ttl(Duration::from_secs(600))
        .jitter_seed(3)
        .build()
        .await
        .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let started = tokio::time::Instant::now();
    let mut receipts = Vec::new();
    for i in 0..20_000usize {
        let size = rng.random_range(10..=3_000);
        let mut data = format!("{i}:").into_bytes();
        data.resize(size.max(data.len()), b'x');
        let key = format!("key-{}", rng.random_range(0..400));
        receipts.push(producer.send(UserRecord::new(key, data)).await.unwrap());
    }
    let results = results(receipts).await;
    let elapsed = started.elapsed();
    let failed = results.iter().filter(|r| r.is_err()).count();
    producer.shutdown().await;
    eprintln!(
        "slow link, adaptive {adaptive}, ordered {ordered}: {elapsed:?}, {:?}",
        producer.metrics()
    );
    let mut seen = std::collections::HashSet::new();
    let mut last: HashMap<String, usize> = HashMap::new();
    let (mut stored, mut inversions) = (0, 0);
    for (_, _, key, data) in fake.user_records(STREAM) {
        stored += 1;
        let text = String::from_utf8_lossy(&data);
        let index: usize = text.split(':').next().unwrap().parse().unwrap();
        if !seen.insert(index) {
            continue;
        }
        let entry = last.entry(key).or_insert(index);
        if index < *entry {
            inversions += 1;
        } else {
            *entry = index;
        }
    }
    (stored - seen.len(), elapsed, inversions, failed)
}

/// One step of the random scenario.
#[derive(Debug, Clone)]
enum Step {
    Send { count: usize },
    Split,
    Merge,
    Wait { millis: u64 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (1usize..300).prop_map(|count| Step::Send { count }),
        1 => Just(Step::Split),
        1 => Just(Step::Merge),
        2 => (1u64..2_000).prop_map(|millis| Step::Wait { millis }),
    ]
}

fn faults() -> impl Strategy<Value = RandomFaults> {
    (
        0.0..0.3f64,
        0.0..0.2f64,
        0.0..0.1f64,
        0.0..0.1f64,
        0.0..0.1f64,
        0.0..0.05f64,
        0.0..0.05f64,
    )
        .prop_map(|(te, ie, tc, ic, lose, hang, store_hang)| {
            // Built field by field: `RandomFaults` is `#[non_exhaustive]` outside its crate.
            let mut faults = RandomFaults::none();
            faults.throttle_entry = te;
            faults.internal_entry = ie;
            faults.throttle_call = tc;
            faults.internal_call = ic;
            faults.lose_answer = lose;
            faults.hang = hang;
            faults.store_then_hang = store_hang;
            faults
        })
}

/// Splits the widest open shard or merges two neighbours.
fn reshard(fake: &FakeKinesis, merge: bool) {
    let mut open = fake.open_shards(STREAM);
    open.sort_by_key(|s| s.hash_range.start());
    if merge {
        if let Some(pair) = open.windows(2).next() {
            fake.merge(STREAM, &pair[0].shard_id, &pair[1].shard_id);
        }
    } else if let Some(widest) = open
        .iter()
        .max_by_key(|s| s.hash_range.end() - s.hash_range.start())
        && widest.hash_range.end() > widest.hash_range.start()
    {
        fake.split_in_half(STREAM, &widest.shard_id);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random faults, splits and merges: every record is answered once, every success is in the
    /// stream, nothing is lost, and a filtering consumer reads every key in the order sent.
    #[test]
    fn order_and_completeness_hold_under_random_faults_and_reshards(
        steps in prop::collection::vec(step(), 1..12),
        faults in faults(),
        lanes in prop_oneof![Just(1usize), Just(4), Just(8)],
        aggregation in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async move {
            let fake = FakeKinesis::new();
            fake.create_stream(STREAM, 2);
            fake.set_random_faults(faults, seed);
            let producer = builder(&fake)
                .ordering_lanes(lanes)
                .aggregation(aggregation)
                .request_timeout(Duration::from_millis(500))
                .list_shards_timeout(Duration::from_secs(1))
                .record_ttl(Duration::MAX)
                .shard_map_refresh_interval(Duration::from_secs(5))
                .jitter_seed(seed)
                .build()
                .await
                .unwrap();
            let mut receipts = Vec::new();
            let mut sent = 0;
            for step in steps {
                match step {
                    Step::Send { count } => {
                        for _ in 0..count {
                            receipts.push(producer.send(record(sent, 13)).await.unwrap());
                            sent += 1;
                        }
                    }
                    Step::Split => reshard(&fake, false),
                    Step::Merge => reshard(&fake, true),
                    Step::Wait { millis } => tokio::time::sleep(Duration::from_millis(millis)).await,
                }
            }
            // Faults stop eventually (a never-ending TTL would otherwise wait forever).
            tokio::time::sleep(Duration::from_secs(5)).await;
            fake.set_random_faults(RandomFaults::none(), seed);
            let results = results(receipts).await;
            producer.shutdown().await;
            assert!(results.iter().all(Result::is_ok), "{:?}", results.iter().find(|r| r.is_err()));
            assert_eq!(producer.outstanding_records(), 0);
            let (per_key, _) = read_back(&fake, STREAM);
            assert_eq!(distinct(&per_key), sent, "nothing lost");
            assert_in_order(&per_key);
            assert_eq!(java_kcl_reads(&fake, STREAM), sent, "nothing lost for the Java KCL either");
        });
    }
}

#[tokio::test(start_paused = true)]
async fn a_released_retry_seals_no_other_shards_aggregate() {
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 2);
    fake.script([CallFault::FailEntries {
        positions: vec![0],
        code: "InternalFailure".into(),
    }]);
    let producer = builder(&fake)
        .ordered(false)
        .linger(Duration::from_secs(60))
        .max_aggregate_count(5)
        // One Kinesis record is a full batch: a sealed aggregate goes at once.
        .max_batch_records(1)
        .build()
        .await
        .unwrap();
    let on = |shard: u128, i: usize| {
        UserRecord::new("k", format!("{i}")).with_explicit_hash_key(shard.to_string())
    };
    // Three records lingering on the second shard...
    let mut lingering = Vec::new();
    for i in 0..3 {
        lingering.push(producer.send(on(u128::MAX, i)).await.unwrap());
    }
    // ... and a full aggregate on the first (the sixth record seals it), failed once, retried,
    // stored.
    let mut first = Vec::new();
    for i in 3..9 {
        first.push(producer.send(on(1, i)).await.unwrap());
    }
    let sixth = first.pop().unwrap();
    let stored = results(first).await;
    assert!(
        stored
            .iter()
            .all(|r| r.as_ref().is_ok_and(|s| s.attempt_count == 2))
    );
    // The retry sealed no other aggregate: those records still linger.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(producer.outstanding_records(), 4);
    assert_eq!(producer.flush().await.unwrap().stored, 4);
    assert!(sixth.await.is_ok());
    assert!(results(lingering).await.iter().all(Result::is_ok));
    producer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn without_the_listing_at_build_the_first_records_wait_for_the_map_then_aggregate() {
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 4);
    let producer = builder(&fake)
        .list_shards_at_build(false)
        .build()
        .await
        .unwrap();
    assert_eq!(fake.list_shards_calls(), 0, "build called Kinesis");
    let receipts = send_all(&producer, 1_000, 20).await;
    let report = producer.flush().await.unwrap();
    assert_eq!((report.stored, report.failed), (1_000, 0));
    assert_eq!(fake.list_shards_calls(), 1);
    let ranges: HashMap<String, aggregation_proto::HashRange> = fake
        .open_shards(STREAM)
        .into_iter()
        .map(|shard| (shard.shard_id, shard.hash_range))
        .collect();
    for (i, result) in results(receipts).await.into_iter().enumerate() {
        let stored = result.expect("stored");
        let hash = record(i, 20).hash_key().unwrap();
        assert!(
            ranges[&*stored.shard_id].contains(hash),
            "record {i} on the wrong shard"
        );
        assert_eq!(stored.attempt_count, 1, "record {i} was sent again");
    }
    let (per_key, total) = read_back(&fake, STREAM);
    assert_eq!((distinct(&per_key), total), (1_000, 1_000));
    assert_in_order(&per_key);
    assert!(producer.metrics().user_records_per_kinesis_record > 10.0);
    producer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn without_the_listing_at_build_a_missing_stream_fails_its_records_not_build() {
    let producer = Producer::builder("nope")
        .kinesis_api(FakeKinesis::new())
        .list_shards_at_build(false)
        .build()
        .await
        .expect("build does not call Kinesis");
    let receipt = producer.send(record(0, 1)).await.unwrap();
    let failure = receipt.await.unwrap_err();
    assert!(
        matches!(failure.reason(), FailureReason::Rejected { code, .. } if &**code == "ResourceNotFoundException"),
        "{:?}",
        failure.reason()
    );
    producer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn without_the_listing_at_build_a_hung_listing_still_leaves_flush_bounded() {
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 1);
    fake.set_list_shards_hang(true);
    let producer = builder(&fake)
        .list_shards_at_build(false)
        .list_shards_timeout(Duration::from_secs(2))
        .record_ttl(Duration::from_secs(10))
        .build()
        .await
        .unwrap();
    let receipt = producer.send(record(0, 1)).await.unwrap();
    let started = tokio::time::Instant::now();
    let outcome = producer.flush_timeout(Duration::from_secs(1)).await;
    assert_eq!(outcome, Err(FlushError::TimedOut(Duration::from_secs(1))));
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    // The listing timed out: the record goes without a map (routed by Kinesis) rather than
    // waiting for its TTL.
    let stored = receipt.await.expect("sent without a map");
    assert!(stored.without_shard_map);
    assert!(
        started.elapsed() <= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // Once Kinesis answers, records go through with a map.
    fake.set_list_shards_hang(false);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let receipt = producer.send(record(1, 1)).await.unwrap();
    let stored = receipt.await.expect("stored");
    assert!(!stored.without_shard_map);
    producer.shutdown().await;
}
