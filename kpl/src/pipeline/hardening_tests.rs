//! Failure paths a line-by-line read against the C++ KPL found, each made to happen through the
//! in-memory fake with paused time: zero linger, a throttled or expired-credential listing or
//! call, a listing the credentials may not make, a flush behind a throttled record, and what a
//! failed record says about being stored.
//!
//! A test whose bug is a loop that never yields would hang the test binary instead of failing:
//! those run on a thread of their own, watched by a real-time bound.

use std::sync::mpsc;
use std::time::Duration;

use kinesis_common::classify_error;

use super::tests::{assert_in_order, distinct, read_back, results, send_all};
use crate::testing::{CallFault, FakeKinesis};
use crate::{ErrorClass, FailureReason, Producer, ProducerBuilder, RecordResult, UserRecord};

const STREAM: &str = "orders";

fn builder(fake: &FakeKinesis) -> ProducerBuilder {
    Producer::builder(STREAM)
        .kinesis_api(fake.clone())
        .min_backoff(Duration::from_millis(5))
        .max_backoff(Duration::from_millis(100))
        .jitter_seed(7)
}

/// Runs `test` on a paused-time runtime of its own thread; fails if it has not finished after
/// `limit` of real time (a busy loop never lets paused time advance, so it would hang forever).
fn within_real_time<F>(limit: Duration, test: impl FnOnce() -> F + Send + 'static)
where
    F: std::future::Future<Output = ()>,
{
    let (done, finished) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime");
        runtime.block_on(test());
        let _ = done.send(());
    });
    match finished.recv_timeout(limit) {
        Ok(()) => worker.join().expect("the test thread"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The test panicked: report its panic.
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("no progress within {limit:?} of real time: the pipeline spins or hangs")
        }
    }
}

async fn send_and_wait(producer: &Producer, count: usize, keys: usize) -> Vec<RecordResult> {
    results(send_all(producer, count, keys).await).await
}

fn zero_linger(ordered: bool) {
    within_real_time(Duration::from_secs(60), move || async move {
        let fake = FakeKinesis::new();
        fake.create_stream(STREAM, 2);
        fake.set_link(None, Duration::from_millis(20));
        let producer = builder(&fake)
            .ordered(ordered)
            .linger(Duration::ZERO)
            .build()
            .await
            .expect("built");
        let started = tokio::time::Instant::now();
        let results = send_and_wait(&producer, 200, 2).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        // 200 records of two keys at 20 ms a round trip: well within a few seconds.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        let (per_key, _) = read_back(&fake, STREAM);
        assert_eq!(distinct(&per_key), 200);
        if ordered {
            assert_in_order(&per_key);
        }
        producer.shutdown().await;
    });
}

/// `linger(ZERO)` with order kept: the due aggregate of a busy lane was pushed back at `now`
/// and looked at again, forever (found spinning at 100 % of a core for ten minutes).
#[test]
fn zero_linger_with_order_answers_every_record() {
    zero_linger(true);
}

#[test]
fn zero_linger_without_order_answers_every_record() {
    zero_linger(false);
}

/// A fleet deploy meets ListShards' per-stream limit: a throttled (or failed) listing at build
/// is retried, not the end of the build.
#[tokio::test(start_paused = true)]
async fn build_retries_a_throttled_or_failed_listing() {
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 2);
    fake.script_list_shards([
        Some(ErrorClass::Throttled),
        Some(ErrorClass::Transient),
        Some(ErrorClass::Throttled),
    ]);
    let producer = builder(&fake).build().await.expect("built after retries");
    assert_eq!(fake.list_shards_calls(), 4);
    let results = send_and_wait(&producer, 10, 3).await;
    assert!(results.iter().all(Result::is_ok));
    producer.shutdown().await;
}

/// The retries stay within `list_shards_timeout`, and the error says what kept failing.
#[tokio::test(start_paused = true)]
async fn build_gives_up_on_a_throttled_listing_at_its_timeout() {
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 2);
    fake.script_list_shards((0..10_000).map(|_| Some(ErrorClass::Throttled)));
    let started = tokio::time::Instant::now();
    let error = builder(&fake)
        .list_shards_timeout(Duration::from_secs(3))
        .build()
        .await
        .expect_err("throttled throughout");
    assert!(
        started.elapsed() <= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(fake.list_shards_calls() > 3, "{}", fake.list_shards_calls());
    assert_eq!(
        error.kinesis_error().map(|e| e.class()),
        Some(ErrorClass::Throttled)
    );
}

