//! Consumer counters: a snapshot API and the `metrics` crate facade, with the Java KCL's metric
//! names.
//!
//! | metric | kind | labels | Java KCL |
//! |---|---|---|---|
//! | `MillisBehindLatest` | gauge (ms) | `stream`, `shard` | `MillisBehindLatest` |
//! | `SecondsSinceLastSuccessfulRead` | gauge (s) | `stream`, `shard` | (none: the time since the shard's last successful GetRecords answer or subscription event, or since its reading started; published every second) |
//! | `RecordsProcessed` | counter | `stream`, `shard` | `RecordsProcessed` |
//! | `DataBytesProcessed` | counter (bytes) | `stream`, `shard` | `DataBytesProcessed` |
//! | `RecordProcessor.processRecords.Time` | histogram (ms) | `stream`, `shard` | same |
//! | `RecordProcessor.Failures` | counter | `stream`, `shard` | (none: a processor that panicked or timed out) |
//! | `RecordProcessor.shardEnded.Failures` | counter | `stream`, `shard` | (none: a `shard_ended` call that did not store SHARD_END; the Java KCL logs "Application didn't checkpoint at end of shard") |
//! | `ShardEnd.Abandoned` | counter | `stream`, `shard` | (none: the worker stopped calling `shard_ended` after `max_shard_end_attempts`) |
//! | `GetRecords.Throttled` | counter | `stream`, `shard` | `ProvisionedThroughputExceededException` counts |
//! | `GetRecords.ExpiredIterator` | counter | `stream`, `shard` | `ExpiredIteratorException` counts |
//! | `BatchMemory.Bytes` | gauge (bytes) | `stream` | (none: decoded batches held by the worker now, read ahead or being processed, against [`batch_memory_budget`](crate::SchedulerBuilder::batch_memory_budget)) |
//! | `CurrentLeases` | gauge | `table` | `CurrentLeases` |
//! | `TakenLeases` / `StolenLeases` / `LostLeases` | counters | `table` | `TakenLeases` / (none) / `LostLeases` |
//! | `RenewLease.Failures` / `TakeLeases.Failures` | counters | `table` | `RenewLease.Success` = 0 / `TakeLeases.Success` = 0 |
//! | `NeededLeases`, `NumWorkers`, `TotalLeases` | gauges | `table` | same (`TakeLeases`) |
//! | `TargetLeases` | gauge | `table` | (none: the worker's fair share, the leases it should hold; beside `CurrentLeases`, whether it holds them) |
//!
//! When a shard leaves the worker its per-shard gauges (`MillisBehindLatest`,
//! `SecondsSinceLastSuccessfulRead`) are no longer updated, and never set to 0: a 0 would
//! claim the shard is caught up here while the worker that took it over may be behind, and a
//! maximum over the fleet would hide that. The `metrics` facade cannot remove a series;
//! exporters drop one that stops being updated (`metrics-exporter-prometheus`'s
//! `idle_timeout`; CloudWatch exporters publish only what was recorded in each period). The
//! [`ConsumerSnapshot`] of [`SchedulerHandle::metrics`](crate::SchedulerHandle::metrics)
//! removes the shard outright.
//!
//! With the feature `cloudwatch`, `kcl::cloudwatch` publishes them to CloudWatch as the
//! Java KCL does, under the application's namespace: each metric with its KCL `Operation`
//! (`ProcessTask`, `ShutdownTask`, `RenewAllLeases`, `TakeLeases`), `ShardId` from the label
//! `shard`, `StreamId` from `stream` (when enabled), and `WorkerIdentifier` on the lease
//! metrics from the publisher's worker id (these metrics carry the lease table, not the
//! worker: one worker per publisher).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use metrics::Unit;
use tokio::time::Instant;

use crate::retrieval::Counters;

/// How often the per-shard `SecondsSinceLastSuccessfulRead` gauges are published.
pub(crate) const READ_AGE_INTERVAL: Duration = Duration::from_secs(1);

/// The per-shard gauges' names.
const MILLIS_BEHIND_LATEST: &str = "MillisBehindLatest";
const SECONDS_SINCE_LAST_READ: &str = "SecondsSinceLastSuccessfulRead";
/// The worker's gauge of decoded batches held.
const BATCH_MEMORY: &str = "BatchMemory.Bytes";

/// One shard's reading: its source's counters, and when that source was created.
#[derive(Debug)]
struct Reading {
    counters: Arc<Counters>,
    since: Instant,
}

impl Reading {
    fn age(&self, now: Instant) -> Duration {
        let last = self
            .counters
            .last_read()
            .map_or(self.since, |at| at.max(self.since));
        now.saturating_duration_since(last)
    }
}

/// Live counters of one worker.
#[derive(Debug, Default)]
pub(crate) struct ConsumerMetrics {
    stream: String,
    records: AtomicU64,
    bytes: AtomicU64,
    batches: AtomicU64,
    processing_micros: AtomicU64,
    processor_failures: AtomicU64,
    shard_ends_abandoned: AtomicU64,
    behind: Mutex<BTreeMap<String, i64>>,
    reading: Mutex<BTreeMap<String, Reading>>,
}

