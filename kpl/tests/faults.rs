//! The producer under the faults kinesis-mock never produces (throttling, partial PutRecords
//! failures, 5xx, slow answers, dropped connections, a stalled sink), injected by `fault-proxy`
//! in front of kinesis-mock through the real SDK code path.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use aggregation_proto::{ReceivedRecord, deaggregate};
use fault_proxy::{FaultProxy, Faults, ServerError, Upstream};
use integration_tests::{
    KINESIS_ENDPOINT_VAR, create_stream, endpoint_url, kinesis_client, kinesis_client_at,
    read_all_records, read_records_by_shard, unique_name,
};
use kpl::{
    FailureReason, Producer, ProducerBuilder, RecordFailure, RecordResult, TrySendError, UserRecord,
};

/// A stream on kinesis-mock and a proxy in front of it.
async fn setup(
    prefix: &str,
    shards: i32,
    faults: Faults,
) -> (aws_sdk_kinesis::Client, String, FaultProxy) {
    let direct = kinesis_client().await;
    let stream = unique_name(prefix);
    create_stream(&direct, &stream, shards).await;
    let proxy = FaultProxy::start(
        Upstream::Forward(endpoint_url(KINESIS_ENDPOINT_VAR)),
        faults,
    )
    .await
    .expect("proxy starts");
    (direct, stream, proxy)
}

async fn producer(proxy: &FaultProxy, stream: &str) -> ProducerBuilder {
    Producer::builder(stream)
        .client(kinesis_client_at(&proxy.endpoint_url()).await)
        .linger(Duration::from_millis(10))
        .min_backoff(Duration::from_millis(5))
        .max_backoff(Duration::from_millis(100))
        .request_timeout(Duration::from_secs(2))
}

/// A producer whose stream is deleted once it is built: every call then fails for good.
async fn producer_for_a_deleted_stream(
    direct: &aws_sdk_kinesis::Client,
    proxy: &FaultProxy,
    stream: &str,
) -> Producer {
    let producer = producer(proxy, stream)
        .await
        .build()
        .await
        .expect("producer");
    direct
        .delete_stream()
        .stream_name(stream)
        .send()
        .await
        .expect("deleted");
    producer
}

/// User record payloads in the stream, read directly from kinesis-mock.
async fn stored_payloads(client: &aws_sdk_kinesis::Client, stream: &str) -> Vec<String> {
    read_all_records(client, stream)
        .await
        .iter()
        .flat_map(|r| {
            deaggregate(&ReceivedRecord::new(
                r.partition_key(),
                r.data().as_ref().to_vec(),
            ))
        })
        .map(|u| String::from_utf8(u.data().to_vec()).expect("utf-8"))
        .collect()
}

async fn send_all(producer: &Producer, count: usize, keys: usize) -> Vec<RecordResult> {
    let mut receipts = Vec::new();
    for i in 0..count {
        let record = UserRecord::new(format!("key-{}", i % keys), format!("payload-{i}"));
        receipts.push(producer.send(record).await.expect("accepted"));
    }
    let mut results = Vec::new();
    for receipt in receipts {
        results.push(
            tokio::time::timeout(Duration::from_secs(60), receipt)
                .await
                .expect("resolves, no hang"),
        );
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_resolves_once_and_every_success_is_stored() {
    let faults = Faults {
        seed: 7,
        throttle_rate: 0.1,
        internal_error_rate: 0.1,
        partial_failure_rate: 0.3,
        partial_failure_internal_share: 0.3,
        drop_connection_rate: 0.05,
        lose_response_rate: 0.05,
        delay: Duration::from_millis(50),
        delay_rate: 0.1,
        ..Faults::default()
    };
    let (direct, stream, proxy) = setup("kpl-faults", 4, faults).await;
    // Small batches of plain records: many calls, so every kind of fault occurs.
    let producer = producer(&proxy, &stream)
        .await
        .aggregation(false)
        .max_batch_records(25)
        .build()
        .await
        .expect("producer");
    let results = send_all(&producer, 2_000, 200).await;
    producer.shutdown().await;

    let succeeded: HashSet<String> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| format!("payload-{i}"))
        .collect();
    assert_eq!(
        succeeded.len(),
        2_000,
        "a 30 s TTL outlasts these fault rates: {:?}",
        results.iter().find(|r| r.is_err())
    );
    let retried = results
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|s| s.attempts.len() > 1))
        .count();
    assert!(retried > 100, "faults were injected and retried: {retried}");
    for success in results.iter().flatten() {
        let last = success.attempts.last().expect("an attempt");
        assert!(last.is_success());
        assert!(
            success.attempts[..success.attempts.len() - 1]
                .iter()
                .all(|a| a.error_code.is_some())
        );
    }

    // Every success is in the stream. A lost response means a record was stored and then sent
    // again, so duplicates are allowed (at-least-once), but nothing else.
    let stored = stored_payloads(&direct, &stream).await;
    let stored_set: HashSet<&String> = stored.iter().collect();
    for payload in &succeeded {
        assert!(
            stored_set.contains(payload),
            "{payload} reported stored but not in the stream"
        );
    }
    assert!(stored.iter().all(|p| succeeded.contains(p)));
    let stats = proxy.stats();
    let injected = &stats.faults;
    assert!(
        injected.entries_throttled > 0
            && injected.throttled > 0
            && injected.server_errors > 0
            && injected.dropped_connections > 0
            && injected.lost_responses > 0,
        "{stats:?}"
    );
    let metrics = producer.metrics();
    assert!(
        metrics
            .errors_by_code
            .contains_key("ProvisionedThroughputExceededException"),
        "{metrics:?}"
    );
    assert_eq!(metrics.user_records_pending, 0);
}