/// A missing stream is not retried.
#[tokio::test(start_paused = true)]
async fn build_fails_at_once_for_a_missing_stream() {
    let fake = FakeKinesis::new();
    let error = builder(&fake).build().await.expect_err("no stream");
    assert_eq!(fake.list_shards_calls(), 1);
    assert_eq!(
        error.kinesis_error().map(|e| e.class()),
        Some(ErrorClass::NotFound)
    );
}

/// Whole-call errors that come from stale credentials or a stale signature (a token rotation,
/// a clock jump, a Lambda thaw) are retried within the TTL, classified by the one table.
#[tokio::test(start_paused = true)]
async fn expired_credentials_and_signatures_are_retried() {
    for (code, message) in [
        (
            "ExpiredTokenException",
            "The security token included in the request is expired",
        ),
        ("RequestExpired", "Request has expired"),
        (
            "InvalidSignatureException",
            "Signature expired: 20261207T100000Z is now earlier than 20261207T100500Z",
        ),
        ("KMSThrottlingException", "Rate exceeded for KMS key"),
    ] {
        let class = classify_error("PutRecords", code, message).expect("classified");
        let fake = FakeKinesis::new();
        fake.create_stream(STREAM, 2);
        fake.script([
            CallFault::Error {
                class,
                code: code.into(),
            },
            CallFault::Error {
                class,
                code: code.into(),
            },
        ]);
        let producer = builder(&fake).build().await.expect("built");
        let results = send_and_wait(&producer, 300, 7).await;
        let stored = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(
            stored,
            300,
            "{code}: {:?}",
            results.iter().find(|r| r.is_err())
        );
        let retried = results
            .iter()
            .flatten()
            .filter(|s| s.attempt_count > 1)
            .count();
        assert!(retried > 0, "{code}: nothing was retried");
        producer.shutdown().await;
    }
}

/// Access denied, a disabled KMS key and a missing stream stay permanent.
#[tokio::test(start_paused = true)]
async fn permanent_call_errors_reject_at_once() {
    for code in [
        "AccessDeniedException",
        "KMSDisabledException",
        "ResourceNotFoundException",
    ] {
        let class = classify_error("PutRecords", code, "").expect("classified");
        let fake = FakeKinesis::new();
        fake.create_stream(STREAM, 1);
        fake.script([CallFault::Error {
            class,
            code: code.into(),
        }]);
        let producer = builder(&fake).build().await.expect("built");
        let results = send_and_wait(&producer, 5, 1).await;
        for result in &results {
            let failure = result.as_ref().expect_err("rejected");
            assert!(
                matches!(failure.reason(), FailureReason::Rejected { code: c, .. } if &**c == code),
                "{failure}"
            );
            assert_eq!(failure.attempt_count(), 1);
            assert!(!failure.may_be_stored(), "{code}: refused, so not stored");
        }
        producer.shutdown().await;
    }
}

/// Many IAM policies allow PutRecords and not ListShards: the producer builds, sends every
/// record alone (Kinesis routes it) in order per key, and aggregates once a listing succeeds.
#[tokio::test(start_paused = true)]
async fn a_denied_listing_sends_unaggregated_until_a_map_comes() {
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 4);
    // Build's listing and the first refreshes are refused; later ones succeed.
    fake.script_list_shards((0..8).map(|_| Some(ErrorClass::AccessDenied)));
    let producer = builder(&fake)
        .ordered(true)
        .build()
        .await
        .expect("builds without ListShards");
    let results = send_and_wait(&producer, 200, 5).await;
    let successes: Vec<_> = results
        .iter()
        .map(|r| r.as_ref().expect("stored"))
        .collect();
    assert!(successes.iter().all(|s| s.without_shard_map));
    assert!(successes.iter().all(|s| s.sub_sequence_number.is_none()));
    assert_eq!(
        producer.metrics().user_records_put_without_shard_map,
        200,
        "counted"
    );
    assert_in_order(&read_back(&fake, STREAM).0);
    // The refreshes go on with backoff; once one succeeds, records aggregate again.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(
        fake.list_shards_calls() >= 9,
        "{}",
        fake.list_shards_calls()
    );
    let later = send_and_wait(&producer, 200, 5).await;
    let later: Vec<_> = later.iter().map(|r| r.as_ref().expect("stored")).collect();
    assert!(later.iter().all(|s| !s.without_shard_map));
    assert!(
        later.iter().any(|s| s.sub_sequence_number.is_some()),
        "aggregated"
    );
    producer.shutdown().await;
}

