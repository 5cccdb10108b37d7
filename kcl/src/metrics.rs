//! Consumer counters: a snapshot API and the `metrics` crate facade, with the Java KCL's metric
//! names.
//!
//! | metric | kind | labels | Java KCL |
//! |---|---|---|---|
//! | `MillisBehindLatest` | gauge (ms) | `stream`, `shard` | `MillisBehindLatest` |
//! | `RecordsProcessed` | counter | `stream`, `shard` | `RecordsProcessed` |
//! | `DataBytesProcessed` | counter (bytes) | `stream`, `shard` | `DataBytesProcessed` |
//! | `RecordProcessor.processRecords.Time` | histogram (ms) | `stream`, `shard` | same |
//! | `RecordProcessor.Failures` | counter | `stream`, `shard` | (none: a processor that panicked or timed out) |
//! | `GetRecords.Throttled` | counter | `stream`, `shard` | `ProvisionedThroughputExceededException` counts |
//! | `GetRecords.ExpiredIterator` | counter | `stream`, `shard` | `ExpiredIteratorException` counts |
//! | `CurrentLeases` | gauge | `table` | `CurrentLeases` |
//! | `TakenLeases` / `StolenLeases` / `LostLeases` | counters | `table` | `TakenLeases` / (none) / `LostLeases` |
//! | `RenewLease.Failures` / `TakeLeases.Failures` | counters | `table` | `RenewLease.Success` = 0 / `TakeLeases.Success` = 0 |
//! | `NeededLeases`, `NumWorkers`, `TotalLeases` | gauges | `table` | same (`TakeLeases`) |
//!
//! When a shard leaves the worker its `MillisBehindLatest` gauge is set to 0 (the `metrics`
//! facade cannot remove a series): a stale value would otherwise stay in this worker's export
//! forever, and a maximum over the fleet would report a lag nobody has; the worker that takes
//! the shard over reports the real value. Exporters with an idle timeout (e.g.
//! `metrics-exporter-prometheus`'s `idle_timeout`) drop the zeroed series once it stops
//! changing. The [`ConsumerSnapshot`] of [`SchedulerHandle::metrics`](crate::SchedulerHandle::metrics)
//! removes the shard outright.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Live counters of one worker.
#[derive(Debug, Default)]
pub(crate) struct ConsumerMetrics {
    stream: String,
    records: AtomicU64,
    bytes: AtomicU64,
    batches: AtomicU64,
    processing_micros: AtomicU64,
    processor_failures: AtomicU64,
    behind: Mutex<BTreeMap<String, i64>>,
}

impl ConsumerMetrics {
    pub(crate) fn new(stream: impl Into<String>) -> Self {
        Self {
            stream: stream.into(),
            ..Self::default()
        }
    }

    fn labels(&self, shard: &str) -> [(&'static str, String); 2] {
        [("stream", self.stream.clone()), ("shard", shard.to_owned())]
    }

    pub(crate) fn processed(
        &self,
        shard: &str,
        records: usize,
        bytes: usize,
        took: Duration,
        behind: Option<i64>,
    ) {
        self.records.fetch_add(records as u64, Relaxed);
        self.bytes.fetch_add(bytes as u64, Relaxed);
        self.batches.fetch_add(1, Relaxed);
        self.processing_micros
            .fetch_add(took.as_micros() as u64, Relaxed);
        let labels = self.labels(shard);
        metrics::counter!("RecordsProcessed", &labels).increment(records as u64);
        metrics::counter!("DataBytesProcessed", &labels).increment(bytes as u64);
        metrics::histogram!("RecordProcessor.processRecords.Time", &labels)
            .record(took.as_secs_f64() * 1_000.0);
        if let Some(behind) = behind {
            self.behind(shard, behind);
        }
    }

    pub(crate) fn behind(&self, shard: &str, millis: i64) {
        if let Ok(mut behind) = self.behind.lock() {
            behind.insert(shard.to_owned(), millis);
        }
        metrics::gauge!("MillisBehindLatest", &self.labels(shard)).set(millis as f64);
    }

    pub(crate) fn processor_failed(&self, shard: &str) {
        self.processor_failures.fetch_add(1, Relaxed);
        metrics::counter!("RecordProcessor.Failures", &self.labels(shard)).increment(1);
    }

    /// Retrieval counters since the last call: throttled calls and expired iterators.
    pub(crate) fn retrieval(&self, shard: &str, throttled: u64, expired_iterators: u64) {
        let labels = self.labels(shard);
        if throttled > 0 {
            metrics::counter!("GetRecords.Throttled", &labels).increment(throttled);
        }
        if expired_iterators > 0 {
            metrics::counter!("GetRecords.ExpiredIterator", &labels).increment(expired_iterators);
        }
    }

    /// The shard left this worker: its gauge goes to 0 (see the module docs) and it leaves
    /// the snapshot.
    pub(crate) fn forget(&self, shard: &str) {
        let known = self
            .behind
            .lock()
            .map(|mut behind| behind.remove(shard).is_some())
            .unwrap_or(false);
        if known {
            metrics::gauge!("MillisBehindLatest", &self.labels(shard)).set(0.0);
        }
    }

    pub(crate) fn snapshot(&self, leases_held: usize) -> ConsumerSnapshot {
        ConsumerSnapshot {
            records_processed: self.records.load(Relaxed),
            data_bytes_processed: self.bytes.load(Relaxed),
            batches_processed: self.batches.load(Relaxed),
            processing_time: Duration::from_micros(self.processing_micros.load(Relaxed)),
            processor_failures: self.processor_failures.load(Relaxed),
            millis_behind_latest: self.behind.lock().map(|b| b.clone()).unwrap_or_default(),
            leases_held,
        }
    }
}

/// A worker's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerSnapshot {
    /// User records handed to processors.
    pub records_processed: u64,
    /// Bytes of their data.
    pub data_bytes_processed: u64,
    /// `process_records` calls.
    pub batches_processed: u64,
    /// Time spent inside `process_records`.
    pub processing_time: Duration,
    /// Processor calls that panicked or took longer than the processor timeout.
    pub processor_failures: u64,
    /// The latest MillisBehindLatest of each shard being processed.
    pub millis_behind_latest: BTreeMap<String, i64>,
    /// Leases this worker holds.
    pub leases_held: usize,
}

