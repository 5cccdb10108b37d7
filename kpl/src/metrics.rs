//! Counters with the KPL's metric names, readable as a snapshot and published through the
//! `metrics` crate facade (any recorder the application installs sees them).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Live counters, updated by the pipeline.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    user_records_received: AtomicU64,
    user_records_put: AtomicU64,
    user_records_data_put: AtomicU64,
    kinesis_records_put: AtomicU64,
    kinesis_records_data_put: AtomicU64,
    put_records_calls: AtomicU64,
    all_errors: AtomicU64,
    retries: AtomicU64,
    user_records_expired: AtomicU64,
    user_records_failed: AtomicU64,
    buffering_time_micros: AtomicU64,
    request_time_micros: AtomicU64,
    errors_by_code: Mutex<HashMap<String, u64>>,
}

impl Metrics {
    pub(crate) fn received(&self, records: u64) {
        if records > 0 {
            self.user_records_received.fetch_add(records, Relaxed);
            metrics::counter!("kinesis_producer.user_records_received").increment(records);
        }
    }

    pub(crate) fn put_call(&self, duration: Duration) {
        self.put_records_calls.fetch_add(1, Relaxed);
        self.request_time_micros
            .fetch_add(duration.as_micros() as u64, Relaxed);
        metrics::counter!("kinesis_producer.put_records_calls").increment(1);
        metrics::histogram!("kinesis_producer.request_time_seconds").record(duration.as_secs_f64());
    }

    pub(crate) fn kinesis_record_put(&self, user_records: usize, user_bytes: usize, bytes: usize) {
        self.kinesis_records_put.fetch_add(1, Relaxed);
        self.kinesis_records_data_put
            .fetch_add(bytes as u64, Relaxed);
        self.user_records_put
            .fetch_add(user_records as u64, Relaxed);
        self.user_records_data_put
            .fetch_add(user_bytes as u64, Relaxed);
        metrics::counter!("kinesis_producer.kinesis_records_put").increment(1);
        metrics::counter!("kinesis_producer.user_records_put").increment(user_records as u64);
        metrics::histogram!("kinesis_producer.user_records_per_kinesis_record")
            .record(user_records as f64);
    }

    pub(crate) fn buffered(&self, time: Duration) {
        self.buffering_time_micros
            .fetch_add(time.as_micros() as u64, Relaxed);
        metrics::histogram!("kinesis_producer.buffering_time_seconds").record(time.as_secs_f64());
    }

    pub(crate) fn error(&self, code: &str, records: usize) {
        self.all_errors.fetch_add(records as u64, Relaxed);
        if let Ok(mut by_code) = self.errors_by_code.lock() {
            *by_code.entry(code.to_owned()).or_default() += records as u64;
        }
        metrics::counter!("kinesis_producer.errors", "code" => code.to_owned())
            .increment(records as u64);
    }

    pub(crate) fn retried(&self, records: usize) {
        self.retries.fetch_add(records as u64, Relaxed);
        metrics::counter!("kinesis_producer.retries").increment(records as u64);
    }

    pub(crate) fn expired(&self) {
        self.user_records_expired.fetch_add(1, Relaxed);
        metrics::counter!("kinesis_producer.user_records_expired").increment(1);
    }

    pub(crate) fn failed(&self) {
        self.user_records_failed.fetch_add(1, Relaxed);
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
            all_errors: self.all_errors.load(Relaxed),
            errors_by_code: self
                .errors_by_code
                .lock()
                .map(|m| m.clone())
                .unwrap_or_default(),
            retries_per_record: ratio(self.retries.load(Relaxed), put.max(1)),
            user_records_expired: self.user_records_expired.load(Relaxed),
            user_records_failed: self.user_records_failed.load(Relaxed),
            mean_buffering_time: Duration::from_micros(
                self.buffering_time_micros.load(Relaxed) / kinesis.max(1),
            ),
            mean_request_time: Duration::from_micros(
                self.request_time_micros.load(Relaxed) / calls.max(1),
            ),
            user_records_per_kinesis_record: ratio(put, kinesis),
            kinesis_records_per_put_records_request: ratio(kinesis, calls),
        }
    }
}

/// The producer's counters at one moment, named as the KPL names them.
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
    /// Failed user-record attempts, all codes.
    pub all_errors: u64,
    /// Failed user-record attempts by error code.
    pub errors_by_code: HashMap<String, u64>,
    /// Retries per stored user record.
    pub retries_per_record: f64,
    /// User records failed by TTL expiry.
    pub user_records_expired: u64,
    /// User records failed for good (expired, rejected, throttled with fail-fast).
    pub user_records_failed: u64,
    /// Mean time from a Kinesis record's first user record to its send.
    pub mean_buffering_time: Duration,
    /// Mean PutRecords call duration.
    pub mean_request_time: Duration,
    /// Aggregation ratio.
    pub user_records_per_kinesis_record: f64,
    /// Batching ratio.
    pub kinesis_records_per_put_records_request: f64,
}