/// The same when the listing is only refused after build (`list_shards_at_build(false)`, a
/// Lambda cold start): the records are not held until their TTL.
#[tokio::test(start_paused = true)]
async fn a_denied_refresh_without_a_map_does_not_hold_records_until_their_ttl() {
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 2);
    fake.script_list_shards((0..100).map(|_| Some(ErrorClass::AccessDenied)));
    let producer = builder(&fake)
        .list_shards_at_build(false)
        .record_ttl(Duration::from_secs(5))
        .build()
        .await
        .expect("built");
    let started = tokio::time::Instant::now();
    let results = send_and_wait(&producer, 20, 3).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    producer.shutdown().await;
}

/// A record whose attempt's answer never came, then expired, says it may be stored.
#[tokio::test(start_paused = true)]
async fn a_failed_record_says_whether_it_may_be_stored() {
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 1);
    let throttled = || CallFault::Error {
        class: ErrorClass::Throttled,
        code: "ProvisionedThroughputExceededException".into(),
    };
    fake.script(
        std::iter::once(CallFault::LoseAnswer).chain(std::iter::repeat_n(throttled(), 1_000)),
    );
    let producer = builder(&fake)
        .record_ttl(Duration::from_secs(2))
        .build()
        .await
        .expect("built");
    let results = send_and_wait(&producer, 3, 1).await;
    for result in &results {
        let failure = result.as_ref().expect_err("expired");
        assert!(failure.is_expired());
        assert!(failure.may_be_stored(), "its first answer was lost");
        assert!(failure.to_string().contains("may be stored"), "{failure}");
    }
    producer.shutdown().await;

    // Only throttled: never stored.
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 1);
    fake.script(std::iter::repeat_n(throttled(), 1_000));
    let producer = builder(&fake)
        .record_ttl(Duration::from_secs(2))
        .build()
        .await
        .expect("built");
    let results = send_and_wait(&producer, 3, 1).await;
    for result in &results {
        let failure = result.as_ref().expect_err("expired");
        assert!(!failure.may_be_stored());
    }
    producer.shutdown().await;
}

/// A flush waiting on a throttled record seals only what it waits for: records sent after it
/// still aggregate (every open aggregate used to be sealed on every tick until the flush
/// ended, so each later record went alone).
#[tokio::test(start_paused = true)]
async fn a_flush_seals_only_what_it_waits_for() {
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 1);
    let producer = builder(&fake)
        .linger(Duration::from_millis(200))
        .min_backoff(Duration::from_millis(500))
        .max_backoff(Duration::from_millis(500))
        .build()
        .await
        .expect("built");
    // The first record is throttled for a while: the flush waits on it.
    fake.script((0..6).map(|_| CallFault::Error {
        class: ErrorClass::Throttled,
        code: "ProvisionedThroughputExceededException".into(),
    }));
    let first = producer
        .send(UserRecord::new("a", "first"))
        .await
        .expect("accepted");
    let flushing = tokio::spawn({
        let producer = producer.clone();
        async move { producer.flush().await }
    });
    tokio::task::yield_now().await;
    let mut later = Vec::new();
    for i in 0..100 {
        later.push(
            producer
                .send(UserRecord::new(format!("k{i}"), "later"))
                .await
                .expect("accepted"),
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let report = flushing.await.expect("joined").expect("flushed");
    assert_eq!(report.stored, 1);
    assert!(first.await.is_ok());
    let mut kinesis_records = std::collections::HashSet::new();
    for receipt in later {
        let stored = receipt.await.expect("stored");
        kinesis_records.insert(stored.sequence_number.clone());
    }
    // 100 records over 200 ms with a 200 ms linger: one or two aggregates, not one per tick.
    assert!(
        kinesis_records.len() <= 3,
        "{} Kinesis records for 100 user records",
        kinesis_records.len()
    );
    producer.shutdown().await;
}

/// A call that never answers is given up at the TTL of its records, not at a request timeout
/// longer than that: their receipts answer at the TTL.
#[tokio::test(start_paused = true)]
async fn a_calls_timeout_never_outlives_the_ttl_of_its_records() {
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 1);
    fake.script(std::iter::repeat_n(CallFault::Hang, 100));
    let producer = builder(&fake)
        .request_timeout(Duration::from_secs(60))
        .record_ttl(Duration::from_secs(2))
        .build()
        .await
        .expect("built");
    let started = tokio::time::Instant::now();
    let results = send_and_wait(&producer, 5, 1).await;
    let elapsed = started.elapsed();
    for result in &results {
        let failure = result.as_ref().expect_err("never answered");
        assert!(failure.is_expired(), "{failure}");
        assert!(failure.may_be_stored(), "its call was never answered");
    }
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    producer.shutdown().await;
}

