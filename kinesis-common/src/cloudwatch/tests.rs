//! The publisher's logic over a recording double of `PutMetricData`, in paused time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_cloudwatch::types::MetricDatum;
use metrics::Recorder;

use super::*;

type Calls = Arc<Mutex<Vec<(String, Vec<MetricDatum>)>>>;

/// Records every call; answers from a script (then `Ok`), or never with `hang`.
#[derive(Clone, Default)]
struct Double {
    calls: Calls,
    script: Arc<Mutex<VecDeque<Result<(), PutError>>>>,
    hang: bool,
}

impl PutMetricData for Double {
    fn put<'a>(&'a self, namespace: &'a str, data: Vec<MetricDatum>) -> BoxPut<'a> {
        Box::pin(async move {
            if let Ok(mut calls) = self.calls.lock() {
                calls.push((namespace.to_owned(), data));
            }
            if self.hang {
                std::future::pending::<()>().await;
            }
            self.script
                .lock()
                .ok()
                .and_then(|mut s| s.pop_front())
                .unwrap_or(Ok(()))
        })
    }
}

impl Double {
    fn datums(&self) -> Vec<MetricDatum> {
        self.calls
            .lock()
            .map(|c| c.iter().flat_map(|(_, d)| d.clone()).collect())
            .unwrap_or_default()
    }

    fn calls(&self) -> usize {
        self.calls.lock().map(|c| c.len()).unwrap_or_default()
    }
}

