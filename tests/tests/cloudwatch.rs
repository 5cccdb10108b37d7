//! The CloudWatch publisher through the real SDK code path, against the local endpoint that
//! decodes PutMetricData as the service does (`integration_tests::cloudwatch`). No emulator.

use std::time::Duration;

use integration_tests::cloudwatch::{
    CloudWatchEndpoint, MAX_BYTES, MAX_DATUMS, Mode, StatisticSet,
};
use kinesis_common::cloudwatch::{Builder, Granularity, Level, Publisher};
use metrics::{Key, Label, Metadata, Recorder};

const META: Metadata<'static> = Metadata::new("test", metrics::Level::INFO, None);

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    Key::from_parts(
        name,
        labels
            .iter()
            .map(|(k, v)| Label::new(*k, (*v).to_owned()))
            .collect::<Vec<_>>(),
    )
}

fn fast(builder: Builder) -> Builder {
    builder.backoff(Duration::from_millis(1), Duration::from_millis(5))
}

#[tokio::test]
async fn statistic_sets_reach_the_endpoint_as_the_service_decodes_them() {
    let endpoint = CloudWatchEndpoint::start().await;
    let publisher = fast(Builder::producer()).spawn(endpoint.client());
    let recorder = publisher.recorder();
    let time = recorder.register_histogram(&key("BufferingTime", &[("stream", "orders")]), &META);
    for value in [20.0, 5.0, 11.0] {
        time.record(value);
    }
    recorder
        .register_counter(
            &key(
                "ErrorsByCode",
                &[
                    ("stream", "orders"),
                    ("error_code", "ProvisionedThroughputExceededException"),
                ],
            ),
            &META,
        )
        .increment(7);
    publisher.flush().await;
    let calls = endpoint.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].status, 200, "{:?}", calls[0].refusal);
    assert_eq!(calls[0].namespace, "KinesisProducerLibrary");
    let data = endpoint.accepted();
    let buffering: Vec<_> = data.iter().filter(|d| d.name == "BufferingTime").collect();
    assert_eq!(buffering.len(), 2, "the stream's and overall");
    for datum in &buffering {
        assert_eq!(
            datum.statistics,
            Some(StatisticSet {
                sample_count: 3.0,
                sum: 36.0,
                minimum: 5.0,
                maximum: 20.0
            })
        );
        assert_eq!(datum.unit.as_deref(), Some("Milliseconds"));
        assert!(
            datum
                .timestamp
                .as_deref()
                .is_some_and(|t| t.ends_with(":00Z")),
            "{datum:?}"
        );
    }
    assert!(
        buffering
            .iter()
            .any(|d| d.dimensions == vec![("StreamName".to_owned(), "orders".to_owned())])
    );
    let errors: Vec<_> = data.iter().filter(|d| d.name == "ErrorsByCode").collect();
    assert_eq!(
        errors.len(),
        3,
        "overall, by code, by code and stream: {errors:?}"
    );
    assert!(errors.iter().any(|d| d.dimensions
        == vec![
            (
                "ErrorCode".to_owned(),
                "ProvisionedThroughputExceededException".to_owned()
            ),
            ("StreamName".to_owned(), "orders".to_owned())
        ]));
    assert_eq!(publisher.stats().datums_sent, 5);
}

#[tokio::test]
async fn batches_stay_within_the_service_limits_through_the_sdk() {
    let endpoint = CloudWatchEndpoint::start().await;
    let publisher =
        fast(Builder::producer().granularity(Granularity::Stream)).spawn(endpoint.client());
    let recorder = publisher.recorder();
    // 2 400 streams with 128-character names, two metrics each: 4 802 series.
    for stream in 0..2_400 {
        let name = format!("{stream:->128}");
        for metric in ["UserRecordsPut", "KinesisRecordsPut"] {
            recorder
                .register_counter(&key(metric, &[("stream", &name)]), &META)
                .increment(1);
        }
    }
    publisher.flush().await;
    let calls = endpoint.calls();
    assert!(
        calls.iter().all(|c| c.status == 200),
        "the endpoint refused one"
    );
    assert!(calls.len() >= 5);
    for call in &calls {
        assert!(call.data.len() <= MAX_DATUMS);
        assert!(call.body_bytes <= MAX_BYTES, "{}", call.body_bytes);
        assert!(call.gzip, "the SDK compresses bodies over 10 KiB");
    }
    assert_eq!(endpoint.accepted().len(), 4_802);
    assert_eq!(publisher.stats().datums_sent, 4_802);
}

