//! Counters with the KPL's metric names, readable as a snapshot and published through the
//! `metrics` crate facade (any recorder the application installs sees them), labelled by stream.
//!
//! Facade names are the KPL's CloudWatch names: `UserRecordsReceived`, `UserRecordsPending`,
//! `UserRecordsPut`, `UserRecordsDataPut`, `KinesisRecordsPut`, `KinesisRecordsDataPut`,
//! `ErrorsByCode` (label `error_code`), `AllErrors`, `RetriesPerRecord`, `UserRecordExpired`,
//! `BufferingTime`, `RequestTime`, `UserRecordsPerKinesisRecord`,
//! `KinesisRecordsPerPutRecordsRequest`; and ours: `UserRecordsFailed`,
//! `UserRecordsPossiblyDuplicated`, `PutRecordsTimedOut`, `PutRecordsConcurrencyLimit`,
//! `UserRecordsPutWithoutShardMap` (stored while ListShards was denied or failing: alone,
//! unaggregated). Every one carries the label `stream`; those counted where a record is stored
//! (`UserRecordsPut`, `UserRecordsDataPut`, `KinesisRecordsPut`, `KinesisRecordsDataPut`,
//! `UserRecordsPerKinesisRecord`) also `shard`, the shard it was stored in, as the KPL's shard
//! granularity has them (sum over `shard` for the stream). Handles are registered when a stream
//! (or a shard) is first used: install the recorder before building the producer.
//!
//! With the feature `cloudwatch`, `kpl::cloudwatch` publishes them to CloudWatch as the KPL
//! does: its levels (`UserRecordsPut`, `KinesisRecordsPut`, `ErrorsByCode`, `AllErrors`,
//! `UserRecordExpired`, `BufferingTime` and our `UserRecordsFailed`,
//! `UserRecordsPossiblyDuplicated` are summary, the rest detailed) and its dimensions
//! (`StreamName` from the label `stream`, `ErrorCode` from `error_code`, `ShardId` from
//! `shard`; each also rolled up per stream and overall).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};

/// Live totals over every stream, updated by the pipeline.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    user_records_received: AtomicU64,
    user_records_put: AtomicU64,
    user_records_data_put: AtomicU64,
    kinesis_records_put: AtomicU64,
    kinesis_records_data_put: AtomicU64,
    put_records_calls: AtomicU64,
    put_records_timed_out: AtomicU64,
    all_errors: AtomicU64,
    retries: AtomicU64,
    user_records_expired: AtomicU64,
    user_records_failed: AtomicU64,
    possibly_duplicated: AtomicU64,
    without_shard_map: AtomicU64,
    buffering_time_micros: AtomicU64,
    request_time_micros: AtomicU64,
    concurrency_limit: AtomicU64,
    errors_by_code: Mutex<HashMap<String, u64>>,
}

/// The facade handles of one stream.
#[derive(Debug)]
pub(crate) struct StreamMetrics {
    stream: String,
    received: Counter,
    /// Per shard, registered when a record is first stored in it.
    shards: Mutex<HashMap<Arc<str>, ShardMetrics>>,
    all_errors: Counter,
    retries: Counter,
    expired: Counter,
    failed: Counter,
    possibly_duplicated: Counter,
    without_shard_map: Counter,
    timed_out: Counter,
    buffering_time: Histogram,
    request_time: Histogram,
    per_request: Histogram,
    pending: Gauge,
    concurrency: Gauge,
}

/// The facade handles of what is counted where a record is stored: labelled by stream and
/// shard, for the KPL's shard granularity (a recorder sums them for the stream).
#[derive(Debug)]
struct ShardMetrics {
    put: Counter,
    data_put: Counter,
    kinesis_put: Counter,
    kinesis_data_put: Counter,
    per_kinesis_record: Histogram,
}

impl ShardMetrics {
    fn new(stream: &str, shard: &str) -> Self {
        let labels = [("stream", stream.to_owned()), ("shard", shard.to_owned())];
        Self {
            put: metrics::counter!("UserRecordsPut", &labels),
            data_put: metrics::counter!("UserRecordsDataPut", &labels),
            kinesis_put: metrics::counter!("KinesisRecordsPut", &labels),
            kinesis_data_put: metrics::counter!("KinesisRecordsDataPut", &labels),
            per_kinesis_record: metrics::histogram!("UserRecordsPerKinesisRecord", &labels),
        }
    }
}