/// A flush that reaches the pipeline after a shutdown began waits for what it waited for and
/// reports it (it used to be dropped unread, and the flush reported nothing stored).
#[tokio::test(start_paused = true)]
async fn a_flush_racing_shutdown_reports_the_real_outcome() {
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 2);
    fake.set_link(None, Duration::from_millis(200));
    let producer = builder(&fake).build().await.expect("built");
    let mut receipts = Vec::new();
    for i in 0..10 {
        let record = UserRecord::new(format!("k{i}"), "x");
        receipts.push(producer.send(record).await.expect("accepted"));
    }
    let stopping = tokio::spawn({
        let producer = producer.clone();
        async move { producer.shutdown().await }
    });
    // The pipeline takes the shutdown in; the records are still on their way.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!stopping.is_finished());
    let report = producer.flush().await.expect("a report");
    assert_eq!((report.stored, report.failed), (10, 0), "{report:?}");
    stopping.await.expect("shut down");
    for receipt in receipts {
        assert!(receipt.await.is_ok());
    }
}

/// A stream that does not exist (deleted, or a typo in `for_stream`) fails its records and is
/// not listed again every half minute for the producer's lifetime; a later record for it asks
/// once more.
#[tokio::test(start_paused = true)]
async fn a_missing_stream_stops_being_refreshed() {
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 1);
    let producer = builder(&fake)
        .shard_map_refresh_interval(Duration::MAX)
        .build()
        .await
        .expect("built");
    let gone = producer.for_stream("gone");
    let receipt = gone
        .send(UserRecord::new("k", "x"))
        .await
        .expect("accepted");
    let failure = receipt.await.expect_err("no such stream");
    assert!(
        matches!(failure.reason(), FailureReason::Rejected { code, .. } if &**code == "ResourceNotFoundException"),
        "{failure}"
    );
    let calls = fake.list_shards_calls();
    tokio::time::sleep(Duration::from_secs(3_600)).await;
    assert_eq!(
        fake.list_shards_calls(),
        calls,
        "listed again without a reason"
    );
    let receipt = gone
        .send(UserRecord::new("k", "y"))
        .await
        .expect("accepted");
    assert!(receipt.await.is_err());
    assert_eq!(fake.list_shards_calls(), calls + 1);
    // The other stream is unaffected.
    let stored = producer
        .send(UserRecord::new("k", "z"))
        .await
        .expect("accepted")
        .await;
    assert!(stored.is_ok());
    producer.shutdown().await;
}

/// A Kinesis whose one stream throttles every call (a stream far over its shards' limits).
#[derive(Debug, Clone)]
struct OneStreamThrottled {
    fake: FakeKinesis,
    throttled: crate::StreamId,
}

impl crate::ListShards for OneStreamThrottled {
    fn list_shards<'a>(
        &'a self,
        stream: &'a crate::StreamId,
        listing: &'a crate::ShardListing,
    ) -> crate::BoxFuture<'a, Result<Vec<crate::Shard>, crate::KinesisError>> {
        crate::ListShards::list_shards(&self.fake, stream, listing)
    }
}

impl crate::PutRecords for OneStreamThrottled {
    fn put_records<'a>(
        &'a self,
        stream: &'a crate::StreamId,
        entries: &'a [crate::PutEntry],
    ) -> crate::BoxFuture<'a, Result<Vec<crate::PutResult>, crate::KinesisError>> {
        if *stream == self.throttled {
            return Box::pin(async {
                Err(crate::KinesisError::new(
                    "PutRecords",
                    ErrorClass::Throttled,
                    "ProvisionedThroughputExceededException",
                    "Rate exceeded for shard",
                ))
            });
        }
        crate::PutRecords::put_records(&self.fake, stream, entries)
    }
}