#[tokio::test]
async fn throttling_is_retried_then_given_up_and_counted() {
    let endpoint = CloudWatchEndpoint::start().await;
    let publisher =
        fast(Builder::producer().granularity(Granularity::Global)).spawn(endpoint.client());
    let recorder = publisher.recorder();
    let puts = recorder.register_counter(&key("UserRecordsPut", &[("stream", "s")]), &META);

    endpoint.set_mode(Mode::Throttle(1));
    puts.increment(1);
    publisher.flush().await;
    let stats = publisher.stats();
    assert_eq!(
        (
            stats.calls,
            stats.retries,
            stats.failed_attempts,
            stats.datums_failed
        ),
        (1, 1, 1, 0)
    );
    assert_eq!(
        endpoint
            .calls()
            .iter()
            .map(|c| c.status)
            .collect::<Vec<_>>(),
        vec![400, 200]
    );

    endpoint.set_mode(Mode::Throttle(10));
    puts.increment(1);
    publisher.flush().await;
    let stats = publisher.stats();
    assert_eq!(stats.calls, 1);
    assert_eq!(stats.failed_attempts, 1 + 3, "3 attempts, then given up");
    assert_eq!(stats.datums_failed, 1);
    assert_eq!(endpoint.calls().len(), 2 + 3);
}

#[tokio::test(start_paused = true)]
async fn a_hung_endpoint_never_blocks_recording() {
    let endpoint = CloudWatchEndpoint::start().await;
    endpoint.set_mode(Mode::Hang);
    let publisher = fast(Builder::producer()).spawn(endpoint.client());
    let recorder = publisher.recorder();
    let time = recorder.register_histogram(&key("RequestTime", &[("stream", "s")]), &META);
    time.record(1.0);
    // The uploader is stuck in its calls to the hung endpoint while recording goes on.
    let uploader = tokio::spawn(async move {
        publisher.flush().await;
        publisher
    });
    let started = std::time::Instant::now();
    for value in 0..200_000 {
        time.record(value as f64);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "recording went at memory speed"
    );
    let publisher = uploader.await.expect("flush");
    let stats = publisher.stats();
    assert_eq!(stats.calls, 0);
    assert_eq!(
        stats.failed_attempts, 3,
        "each attempt timed out: {stats:?}"
    );
    assert!(stats.datums_failed > 0);
}

/// Records one minute of the facade updates a library makes (names and labels as
/// `kpl/src/metrics.rs`, `kcl/src/metrics.rs` and the lease coordinator publish them), sends
/// it, and returns (calls, metric data).
async fn one_minute(
    endpoint: &CloudWatchEndpoint,
    publisher: Publisher,
    updates: &[Key],
) -> (usize, usize) {
    let before = endpoint.calls().len();
    let recorder = publisher.recorder();
    for key in updates {
        recorder.register_histogram(key, &META).record(1.0);
    }
    publisher.shutdown().await;
    let calls: Vec<_> = endpoint.calls().into_iter().skip(before).collect();
    assert!(calls.iter().all(|c| c.status == 200));
    (calls.len(), calls.iter().map(|c| c.data.len()).sum())
}