#[cfg(test)]
pub(crate) mod recorder {
    //! A `metrics` recorder that keeps every value, for tests.

    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use metrics::{
        Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata,
        Recorder, SharedString, Unit,
    };

    type Cells = Arc<Mutex<BTreeMap<String, Arc<AtomicU64>>>>;
    type Samples = Arc<Mutex<BTreeMap<String, Arc<Mutex<Vec<f64>>>>>>;

    /// Values by `name{label=value,...}`.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct TestRecorder {
        pub(crate) counters: Cells,
        pub(crate) gauges: Cells,
        pub(crate) histograms: Samples,
    }

    fn name(key: &Key) -> String {
        let mut labels: Vec<String> = key
            .labels()
            .map(|label| format!("{}={}", label.key(), label.value()))
            .collect();
        labels.sort();
        format!("{}{{{}}}", key.name(), labels.join(","))
    }

    struct Cell(Arc<AtomicU64>);
    impl CounterFn for Cell {
        fn increment(&self, value: u64) {
            self.0.fetch_add(value, Ordering::Relaxed);
        }
        fn absolute(&self, value: u64) {
            self.0.store(value, Ordering::Relaxed);
        }
    }
    impl GaugeFn for Cell {
        fn increment(&self, value: f64) {
            let now = f64::from_bits(self.0.load(Ordering::Relaxed)) + value;
            self.0.store(now.to_bits(), Ordering::Relaxed);
        }
        fn decrement(&self, value: f64) {
            GaugeFn::increment(self, -value);
        }
        fn set(&self, value: f64) {
            self.0.store(value.to_bits(), Ordering::Relaxed);
        }
    }
    struct Values(Arc<Mutex<Vec<f64>>>);
    impl HistogramFn for Values {
        fn record(&self, value: f64) {
            if let Ok(mut values) = self.0.lock() {
                values.push(value);
            }
        }
    }

    impl TestRecorder {
        pub(crate) fn counter(&self, key: &str) -> Option<u64> {
            let counters = self.counters.lock().ok()?;
            counters.get(key).map(|c| c.load(Ordering::Relaxed))
        }

        pub(crate) fn gauge(&self, key: &str) -> Option<f64> {
            let gauges = self.gauges.lock().ok()?;
            gauges
                .get(key)
                .map(|g| f64::from_bits(g.load(Ordering::Relaxed)))
        }

        pub(crate) fn histogram(&self, key: &str) -> Vec<f64> {
            self.histograms
                .lock()
                .ok()
                .and_then(|h| h.get(key).and_then(|v| v.lock().ok().map(|v| v.clone())))
                .unwrap_or_default()
        }
    }

    impl Recorder for TestRecorder {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let cell = self
                .counters
                .lock()
                .map(|mut c| c.entry(name(key)).or_default().clone())
                .unwrap_or_default();
            Counter::from_arc(Arc::new(Cell(cell)))
        }

        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            let cell = self
                .gauges
                .lock()
                .map(|mut g| g.entry(name(key)).or_default().clone())
                .unwrap_or_default();
            Gauge::from_arc(Arc::new(Cell(cell)))
        }

        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            let values = self
                .histograms
                .lock()
                .map(|mut h| h.entry(name(key)).or_default().clone())
                .unwrap_or_default();
            Histogram::from_arc(Arc::new(Values(values)))
        }
    }
}