impl StreamMetrics {
    pub(crate) fn new(stream: &str) -> Self {
        let label = stream.to_owned();
        let counter = |name: &'static str| metrics::counter!(name, "stream" => label.clone());
        let histogram = |name: &'static str| metrics::histogram!(name, "stream" => label.clone());
        Self {
            received: counter("UserRecordsReceived"),
            shards: Mutex::default(),
            all_errors: counter("AllErrors"),
            retries: counter("RetriesPerRecord"),
            expired: counter("UserRecordExpired"),
            failed: counter("UserRecordsFailed"),
            possibly_duplicated: counter("UserRecordsPossiblyDuplicated"),
            without_shard_map: counter("UserRecordsPutWithoutShardMap"),
            timed_out: counter("PutRecordsTimedOut"),
            buffering_time: histogram("BufferingTime"),
            request_time: histogram("RequestTime"),
            per_request: histogram("KinesisRecordsPerPutRecordsRequest"),
            pending: metrics::gauge!("UserRecordsPending", "stream" => label.clone()),
            concurrency: metrics::gauge!("PutRecordsConcurrencyLimit", "stream" => label.clone()),
            stream: label,
        }
    }
}

impl Metrics {
    pub(crate) fn received(&self, stream: Option<&StreamMetrics>, records: u64) {
        if records > 0 {
            self.user_records_received.fetch_add(records, Relaxed);
            if let Some(stream) = stream {
                stream.received.increment(records);
            }
        }
    }

    pub(crate) fn put_call(
        &self,
        stream: &StreamMetrics,
        duration: Duration,
        kinesis_records: usize,
        timed_out: bool,
        concurrency_limit: usize,
    ) {
        self.put_records_calls.fetch_add(1, Relaxed);
        self.request_time_micros
            .fetch_add(duration.as_micros() as u64, Relaxed);
        self.concurrency_limit
            .store(concurrency_limit as u64, Relaxed);
        stream.request_time.record(duration.as_secs_f64() * 1e3);
        stream.per_request.record(kinesis_records as f64);
        stream.concurrency.set(concurrency_limit as f64);
        if timed_out {
            self.put_records_timed_out.fetch_add(1, Relaxed);
            stream.timed_out.increment(1);
        }
    }

    /// One Kinesis record stored in `shard`, carrying `user_records` of `user_bytes`.
    pub(crate) fn kinesis_record_put(
        &self,
        stream: &StreamMetrics,
        shard: &Arc<str>,
        user_records: usize,
        user_bytes: usize,
        bytes: usize,
    ) {
        self.kinesis_records_put.fetch_add(1, Relaxed);
        self.kinesis_records_data_put
            .fetch_add(bytes as u64, Relaxed);
        self.user_records_put
            .fetch_add(user_records as u64, Relaxed);
        self.user_records_data_put
            .fetch_add(user_bytes as u64, Relaxed);
        // A poisoned map only means a recorder panicked: its handles are still whole.
        let mut shards = stream.shards.lock().unwrap_or_else(|e| e.into_inner());
        let count = |handles: &ShardMetrics| {
            handles.kinesis_put.increment(1);
            handles.kinesis_data_put.increment(bytes as u64);
            handles.put.increment(user_records as u64);
            handles.data_put.increment(user_bytes as u64);
            handles.per_kinesis_record.record(user_records as f64);
        };
        // One lookup by reference; the key is cloned only the first time a shard stores.
        match shards.get(shard) {
            Some(handles) => count(handles),
            None => {
                let handles = ShardMetrics::new(&stream.stream, shard);
                count(&handles);
                shards.insert(shard.clone(), handles);
            }
        }
    }

    pub(crate) fn buffered(&self, stream: &StreamMetrics, time: Duration) {
        self.buffering_time_micros
            .fetch_add(time.as_micros() as u64, Relaxed);
        stream.buffering_time.record(time.as_secs_f64() * 1e3);
    }

    pub(crate) fn error(&self, stream: &StreamMetrics, code: &str, records: usize) {
        self.all_errors.fetch_add(records as u64, Relaxed);
        if let Ok(mut by_code) = self.errors_by_code.lock() {
            *by_code.entry(code.to_owned()).or_default() += records as u64;
        }
        stream.all_errors.increment(records as u64);
        metrics::counter!("ErrorsByCode", "stream" => stream.stream.clone(), "error_code" => code.to_owned())
            .increment(records as u64);
    }

    pub(crate) fn retried(&self, stream: &StreamMetrics, records: usize, unknown_fate: usize) {
        self.retries.fetch_add(records as u64, Relaxed);
        stream.retries.increment(records as u64);
        if unknown_fate > 0 {
            self.possibly_duplicated
                .fetch_add(unknown_fate as u64, Relaxed);
            stream.possibly_duplicated.increment(unknown_fate as u64);
        }
    }

    /// Records that a consumer may see twice for another reason than a lost answer (a
    /// misrouted aggregate sent again).
    pub(crate) fn possibly_duplicated(&self, stream: &StreamMetrics, records: usize) {
        self.possibly_duplicated.fetch_add(records as u64, Relaxed);
        stream.possibly_duplicated.increment(records as u64);
    }

