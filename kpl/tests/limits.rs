//! PutRecords limits (500 records, 5 MiB) against `fault-proxy`'s sink, which refuses calls
//! over them as Kinesis does (kinesis-mock does not).

use std::time::Duration;

use fault_proxy::{FaultProxy, Faults, Upstream};
use integration_tests::kinesis_client_at;
use kpl::{Producer, UserRecord};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_stay_within_the_put_records_limits() {
    let sink = FaultProxy::start(Upstream::Sink { shards: 4 }, Faults::default())
        .await
        .expect("sink");
    let producer = Producer::builder("any-stream")
        .client(kinesis_client_at(&sink.endpoint_url()).await)
        .aggregation(false)
        .rate_limit_percent(1_000_000)
        .linger(Duration::from_millis(50))
        .build()
        .await
        .expect("producer");
    let mut receipts = Vec::new();
    // Many small records (the 500-record limit) then 1 MiB records (the 5 MiB limit).
    for i in 0..5_000 {
        receipts.push(
            producer
                .send(UserRecord::new(format!("k{i}"), vec![1u8; 10]))
                .await
                .expect("accepted"),
        );
    }
    for i in 0..12 {
        let data = vec![2u8; 1024 * 1024 - 8];
        receipts.push(
            producer
                .send(UserRecord::new(format!("big{i}"), data))
                .await
                .expect("accepted"),
        );
    }
    for receipt in receipts {
        receipt
            .await
            .expect("the sink refuses calls over the limits, so none may be");
    }
    producer.shutdown().await;
    let stats = sink.stats();
    let calls = stats.requests_for("PutRecords");
    // At least as many calls as the count and byte limits force (the sink refuses any call over
    // them, so every receipt succeeding shows none was).
    let bytes: u64 = 5_000 * (10 + 5) + 12 * (1024 * 1024);
    let minimum = 5_012u64.div_ceil(500).max(bytes.div_ceil(5 * 1024 * 1024));
    assert!(calls >= minimum, "{calls} calls < {minimum}: {stats:?}");
    assert_eq!(stats.invalid_requests, 0, "{stats:?}");
    assert_eq!(stats.entries_received, 5_012);
}

#[tokio::test]
async fn a_stream_arn_works_like_a_name() {
    let sink = FaultProxy::start(Upstream::Sink { shards: 2 }, Faults::default())
        .await
        .expect("sink");
    let producer = Producer::builder("arn:aws:kinesis:us-east-1:123456789012:stream/by-arn")
        .client(kinesis_client_at(&sink.endpoint_url()).await)
        .build()
        .await
        .expect("producer");
    let stored = producer
        .send(UserRecord::new("k", "v"))
        .await
        .expect("accepted")
        .await
        .expect("stored");
    assert!(stored.shard_id.starts_with("shardId-"));
    producer.shutdown().await;
}

/// At its outstanding limit the producer cannot gain by lingering (the senders wait for the
/// records it holds), so it sends at once: a budget of ~200 records with a 60 s linger still
/// moves thousands of records in seconds, where lingering would take 60 s per budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_budget_does_not_wait_for_linger() {
    let sink = FaultProxy::start(Upstream::Sink { shards: 8 }, Faults::default())
        .await
        .expect("sink");
    let record_size = 100 + 8;
    let producer = Producer::builder("any-stream")
        .client(kinesis_client_at(&sink.endpoint_url()).await)
        .rate_limit_percent(1_000_000)
        .linger(Duration::from_secs(60))
        .max_record_size(1024)
        .max_aggregate_size(1024)
        .max_outstanding_bytes(200 * kpl::record_charge(record_size))
        .build()
        .await
        .expect("producer");
    let sending = async {
        let mut receipts = Vec::new();
        for i in 0..5_000 {
            let receipt = producer
                .send(UserRecord::new(
                    format!("key{:05}", i % 977),
                    vec![7u8; 100],
                ))
                .await
                .expect("accepted");
            receipts.push(receipt);
        }
        receipts
    };
    let receipts = tokio::time::timeout(Duration::from_secs(50), sending)
        .await
        .expect("records were held for the linger although the budget was full");
    // The last records, with the budget no longer full, linger as they should: flush them.
    producer.flush().await.expect("flushed");
    for receipt in receipts {
        receipt.await.expect("stored");
    }
    producer.shutdown().await;
    let metrics = producer.metrics();
    assert_eq!(metrics.user_records_put, 5_000);
    assert_eq!(sink.stats().invalid_requests, 0);
}

