//! The metrics the producer publishes through the `metrics` facade: the KPL's names, labelled
//! with the stream.

use std::collections::{BTreeMap, HashMap};

use super::tests::{STREAM, builder, results, send_all};
use crate::testing::{CallFault, FakeKinesis};

/// Counts what the producer publishes through the `metrics` facade.
#[derive(Default)]
struct CapturedCounters {
    counters: std::sync::Mutex<HashMap<String, std::sync::Arc<CapturedCounter>>>,
}

#[derive(Default)]
struct CapturedCounter(std::sync::atomic::AtomicU64);

impl metrics::CounterFn for CapturedCounter {
    fn increment(&self, value: u64) {
        self.0
            .fetch_add(value, std::sync::atomic::Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, std::sync::atomic::Ordering::Relaxed);
    }
}

impl CapturedCounters {
    fn value(&self, key: &str) -> u64 {
        self.counters
            .lock()
            .unwrap()
            .get(key)
            .map_or(0, |c| c.0.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Per shard label, the values of the counters named `{prefix},shard=...}`.
    fn by_shard(&self, prefix: &str) -> BTreeMap<String, u64> {
        let counters = self.counters.lock().unwrap();
        counters
            .iter()
            .filter_map(|(key, counter)| {
                let shard = key.strip_prefix(prefix)?.strip_prefix(",shard=")?;
                let value = counter.0.load(std::sync::atomic::Ordering::Relaxed);
                Some((shard.trim_end_matches('}').to_owned(), value))
            })
            .collect()
    }
}

impl metrics::Recorder for CapturedCounters {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let counter = self
            .counters
            .lock()
            .unwrap()
            .entry(name)
            .or_default()
            .clone();
        metrics::Counter::from_arc(counter)
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

#[test]
fn metrics_carry_the_kpl_names_and_the_stream() {
    let recorder = CapturedCounters::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let fake = FakeKinesis::new();
        fake.create_stream(STREAM, 2);
        fake.script([CallFault::FailEntries {
            positions: vec![0],
            code: "ProvisionedThroughputExceededException".into(),
        }]);
        let producer = builder(&fake).build().await.unwrap();
        let results = results(send_all(&producer, 100, 10).await).await;
        assert!(results.iter().all(Result::is_ok));
        producer.shutdown().await;
    });
    let stream = format!("stream={STREAM}");
    assert_eq!(
        recorder.value(&format!("UserRecordsReceived{{{stream}}}")),
        100
    );
    // Counted where they were stored: per shard, as the KPL's shard granularity has them.
    let put = recorder.by_shard(&format!("UserRecordsPut{{{stream}"));
    assert_eq!(put.values().sum::<u64>(), 100);
    assert_eq!(
        put.keys().collect::<Vec<_>>(),
        ["shardId-000000000000", "shardId-000000000001"]
    );
    let kinesis_put = recorder.by_shard(&format!("KinesisRecordsPut{{{stream}"));
    assert!(kinesis_put.values().sum::<u64>() >= 2);
    assert!(recorder.value(&format!("RetriesPerRecord{{{stream}}}")) >= 1);
    assert!(recorder.value(&format!("AllErrors{{{stream}}}")) >= 1);
    assert!(
        recorder.value(&format!(
            "ErrorsByCode{{{stream},error_code=ProvisionedThroughputExceededException}}"
        )) >= 1
    );
}