fn dims(datum: &MetricDatum) -> Vec<(String, String)> {
    datum
        .dimensions()
        .iter()
        .map(|d| {
            (
                d.name().unwrap_or_default().to_owned(),
                d.value().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn named<'a>(datums: &'a [MetricDatum], name: &str) -> Vec<&'a MetricDatum> {
    datums
        .iter()
        .filter(|d| d.metric_name() == Some(name))
        .collect()
}

fn stats(datum: &MetricDatum) -> (f64, f64, f64, f64) {
    let s = datum
        .statistic_values()
        .cloned()
        .unwrap_or_else(|| aws_sdk_cloudwatch::types::StatisticSet::builder().build());
    (
        s.sample_count().unwrap_or_default(),
        s.sum().unwrap_or_default(),
        s.minimum().unwrap_or_default(),
        s.maximum().unwrap_or_default(),
    )
}

/// Waits (in paused time) to just after the start of the next minute.
async fn to_next_minute(recorder: &CloudWatchRecorder) {
    let minute = recorder.clock().minute();
    while recorder.clock().minute() == minute {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn stream_key(name: &'static str, stream: &str) -> metrics::Key {
    metrics::Key::from_parts(name, vec![metrics::Label::new("stream", stream.to_owned())])
}

const META: metrics::Metadata<'static> = metrics::Metadata::new("test", metrics::Level::INFO, None);

#[tokio::test(start_paused = true)]
async fn statistic_sets_are_per_minute_and_a_minute_goes_once_finished() {
    let double = Double::default();
    let publisher = Builder::producer()
        .granularity(Granularity::Global)
        .spawn_with(double.clone());
    let recorder = publisher.recorder();
    to_next_minute(&recorder).await;
    let put = recorder.register_histogram(&stream_key("BufferingTime", "s"), &META);
    for value in [5.0, 1.0, 9.0] {
        put.record(value);
    }
    to_next_minute(&recorder).await;
    put.record(100.0);
    // The first tick (60 s after the start) and the next take only finished minutes.
    tokio::time::sleep(Duration::from_secs(125)).await;
    let datums = double.datums();
    let buffering = named(&datums, "BufferingTime");
    assert_eq!(buffering.len(), 2, "{datums:?}");
    assert_eq!(stats(buffering[0]), (3.0, 15.0, 1.0, 9.0));
    assert_eq!(stats(buffering[1]), (1.0, 100.0, 100.0, 100.0));
    let first = buffering[0]
        .timestamp()
        .map(|t| t.secs())
        .unwrap_or_default();
    let second = buffering[1]
        .timestamp()
        .map(|t| t.secs())
        .unwrap_or_default();
    assert_eq!(first % 60, 0);
    assert_eq!(second - first, 60);
    assert_eq!(
        buffering[0].unit(),
        Some(&aws_sdk_cloudwatch::types::StandardUnit::Milliseconds)
    );
    assert_eq!(
        double.calls.lock().map(|c| c[0].0.clone()).ok().as_deref(),
        Some("KinesisProducerLibrary")
    );
}

#[tokio::test(start_paused = true)]
async fn counters_are_samples_of_their_increments_and_gauges_of_their_values() {
    let double = Double::default();
    let publisher = Builder::producer()
        .granularity(Granularity::Global)
        .spawn_with(double.clone());
    let recorder = publisher.recorder();
    let put = recorder.register_counter(&stream_key("UserRecordsPut", "s"), &META);
    put.increment(10);
    put.increment(30);
    let pending = recorder.register_gauge(&stream_key("UserRecordsPending", "s"), &META);
    pending.set(4.0);
    pending.increment(2.0);
    publisher.flush().await;
    let datums = double.datums();
    assert_eq!(
        stats(named(&datums, "UserRecordsPut")[0]),
        (2.0, 40.0, 10.0, 30.0)
    );
    assert_eq!(
        stats(named(&datums, "UserRecordsPending")[0]),
        (2.0, 10.0, 4.0, 6.0)
    );
}

#[tokio::test(start_paused = true)]
async fn levels_filter_the_kpl_table() {
    for (level, expected) in [
        (Level::None, vec![]),
        (Level::Summary, vec!["UserRecordsPut"]),
        (
            Level::Detailed,
            vec!["UserRecordsPut", "UserRecordsReceived"],
        ),
    ] {
        let double = Double::default();
        let publisher = Builder::producer()
            .level(level)
            .granularity(Granularity::Global)
            .spawn_with(double.clone());
        let recorder = publisher.recorder();
        for name in [
            "UserRecordsPut",
            "UserRecordsReceived",
            "SomeoneElsesMetric",
        ] {
            recorder
                .register_counter(&stream_key(name, "s"), &META)
                .increment(1);
        }
        publisher.flush().await;
        let mut names: Vec<String> = double
            .datums()
            .iter()
            .filter_map(|d| d.metric_name().map(str::to_owned))
            .collect();
        names.sort();
        assert_eq!(names, expected, "{level}");
        if level == Level::None {
            assert_eq!(double.calls(), 0, "level none makes no call");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn kpl_granularity_publishes_every_coarser_prefix() {
    let key = metrics::Key::from_parts(
        "ErrorsByCode",
        vec![
            metrics::Label::new("stream", "s"),
            metrics::Label::new("shard", "shardId-000000000001"),
            metrics::Label::new("error_code", "Throttled"),
        ],
    );
    let shard_key = metrics::Key::from_parts(
        "UserRecordsPut",
        vec![
            metrics::Label::new("stream", "s"),
            metrics::Label::new("shard", "shardId-000000000001"),
        ],
    );
    for (granularity, errors, puts) in [
        (Granularity::Global, 2, 1),
        (Granularity::Stream, 3, 2),
        (Granularity::Shard, 4, 3),
    ] {
        let double = Double::default();
        let publisher = Builder::producer()
            .granularity(granularity)
            .spawn_with(double.clone());
        let recorder = publisher.recorder();
        recorder.register_counter(&key, &META).increment(2);
        recorder.register_counter(&shard_key, &META).increment(5);
        publisher.flush().await;
        let datums = double.datums();
        let mut seen: Vec<Vec<(String, String)>> = named(&datums, "ErrorsByCode")
            .into_iter()
            .map(dims)
            .collect();
        seen.sort();
        assert_eq!(seen.len(), errors, "{granularity:?}: {seen:?}");
        assert!(seen.contains(&vec![]));
        assert!(seen.contains(&vec![("ErrorCode".into(), "Throttled".into())]));
        let puts_seen: Vec<_> = named(&datums, "UserRecordsPut")
            .into_iter()
            .map(dims)
            .collect();
        assert_eq!(puts_seen.len(), puts, "{granularity:?}: {puts_seen:?}");
        if granularity == Granularity::Shard {
            assert!(puts_seen.contains(&vec![
                ("StreamName".into(), "s".into()),
                ("ShardId".into(), "shardId-000000000001".into())
            ]));
        }
        for datum in named(&datums, "UserRecordsPut") {
            assert_eq!(
                stats(datum),
                (1.0, 5.0, 5.0, 5.0),
                "each roll-up sees every sample"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn kcl_dimensions_follow_the_scope_and_the_enabled_set() {
    let shard = metrics::Key::from_parts(
        "RecordsProcessed",
        vec![
            metrics::Label::new("stream", "orders"),
            metrics::Label::new("shard", "shardId-000000000002"),
        ],
    );
    let lease =
        metrics::Key::from_parts("CurrentLeases", vec![metrics::Label::new("table", "app")]);
    let double = Double::default();
    let publisher = Builder::consumer("my-app", "worker-1").spawn_with(double.clone());
    let recorder = publisher.recorder();
    recorder.register_counter(&shard, &META).increment(3);
    recorder.register_gauge(&lease, &META).set(2.0);
    publisher.flush().await;
    let datums = double.datums();
    assert_eq!(
        double.calls.lock().map(|c| c[0].0.clone()).ok().as_deref(),
        Some("my-app")
    );
    assert_eq!(
        dims(named(&datums, "RecordsProcessed")[0]),
        vec![
            ("Operation".to_owned(), "ProcessTask".to_owned()),
            ("ShardId".to_owned(), "shardId-000000000002".to_owned())
        ]
    );
    assert_eq!(
        dims(named(&datums, "CurrentLeases")[0]),
        vec![
            ("Operation".to_owned(), "RenewAllLeases".to_owned()),
            ("WorkerIdentifier".to_owned(), "worker-1".to_owned())
        ]
    );

    let double = Double::default();
    let publisher = Builder::consumer("my-app", "worker-1")
        .dimensions(&[Dimension::StreamId])
        .level(Level::Summary)
        .spawn_with(double.clone());
    let recorder = publisher.recorder();
    recorder.register_counter(&shard, &META).increment(3);
    recorder
        .register_counter(
            &metrics::Key::from_parts(
                "TakeLeases.Failures",
                vec![metrics::Label::new("table", "app")],
            ),
            &META,
        )
        .increment(1);
    publisher.flush().await;
    let datums = double.datums();
    assert_eq!(
        dims(named(&datums, "RecordsProcessed")[0]),
        vec![
            ("Operation".to_owned(), "ProcessTask".to_owned()),
            ("StreamId".to_owned(), "orders".to_owned())
        ]
    );
    assert!(
        named(&datums, "TakeLeases.Failures").is_empty(),
        "detailed only"
    );
}

#[tokio::test(start_paused = true)]
async fn batches_stay_within_the_per_call_limits() {
    let double = Double::default();
    let publisher = Builder::producer()
        .granularity(Granularity::Stream)
        .spawn_with(double.clone());
    let recorder = publisher.recorder();
    // 1 250 streams with 128-character names: 2 500 series (each stream and overall... the
    // overall one is shared), large enough for the size bound to matter.
    for stream in 0..1_250 {
        let name = format!("{stream:0>128}");
        recorder
            .register_counter(&stream_key("UserRecordsPut", &name), &META)
            .increment(1);
    }
    publisher.flush().await;
    let calls = double.calls.lock().map(|c| c.clone()).unwrap_or_default();
    let total: usize = calls.iter().map(|(_, d)| d.len()).sum();
    assert_eq!(total, 1_251);
    assert!(calls.len() >= 2);
    for (_, data) in &calls {
        assert!(data.len() <= MAX_DATUMS_PER_CALL);
        let size: usize = data
            .iter()
            .map(|d| {
                let series = table::Series {
                    name: d.metric_name().unwrap_or_default().to_owned(),
                    unit: aws_sdk_cloudwatch::types::StandardUnit::Count,
                    dimensions: dims(d),
                };
                upload::estimate(&series)
            })
            .sum();
        assert!(size <= MAX_PAYLOAD_BYTES, "{size}");
    }
    assert_eq!(publisher.stats().datums_sent, 1_251);
}

#[tokio::test(start_paused = true)]
async fn throttled_calls_are_retried_then_dropped_and_counted() {
    let double = Double::default();
    if let Ok(mut script) = double.script.lock() {
        script.extend([
            Err(PutError::Retry("Throttling".into())),
            Ok(()),
            Err(PutError::Retry("Throttling".into())),
            Err(PutError::Retry("Throttling".into())),
            Err(PutError::Retry("Throttling".into())),
        ]);
    }
    let publisher = Builder::producer().spawn_with(double.clone());
    let recorder = publisher.recorder();
    let put = recorder.register_counter(&stream_key("UserRecordsPut", "s"), &META);
    put.increment(1);
    publisher.flush().await;
    let stats = publisher.stats();
    assert_eq!(
        (stats.calls, stats.retries, stats.failed_attempts),
        (1, 1, 1)
    );
    put.increment(1);
    publisher.flush().await;
    let stats = publisher.stats();
    assert_eq!(stats.failed_attempts, 4);
    assert_eq!(stats.retries, 3);
    assert_eq!(
        stats.datums_failed, 2,
        "the second call's series: the stream's and overall"
    );
    assert_eq!(double.calls(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_hung_endpoint_never_blocks_recording_and_its_timeouts_are_counted() {
    let double = Double {
        hang: true,
        ..Double::default()
    };
    let publisher = Builder::producer()
        .granularity(Granularity::Global)
        .spawn_with(double.clone());
    let recorder = publisher.recorder();
    let put = recorder.register_histogram(&stream_key("RequestTime", "s"), &META);
    let started = std::time::Instant::now();
    for minute in 0..10 {
        for value in 0..1_000 {
            put.record(value as f64);
        }
        if minute < 9 {
            to_next_minute(&recorder).await;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "recording went at memory speed"
    );
    let stats = publisher.stats();
    // Each call: 3 attempts of 10 s, then its minutes are given up.
    assert!(stats.failed_attempts >= 3 * 7, "{stats:?}");
    assert!(stats.datums_failed >= 7, "{stats:?}");
    assert_eq!(stats.calls, 0);
}

#[tokio::test(start_paused = true)]
async fn an_uploader_stuck_in_a_call_keeps_memory_bounded() {
    let double = Double {
        hang: true,
        ..Double::default()
    };
    let publisher = Builder::producer()
        .granularity(Granularity::Global)
        .call_timeout(Duration::from_secs(24 * 3600))
        .max_buffered_minutes(3)
        .spawn_with(double.clone());
    let recorder = publisher.recorder();
    let put = recorder.register_histogram(&stream_key("RequestTime", "s"), &META);
    for _ in 0..10 {
        put.record(1.0);
        to_next_minute(&recorder).await;
    }
    let stats = publisher.stats();
    assert_eq!(double.calls(), 1, "stuck in its first call");
    // The first call took 1 or 2 minutes; of the 8 or more left, 3 are kept.
    assert!(stats.minutes_dropped >= 5, "{stats:?}");
    let held: usize = recorder.cells().iter().map(|c| c.take(None).len()).sum();
    assert_eq!(held, 3);
}

#[tokio::test(start_paused = true)]
async fn series_beyond_the_cap_are_refused_and_counted() {
    let double = Double::default();
    let publisher = Builder::producer()
        .granularity(Granularity::Stream)
        .max_series(5)
        .spawn_with(double.clone());
    let recorder = publisher.recorder();
    for stream in 0..10 {
        recorder
            .register_counter(&stream_key("UserRecordsPut", &format!("s{stream}")), &META)
            .increment(1);
    }
    publisher.flush().await;
    let stats = publisher.stats();
    assert_eq!(stats.series, 5, "the overall series and 4 streams");
    assert_eq!(stats.series_refused, 6);
    assert_eq!(double.datums().len(), 5);
}

#[test]
fn levels_and_granularities_parse_as_the_kpl_and_the_kcl_write_them() {
    assert_eq!("SUMMARY".parse(), Ok(Level::Summary));
    assert_eq!("detailed".parse(), Ok(Level::Detailed));
    assert_eq!("none".parse(), Ok(Level::None));
    assert!("all".parse::<Level>().is_err());
    assert_eq!("shard".parse(), Ok(Granularity::Shard));
}

#[tokio::test(start_paused = true)]
async fn a_key_registered_at_every_update_feeds_one_series() {
    let double = Double::default();
    let publisher = Builder::consumer("app", "w").spawn_with(double.clone());
    let recorder = publisher.recorder();
    // As the consumer's facade calls do: the handle is looked up again at every update, and
    // the lease metrics' `table` label is no dimension.
    for table in ["a", "b"] {
        for _ in 0..10_000 {
            recorder
                .register_counter(
                    &metrics::Key::from_parts(
                        "TakenLeases",
                        vec![metrics::Label::new("table", table)],
                    ),
                    &META,
                )
                .increment(1);
        }
    }
    publisher.flush().await;
    assert_eq!(publisher.stats().series, 1);
    let datums = double.datums();
    assert_eq!(datums.len(), 1);
    assert_eq!(stats(&datums[0]), (20_000.0, 20_000.0, 1.0, 1.0));
}