/// The series a producer records for one stream of `shards` shards: what is counted where a
/// record is stored carries the shard (kpl/src/metrics.rs), the rest the stream alone.
fn producer_updates(stream: &str, shards: usize) -> Vec<Key> {
    let per_shard = [
        "UserRecordsPut",
        "UserRecordsDataPut",
        "KinesisRecordsPut",
        "KinesisRecordsDataPut",
        "UserRecordsPerKinesisRecord",
    ];
    let names = [
        "UserRecordsReceived",
        "UserRecordsPending",
        "UserRecordsPut",
        "UserRecordsDataPut",
        "KinesisRecordsPut",
        "KinesisRecordsDataPut",
        "AllErrors",
        "RetriesPerRecord",
        "UserRecordExpired",
        "BufferingTime",
        "RequestTime",
        "UserRecordsPerKinesisRecord",
        "KinesisRecordsPerPutRecordsRequest",
        "UserRecordsFailed",
        "UserRecordsPossiblyDuplicated",
        "PutRecordsTimedOut",
        "PutRecordsConcurrencyLimit",
        "UserRecordsPutWithoutShardMap",
    ];
    let mut keys = Vec::new();
    for name in names {
        if per_shard.contains(&name) {
            for shard in 0..shards {
                let shard = format!("shardId-{shard:012}");
                keys.push(key(name, &[("stream", stream), ("shard", &shard)]));
            }
        } else {
            keys.push(key(name, &[("stream", stream)]));
        }
    }
    keys.push(key(
        "ErrorsByCode",
        &[
            ("stream", stream),
            ("error_code", "ProvisionedThroughputExceededException"),
        ],
    ));
    keys
}

fn consumer_updates(stream: &str, shards: usize) -> Vec<Key> {
    let per_shard = [
        "RecordsProcessed",
        "DataBytesProcessed",
        "MillisBehindLatest",
        "RecordProcessor.processRecords.Time",
        "SecondsSinceLastSuccessfulRead",
        "GetRecords.Throttled",
        "GetRecords.ExpiredIterator",
        "RecordProcessor.Failures",
    ];
    let worker = [
        "CurrentLeases",
        "LostLeases",
        "RenewLease.Failures",
        "TakenLeases",
        "StolenLeases",
        "NumWorkers",
        "NeededLeases",
        "TargetLeases",
        "TotalLeases",
        "TakeLeases.Failures",
    ];
    let mut keys = Vec::new();
    for shard in 0..shards {
        let shard = format!("shardId-{shard:012}");
        for name in per_shard {
            keys.push(key(name, &[("stream", stream), ("shard", &shard)]));
        }
    }
    for name in worker {
        keys.push(key(name, &[("table", "app")]));
    }
    keys.push(key("BatchMemory.Bytes", &[("stream", stream)]));
    keys
}

/// The figures: PutMetricData calls per minute at each level, a producer with 1 stream x 4
/// shards and a consumer with 4 shards.
#[tokio::test]
async fn put_metric_data_calls_per_minute_at_each_level() {
    let endpoint = CloudWatchEndpoint::start().await;
    let mut lines = Vec::new();
    for level in [Level::None, Level::Summary, Level::Detailed] {
        for (what, updates) in [(
            "producer, 1 stream x 4 shards (granularity shard, the default)",
            producer_updates("s", 4),
        )] {
            let publisher = fast(Builder::producer().level(level)).spawn(endpoint.client());
            let (calls, data) = one_minute(&endpoint, publisher, &updates).await;
            lines.push(format!(
                "{level:>8} | {what} | {calls} call(s)/min | {data} metric data/min"
            ));
            assert!(calls <= 1);
            assert_eq!(calls == 0, level == Level::None);
        }
        let publisher =
            fast(Builder::consumer("app", "worker-1").level(level)).spawn(endpoint.client());
        let (calls, data) = one_minute(&endpoint, publisher, &consumer_updates("s", 4)).await;
        lines.push(format!(
            "{level:>8} | consumer, 4 shards | {calls} call(s)/min | {data} metric data/min"
        ));
        assert_eq!(calls, usize::from(level != Level::None));
    }
    println!("{}", lines.join("\n"));
}