    /// Records stored while the stream's map was unknown.
    pub(crate) fn sent_without_shard_map(&self, stream: &StreamMetrics, records: usize) {
        self.without_shard_map.fetch_add(records as u64, Relaxed);
        stream.without_shard_map.increment(records as u64);
    }

    pub(crate) fn failed(&self, stream: Option<&StreamMetrics>, failed: u64, expired: u64) {
        if failed > 0 {
            self.user_records_failed.fetch_add(failed, Relaxed);
            if let Some(stream) = stream {
                stream.failed.increment(failed);
            }
        }
        if expired > 0 {
            self.user_records_expired.fetch_add(expired, Relaxed);
            if let Some(stream) = stream {
                stream.expired.increment(expired);
            }
        }
    }

    pub(crate) fn pending(&self, stream: &StreamMetrics, pending: usize) {
        stream.pending.set(pending as f64);
    }

    pub(crate) fn snapshot(&self, pending: u64) -> MetricsSnapshot {
        let put = self.user_records_put.load(Relaxed);
        let kinesis = self.kinesis_records_put.load(Relaxed);
        let calls = self.put_records_calls.load(Relaxed);
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        MetricsSnapshot {
            user_records_received: self.user_records_received.load(Relaxed),
            user_records_pending: pending,
            user_records_put: put,
            user_records_data_put: self.user_records_data_put.load(Relaxed),
            kinesis_records_put: kinesis,
            kinesis_records_data_put: self.kinesis_records_data_put.load(Relaxed),
            put_records_calls: calls,
            put_records_timed_out: self.put_records_timed_out.load(Relaxed),
            all_errors: self.all_errors.load(Relaxed),
            errors_by_code: self
                .errors_by_code
                .lock()
                .map(|m| m.clone())
                .unwrap_or_default(),
            retries_per_record: ratio(self.retries.load(Relaxed), put.max(1)),
            user_records_expired: self.user_records_expired.load(Relaxed),
            user_records_failed: self.user_records_failed.load(Relaxed),
            user_records_possibly_duplicated: self.possibly_duplicated.load(Relaxed),
            user_records_put_without_shard_map: self.without_shard_map.load(Relaxed),
            mean_buffering_time: Duration::from_micros(
                self.buffering_time_micros.load(Relaxed) / kinesis.max(1),
            ),
            mean_request_time: Duration::from_micros(
                self.request_time_micros.load(Relaxed) / calls.max(1),
            ),
            user_records_per_kinesis_record: ratio(put, kinesis),
            kinesis_records_per_put_records_request: ratio(kinesis, calls),
            concurrency_limit: self.concurrency_limit.load(Relaxed),
        }
    }
}

/// The producer's counters at one moment, over every stream, named as the KPL names them.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// User records accepted by `send`/`try_send`.
    pub user_records_received: u64,
    /// User records accepted and not yet resolved.
    pub user_records_pending: u64,
    /// User records Kinesis stored.
    pub user_records_put: u64,
    /// Bytes of user data (data plus partition key) Kinesis stored.
    pub user_records_data_put: u64,
    /// Kinesis records (aggregates or single records) Kinesis stored.
    pub kinesis_records_put: u64,
    /// Bytes of those Kinesis records.
    pub kinesis_records_data_put: u64,
    /// PutRecords calls made.
    pub put_records_calls: u64,
    /// PutRecords calls that got no answer within their timeout (their records were sent again
    /// and may be stored twice).
    pub put_records_timed_out: u64,
    /// Failed user-record attempts, all codes.
    pub all_errors: u64,
    /// Failed user-record attempts by error code.
    pub errors_by_code: HashMap<String, u64>,
    /// Retries per stored user record.
    pub retries_per_record: f64,
    /// User records failed by TTL expiry.
    pub user_records_expired: u64,
    /// User records failed for good (expired, rejected, throttled with fail-fast, stopped).
    pub user_records_failed: u64,
    /// User records sent again after an attempt whose answer never came (a timeout, a dropped
    /// connection) or after their aggregate landed on the wrong shard: a consumer may see
    /// them twice. An upper bound on the duplicates the producer caused.
    pub user_records_possibly_duplicated: u64,
    /// User records stored while the stream's shard map was unknown (ListShards denied by the
    /// credentials' policy, or failing): sent alone, unaggregated, routed by Kinesis.
    pub user_records_put_without_shard_map: u64,
    /// Mean time from a Kinesis record's first user record to its send.
    pub mean_buffering_time: Duration,
    /// Mean PutRecords call duration.
    pub mean_request_time: Duration,
    /// Aggregation ratio.
    pub user_records_per_kinesis_record: f64,
    /// Batching ratio.
    pub kinesis_records_per_put_records_request: f64,
    /// PutRecords calls allowed in flight at the last call (adapts to the endpoint).
    pub concurrency_limit: u64,
}