#[tokio::test]
async fn sustained_throttling_expires_records_with_their_attempts() {
    let faults = Faults {
        throttle_rate: 1.0,
        ..Faults::default()
    };
    let (_, stream, proxy) = setup("kpl-expire", 1, faults).await;
    let producer = producer(&proxy, &stream)
        .await
        .record_ttl(Duration::from_millis(600))
        .build()
        .await
        .expect("producer");
    let started = Instant::now();
    let results = send_all(&producer, 50, 5).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "expiry is bounded by the TTL"
    );
    for result in results {
        match result {
            Err(failure) if failure.is_expired() => {
                assert!(!failure.attempts().is_empty());
                assert!(
                    failure.attempts().iter().all(|a| a.error_code.as_deref()
                        == Some("ProvisionedThroughputExceededException"))
                );
                assert!(failure.record().is_some(), "the record comes back");
            }
            other => panic!("expected Expired, got {other:?}"),
        }
    }
    assert_eq!(producer.metrics().user_records_expired, 50);
    producer.shutdown().await;
}

#[tokio::test]
async fn fail_if_throttled_fails_at_the_first_throttle() {
    let faults = Faults {
        partial_failure_rate: 1.0,
        ..Faults::default()
    };
    let (_, stream, proxy) = setup("kpl-failfast", 1, faults).await;
    let producer = producer(&proxy, &stream)
        .await
        .fail_if_throttled(true)
        .build()
        .await
        .expect("producer");
    for result in send_all(&producer, 20, 3).await {
        match result {
            Err(failure) if *failure.reason() == FailureReason::Throttled => {
                assert_eq!(failure.attempts().len(), 1);
            }
            other => panic!("expected Throttled, got {other:?}"),
        }
    }
    producer.shutdown().await;
}