impl ConsumerMetrics {
    pub(crate) fn new(stream: impl Into<String>) -> Self {
        describe();
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

    /// The gauge of the bytes of decoded batches the worker holds (its memory budget's).
    pub(crate) fn batch_memory_gauge(&self) -> metrics::Gauge {
        metrics::gauge!(BATCH_MEMORY, "stream" => self.stream.clone())
    }

    pub(crate) fn behind(&self, shard: &str, millis: i64) {
        if let Ok(mut behind) = self.behind.lock() {
            behind.insert(shard.to_owned(), millis);
        }
        metrics::gauge!(MILLIS_BEHIND_LATEST, &self.labels(shard)).set(millis as f64);
    }

    /// The shard's reading (re)started with a source whose successful reads `counters`
    /// records: its read age counts from now until the first one.
    pub(crate) fn reading(&self, shard: &str, counters: Arc<Counters>) {
        if let Ok(mut reading) = self.reading.lock() {
            let since = Instant::now();
            reading.insert(shard.to_owned(), Reading { counters, since });
        }
    }

    /// Publishes every shard's `SecondsSinceLastSuccessfulRead` (every
    /// [`READ_AGE_INTERVAL`]: the age grows while nothing is read, so it must be set again
    /// even when nothing happens).
    pub(crate) fn publish_read_ages(&self) {
        let now = Instant::now();
        let ages: Vec<(String, Duration)> = match self.reading.lock() {
            Ok(reading) => reading
                .iter()
                .map(|(shard, reading)| (shard.clone(), reading.age(now)))
                .collect(),
            Err(_) => return,
        };
        for (shard, age) in ages {
            metrics::gauge!(SECONDS_SINCE_LAST_READ, &self.labels(&shard)).set(age.as_secs_f64());
        }
    }

    pub(crate) fn processor_failed(&self, shard: &str) {
        self.processor_failures.fetch_add(1, Relaxed);
        metrics::counter!("RecordProcessor.Failures", &self.labels(shard)).increment(1);
    }

    /// `shard_ended` returned without storing SHARD_END (or stalled): one attempt.
    pub(crate) fn shard_end_not_stored(&self, shard: &str) {
        metrics::counter!("RecordProcessor.shardEnded.Failures", &self.labels(shard)).increment(1);
    }

    /// The worker gave up on the shard's end (see `max_shard_end_attempts`).
    pub(crate) fn shard_end_abandoned(&self, shard: &str) {
        self.shard_ends_abandoned.fetch_add(1, Relaxed);
        metrics::counter!("ShardEnd.Abandoned", &self.labels(shard)).increment(1);
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

    /// The shard left this worker: it leaves the snapshot, and its gauges are no longer
    /// updated (never zeroed: see the module docs).
    pub(crate) fn forget(&self, shard: &str) {
        if let Ok(mut behind) = self.behind.lock() {
            behind.remove(shard);
        }
        if let Ok(mut reading) = self.reading.lock() {
            reading.remove(shard);
        }
    }

    pub(crate) fn snapshot(&self, leases_held: usize) -> ConsumerSnapshot {
        ConsumerSnapshot {
            records_processed: self.records.load(Relaxed),
            data_bytes_processed: self.bytes.load(Relaxed),
            batches_processed: self.batches.load(Relaxed),
            processing_time: Duration::from_micros(self.processing_micros.load(Relaxed)),
            processor_failures: self.processor_failures.load(Relaxed),
            shard_ends_abandoned: self.shard_ends_abandoned.load(Relaxed),
            millis_behind_latest: self.behind.lock().map(|b| b.clone()).unwrap_or_default(),
            time_since_last_read: self
                .reading
                .lock()
                .map(|reading| {
                    let now = Instant::now();
                    reading
                        .iter()
                        .map(|(shard, reading)| (shard.clone(), reading.age(now)))
                        .collect()
                })
                .unwrap_or_default(),
            leases_held,
        }
    }
}

/// Describes the per-shard gauges to the installed recorder (once per process; a recorder
/// installed later goes without the descriptions).
fn describe() {
    static DESCRIBED: Once = Once::new();
    DESCRIBED.call_once(|| {
        metrics::describe_gauge!(
            MILLIS_BEHIND_LATEST,
            Unit::Milliseconds,
            "How far the shard's last read was behind its tip; not updated once the shard leaves the worker"
        );
        metrics::describe_gauge!(
            SECONDS_SINCE_LAST_READ,
            Unit::Seconds,
            "Time since the shard's last successful read (GetRecords answer or subscription event); not updated once the shard leaves the worker"
        );
        metrics::describe_gauge!(
            BATCH_MEMORY,
            Unit::Bytes,
            "Bytes of decoded batches the worker holds now (read ahead or being processed), against its batch memory budget"
        );
    });
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
    /// Processor calls that panicked, went the processor timeout without a checkpoint call,
    /// or asked to be replaced ([`Checkpointer::request_restart`](crate::Checkpointer::request_restart)).
    pub processor_failures: u64,
    /// Shard ends given up on: `shard_ended` did not store SHARD_END in
    /// [`max_shard_end_attempts`](crate::SchedulerBuilder::max_shard_end_attempts) calls.
    pub shard_ends_abandoned: u64,
    /// The latest MillisBehindLatest of each shard being processed.
    pub millis_behind_latest: BTreeMap<String, i64>,
    /// Per shard being read, the time since its last successful read (a GetRecords answer or
    /// a subscription event, records or not), or since its reading started if none succeeded
    /// yet: it grows while reads fail (they are retried inside the source).
    pub time_since_last_read: BTreeMap<String, Duration>,
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