/// Several streams share one budget: a stream throttled throughout fills its share (75 % by
/// default) and its senders wait, while another stream's records keep going at once (they used
/// to wait for the stuck stream's records to expire, a whole TTL).
#[tokio::test(start_paused = true)]
async fn a_throttled_stream_does_not_hold_the_budget_of_the_others() {
    let fake = FakeKinesis::new();
    fake.create_stream("stuck", 1);
    fake.create_stream("healthy", 1);
    let api = OneStreamThrottled {
        fake: fake.clone(),
        throttled: "stuck".into(),
    };
    let producer = Producer::builder("stuck")
        .kinesis_api(api)
        .max_outstanding_records(100)
        .record_ttl(Duration::from_secs(30))
        .min_backoff(Duration::from_millis(50))
        .max_backoff(Duration::from_millis(500))
        .jitter_seed(3)
        .build()
        .await
        .expect("built");
    let healthy = producer.for_stream("healthy");
    // The stuck stream's sender keeps sending: it fills what it may and waits.
    let stuck = tokio::spawn({
        let producer = producer.clone();
        async move {
            let mut receipts = Vec::new();
            for i in 0..300 {
                let record = UserRecord::new(format!("s{i}"), "x");
                receipts.push(producer.send(record).await.expect("accepted"));
            }
            receipts
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(producer.outstanding_records() <= 100);
    let started = tokio::time::Instant::now();
    let results = {
        let mut receipts = Vec::new();
        for i in 0..50 {
            let record = UserRecord::new(format!("h{i}"), "y");
            receipts.push(healthy.send(record).await.expect("accepted"));
        }
        let mut results = Vec::new();
        for receipt in receipts {
            results.push(receipt.await);
        }
        results
    };
    assert!(
        results.iter().all(Result::is_ok),
        "{:?}",
        results.iter().find(|r| r.is_err())
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the healthy stream waited {:?}",
        started.elapsed()
    );
    // The stuck stream's records end at their TTL; its sender gets through in the end.
    let receipts = stuck.await.expect("joined");
    assert_eq!(receipts.len(), 300);
    producer.shutdown().await;
}

/// The share holds only with several streams: one stream alone may fill the whole budget.
#[tokio::test(start_paused = true)]
async fn a_single_stream_may_use_the_whole_budget() {
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 1);
    fake.script(std::iter::repeat_n(CallFault::Hang, 1_000));
    let producer = builder(&fake)
        .max_outstanding_records(100)
        .linger(Duration::MAX)
        .build()
        .await
        .expect("built");
    for i in 0..100 {
        let sent = producer.try_send(UserRecord::new(format!("k{i}"), "x"));
        assert!(sent.is_ok(), "record {i} refused");
    }
    assert_eq!(producer.outstanding_records(), 100);
    assert!(
        producer.try_send(UserRecord::new("k", "x")).is_err(),
        "full"
    );
}

/// A stream whose handles are all dropped, with nothing left to send, loses its state after a
/// while (no more refreshes of it); a new handle for it lists it again and sends.
#[tokio::test(start_paused = true)]
async fn a_dropped_stream_handle_lets_its_state_go() {
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 1);
    fake.create_stream("audit", 1);
    let producer = builder(&fake)
        .shard_map_refresh_interval(Duration::from_secs(60))
        .build()
        .await
        .expect("built");
    let audit = producer.for_stream("audit");
    assert!(
        audit
            .send(UserRecord::new("k", "1"))
            .await
            .expect("accepted")
            .await
            .is_ok()
    );
    drop(audit);
    // Only the main stream is refreshed from here on (once a minute).
    tokio::time::sleep(Duration::from_secs(600)).await;
    let before = fake.list_shards_calls();
    tokio::time::sleep(Duration::from_secs(3_600)).await;
    let listed = fake.list_shards_calls() - before;
    assert!((59..=61).contains(&listed), "{listed} listings in an hour");
    // A new handle: listed again, stored.
    let audit = producer.for_stream("audit");
    let stored = audit
        .send(UserRecord::new("k", "2"))
        .await
        .expect("accepted")
        .await;
    assert!(stored.is_ok(), "{stored:?}");
    let records: Vec<_> = fake.user_records("audit");
    assert_eq!(records.len(), 2);
    producer.shutdown().await;
}

/// A sender waiting for its stream's share when the pipeline fails is refused with the cause,
/// not left waiting.
#[tokio::test(start_paused = true)]
async fn a_sender_waiting_for_its_share_is_refused_when_the_pipeline_fails() {
    let fake = FakeKinesis::new();
    fake.create_stream(STREAM, 1);
    fake.create_stream("other", 1);
    fake.script(std::iter::repeat_n(CallFault::Hang, 1_000));
    let producer = builder(&fake)
        .max_outstanding_records(4)
        .stream_share_percent(50)
        .build()
        .await
        .expect("built");
    let _other = producer.for_stream("other");
    for i in 0..2 {
        let _receipt = producer
            .send(UserRecord::new(format!("k{i}"), "x"))
            .await
            .expect("within the share");
    }
    let waiting = tokio::spawn({
        let producer = producer.clone();
        async move { producer.send(UserRecord::new("k", "over")).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "the share is full: it waits");
    assert!(producer.shared_inbox_crash());
    let refused = waiting.await.expect("joined");
    assert!(
        matches!(refused, Err(crate::SendError::Stopped { .. })),
        "{refused:?}"
    );
}