/// Records up to 10 MiB, for streams whose MaxRecordSize was raised: each record over the
/// 5 MiB batch limit goes in a PutRecords call of its own (a sink with raised limits takes it),
/// and the same records against a default stream fail as `Rejected`, not silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_up_to_10_mib_go_alone_on_a_raised_stream() {
    let ten_mib = 10 * 1024 * 1024;
    let sizes = [100, 6 * 1024 * 1024, 100, ten_mib - 8, 2 * 1024 * 1024, 100];
    let produce = |endpoint: String, sizes: Vec<usize>| async move {
        let producer = Producer::builder("large-records")
            .client(kinesis_client_at(&endpoint).await)
            .rate_limit_percent(1_000_000)
            .max_record_size(ten_mib)
            .build()
            .await
            .expect("producer");
        let mut receipts = Vec::new();
        for (i, size) in sizes.iter().enumerate() {
            let record = UserRecord::new(format!("big{i}"), vec![i as u8; *size]);
            receipts.push(producer.send(record).await.expect("accepted"));
        }
        producer.flush().await.expect("flushed");
        let mut results = Vec::new();
        for receipt in receipts {
            results.push(receipt.await);
        }
        producer.shutdown().await;
        results
    };

    let raised = FaultProxy::start(
        Upstream::LargeRecordSink {
            shards: 2,
            max_record_size: ten_mib,
        },
        Faults::default(),
    )
    .await
    .expect("sink");
    for (i, result) in produce(raised.endpoint_url(), sizes.to_vec())
        .await
        .iter()
        .enumerate()
    {
        assert!(
            result.is_ok(),
            "record {i} of {} bytes: {result:?}",
            sizes[i]
        );
    }
    let stats = raised.stats();
    assert_eq!(stats.invalid_requests, 0, "{stats:?}");
    // 6 MiB and 10 MiB each alone; the 2 MiB record cannot join the 6 MiB one.
    assert!(stats.requests_for("PutRecords") >= 3, "{stats:?}");

    // Against a default (1 MiB) stream the same large records are refused, each with a typed
    // error (a small record batched with a refused one would share its fate, as in Kinesis).
    let default = FaultProxy::start(Upstream::Sink { shards: 2 }, Faults::default())
        .await
        .expect("sink");
    let large: Vec<usize> = sizes.into_iter().filter(|s| *s > 1024 * 1024).collect();
    for (i, result) in produce(default.endpoint_url(), large.clone())
        .await
        .iter()
        .enumerate()
    {
        assert!(
            matches!(result.as_ref().map_err(|f| f.reason()), Err(kpl::FailureReason::Rejected { code, .. }) if &**code == "ValidationException"),
            "record of {} bytes on a 1 MiB stream: {result:?}",
            large[i]
        );
    }
}

/// Senders racing `shutdown` get either an error or an answer: every record accepted, with a
/// receipt or detached, is counted as stored or failed once `shutdown` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_racing_shutdown_are_all_answered() {
    let sink = FaultProxy::start(Upstream::Sink { shards: 4 }, Faults::default())
        .await
        .expect("sink");
    let producer = Producer::builder("racing-shutdown")
        .client(kinesis_client_at(&sink.endpoint_url()).await)
        .rate_limit_percent(1_000_000)
        .build()
        .await
        .expect("producer");
    let mut senders = Vec::new();
    for task in 0..4 {
        let producer = producer.clone();
        senders.push(tokio::spawn(async move {
            let mut accepted = 0u64;
            let mut receipts = Vec::new();
            for i in 0.. {
                let record = UserRecord::new(format!("t{task}-{}", i % 100), vec![1u8; 50]);
                let sent = if task == 0 {
                    producer.send(record).await.map(|r| receipts.push(r))
                } else {
                    producer.send_detached(record).await
                };
                match sent {
                    Ok(()) => accepted += 1,
                    Err(kpl::SendError::ShuttingDown(_)) => break,
                    Err(other) => panic!("{other}"),
                }
            }
            for receipt in receipts {
                match receipt.await {
                    Ok(_) => {}
                    Err(failure) if *failure.reason() == kpl::FailureReason::ShuttingDown => {}
                    Err(other) => panic!("{other}"),
                }
            }
            accepted
        }));
    }
    while producer.metrics().user_records_received < 20_000 {
        tokio::task::yield_now().await;
    }
    producer.shutdown().await;
    let metrics = producer.metrics();
    let mut accepted = 0;
    for sender in senders {
        accepted += sender.await.expect("sender");
    }
    assert_eq!(
        metrics.user_records_put + metrics.user_records_failed,
        accepted,
        "{metrics:?}"
    );
    assert_eq!(metrics.user_records_received, accepted);
}