#[tokio::test]
async fn non_retryable_errors_fail_fast() {
    let (direct, stream, proxy) = setup("kpl-reject", 1, Faults::default()).await;
    let producer = producer_for_a_deleted_stream(&direct, &proxy, &stream).await;
    let started = Instant::now();
    for result in send_all(&producer, 10, 2).await {
        match result {
            Err(failure) if matches!(failure.reason(), FailureReason::Rejected { .. }) => {
                let FailureReason::Rejected { code, .. } = failure.reason() else {
                    unreachable!()
                };
                assert_eq!(&**code, "ResourceNotFoundException");
                assert_eq!(failure.attempts().len(), 1);
            }
            other => panic!("expected Rejected, got {other:?}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    producer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_faults_resolves_everything() {
    let faults = Faults {
        seed: 3,
        throttle_rate: 0.3,
        partial_failure_rate: 0.3,
        drop_connection_rate: 0.1,
        ..Faults::default()
    };
    let (_, stream, proxy) = setup("kpl-shutdown", 2, faults).await;
    let producer = producer(&proxy, &stream)
        .await
        .record_ttl(Duration::from_secs(3))
        .build()
        .await
        .expect("producer");
    let mut receipts = Vec::new();
    for i in 0..1_000 {
        receipts.push(
            producer
                .send(UserRecord::new(format!("k{i}"), format!("v{i}")))
                .await
                .expect("accepted"),
        );
    }
    tokio::time::timeout(Duration::from_secs(20), producer.shutdown())
        .await
        .expect("shutdown ends");
    for receipt in receipts {
        // Resolved already: shutdown returns only when nothing is outstanding.
        let result = tokio::time::timeout(Duration::from_millis(100), receipt)
            .await
            .expect("already resolved");
        assert!(
            result.as_ref().is_ok() || result.as_ref().is_err_and(RecordFailure::is_expired),
            "{result:?}"
        );
    }
    assert_eq!(producer.metrics().user_records_pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sink_holds_send_instead_of_buffering() {
    let faults = Faults {
        stall: true,
        ..Faults::default()
    };
    let (direct, stream, proxy) = setup("kpl-stall", 1, faults).await;
    let limit = 512 * 1024;
    let record_size = 10 * 1024;
    let producer = producer(&proxy, &stream)
        .await
        .max_outstanding_bytes(limit)
        .max_record_size(64 * 1024)
        .record_ttl(Duration::from_secs(60))
        .request_timeout(Duration::from_secs(60))
        .build()
        .await
        .expect("producer");
    let sender = {
        let producer = producer.clone();
        tokio::spawn(async move {
            let mut receipts = Vec::new();
            for i in 0..100 {
                let data = format!("{i:05}")
                    .into_bytes()
                    .into_iter()
                    .chain(std::iter::repeat_n(b'x', record_size - 5));
                receipts.push(
                    producer
                        .send(UserRecord::new("k", data.collect::<Vec<u8>>()))
                        .await
                        .expect("accepted"),
                );
            }
            receipts
        })
    };
    // Wait until the producer is full: pending stops growing at the byte limit.
    let deadline = Instant::now() + Duration::from_secs(10);
    while producer.metrics().user_records_received
        < (limit / kpl::record_charge(record_size + 1)) as u64
    {
        assert!(
            Instant::now() < deadline,
            "never filled up: {:?}",
            producer.metrics()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let metrics = producer.metrics();
    assert!(
        metrics.user_records_received as usize * kpl::record_charge(record_size + 1) <= limit,
        "{metrics:?}"
    );
    assert!(
        !sender.is_finished(),
        "send waits while the sink is stalled"
    );
    assert!(matches!(
        producer.try_send(UserRecord::new("k", vec![0u8; record_size])),
        Err(TrySendError::Full(_))
    ));

    proxy.set_faults(Faults::default()).expect("faults");
    let receipts = tokio::time::timeout(Duration::from_secs(30), sender)
        .await
        .expect("sender ends")
        .expect("task");
    for receipt in receipts {
        receipt.await.expect("stored once the sink answers");
    }
    producer.shutdown().await;
    assert_eq!(stored_payloads(&direct, &stream).await.len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_survives_partial_failures() {
    let faults = Faults {
        seed: 11,
        partial_failure_rate: 0.3,
        throttle_rate: 0.1,
        ..Faults::default()
    };
    let (direct, stream, proxy) = setup("kpl-order", 2, faults).await;
    let producer = producer(&proxy, &stream)
        .await
        .ordered(true)
        .build()
        .await
        .expect("producer");
    let results = send_all(&producer, 1_500, 40).await;
    assert!(
        results.iter().all(Result::is_ok),
        "{:?}",
        results.iter().find(|r| r.is_err())
    );
    producer.shutdown().await;
    let mut by_key: HashMap<String, Vec<usize>> = HashMap::new();
    for (_, records) in read_records_by_shard(&direct, &stream).await {
        for record in records {
            for user in deaggregate(&ReceivedRecord::new(
                record.partition_key(),
                record.data().as_ref().to_vec(),
            )) {
                let payload = String::from_utf8(user.data().to_vec()).expect("utf-8");
                let index: usize = payload
                    .trim_start_matches("payload-")
                    .parse()
                    .expect("index");
                by_key
                    .entry(user.partition_key().to_owned())
                    .or_default()
                    .push(index);
            }
        }
    }
    assert_eq!(by_key.values().map(Vec::len).sum::<usize>(), 1_500);
    for (key, indexes) in by_key {
        assert!(
            indexes.windows(2).all(|w| w[0] < w[1]),
            "{key} out of order: {indexes:?}"
        );
    }
}

/// Records sent without a receipt go through the same retries: under faults every one of them
/// is stored, and the metrics account for each; rejected ones are counted as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_records_are_retried_stored_and_counted() {
    let faults = Faults {
        seed: 11,
        throttle_rate: 0.1,
        partial_failure_rate: 0.3,
        drop_connection_rate: 0.05,
        ..Faults::default()
    };
    let (direct, stream, proxy) = setup("kpl-detached", 2, faults).await;
    let sending = producer(&proxy, &stream)
        .await
        .max_batch_records(20)
        .max_aggregate_count(10)
        .build()
        .await
        .expect("producer");
    for i in 0..1_000 {
        let record = UserRecord::new(format!("key-{}", i % 50), format!("payload-{i}"));
        sending.send_detached(record).await.expect("accepted");
    }
    let report = sending.flush().await.expect("flushed");
    assert_eq!(report.stored, 1_000);
    let metrics = sending.metrics();
    assert_eq!(metrics.user_records_put, 1_000, "{metrics:?}");
    assert_eq!(metrics.user_records_failed, 0);
    assert_eq!(metrics.user_records_pending, 0);
    assert!(
        metrics.retries_per_record > 0.0,
        "faults were retried: {metrics:?}"
    );
    sending.shutdown().await;
    let stored: HashSet<String> = stored_payloads(&direct, &stream)
        .await
        .into_iter()
        .collect();
    for i in 0..1_000 {
        assert!(
            stored.contains(&format!("payload-{i}")),
            "payload-{i} not stored"
        );
    }

    // Once the stream is gone, detached records fail fast and are counted as failed.
    let rejected = producer_for_a_deleted_stream(&direct, &proxy, &stream).await;
    for i in 0..10 {
        let record = UserRecord::new(format!("key-{i}"), "lost");
        rejected.send_detached(record).await.expect("accepted");
    }
    let report = rejected.flush().await.expect("flushed");
    assert_eq!((report.stored, report.failed), (0, 10));
    let metrics = rejected.metrics();
    assert_eq!(metrics.user_records_failed, 10, "{metrics:?}");
    assert!(
        metrics
            .errors_by_code
            .contains_key("ResourceNotFoundException")
    );
    rejected.shutdown().await;
}

/// Stale credentials and signatures (a token rotation, a clock jump, a Lambda thaw) answered
/// to whole PutRecords calls, through the real SDK and its error parsing: retried within the
/// TTL, every record stored. They used to reject every record of the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_credentials_and_signatures_on_put_records_are_retried() {
    for server_error in [ServerError::ExpiredToken, ServerError::SignatureExpired] {
        let faults = Faults {
            seed: 11,
            internal_error_rate: 0.4,
            server_error,
            ..Faults::default()
        };
        let (direct, stream, proxy) = setup("kpl-stale-credentials", 2, faults).await;
        let producer = producer(&proxy, &stream)
            .await
            .build()
            .await
            .expect("producer");
        let results = send_all(&producer, 400, 20).await;
        let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(failed.is_empty(), "{server_error:?}: {:?}", failed.first());
        assert!(
            proxy.stats().faults.server_errors > 0,
            "{server_error:?}: no fault was injected"
        );
        assert!(
            results.iter().flatten().any(|s| s.attempt_count > 1),
            "{server_error:?}: nothing was retried"
        );
        producer.shutdown().await;
        let mut stored = stored_payloads(&direct, &stream).await;
        stored.sort();
        stored.dedup();
        assert_eq!(stored.len(), 400, "{server_error:?}");
    }
}

/// A fleet deploy meets ListShards' per-stream limit: throttled listings at build are retried
/// (through the SDK: `LimitExceededException` would be refused the same way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_listing_at_build_is_retried() {
    let faults = Faults {
        seed: 3,
        throttle_rate: 0.7,
        fail_operations: vec!["ListShards".to_owned()],
        ..Faults::default()
    };
    let (_direct, stream, proxy) = setup("kpl-throttled-listing", 1, faults).await;
    let producer = producer(&proxy, &stream)
        .await
        .list_shards_timeout(Duration::from_secs(20))
        .build()
        .await
        .expect("built after retries");
    assert!(
        proxy.stats().faults.throttled > 0,
        "no listing was throttled"
    );
    let results = send_all(&producer, 10, 2).await;
    assert!(results.iter().all(Result::is_ok));
    producer.shutdown().await;
}
