//! Counters: [`Stats`] snapshots and the live counters behind them.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a proxy's counters since it started (see
/// [`FaultProxy::stats`](crate::FaultProxy::stats)).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Requests received, by operation (the part after the `.` in `X-Amz-Target`; requests
    /// without that header count under `""`). Counted when the request body has been read,
    /// before any fault is applied.
    pub requests: BTreeMap<String, u64>,
    /// Faults injected, by kind.
    pub faults: FaultCounts,
    /// Entries received in PutRecords requests (one per PutRecord request), whatever happened
    /// to them next. Requests the sink refuses as invalid are not counted.
    pub entries_received: u64,
    /// Entries sent to the upstream (or accepted by the sink). Entries of a call that got a
    /// whole-call fault or a dropped connection are neither forwarded nor failed.
    pub entries_forwarded: u64,
    /// Entries answered with an injected per-entry error (the sum of
    /// [`FaultCounts::entries_throttled`] and [`FaultCounts::entries_internal_failure`]).
    pub entries_failed_injected: u64,
    /// Requests the upstream could not be reached for (answered HTTP 502).
    pub upstream_errors: u64,
    /// Kinesis records (an aggregate counts once) returned by a read sink's GetRecords.
    pub records_read: u64,
    /// Requests the sink refused as invalid (HTTP 400: bad JSON, more than 500 entries, bad
    /// partition key, bad explicit hash key, over the size limits, unknown operation).
    pub invalid_requests: u64,
}

impl Stats {
    /// Requests received for `operation`.
    pub fn requests_for(&self, operation: &str) -> u64 {
        self.requests.get(operation).copied().unwrap_or(0)
    }
}

/// Injected faults by kind (part of [`Stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct FaultCounts {
    /// Whole calls answered `ProvisionedThroughputExceededException`.
    pub throttled: u64,
    /// Whole calls answered with a 5xx server error.
    pub server_errors: u64,
    /// PutRecords entries answered `ProvisionedThroughputExceededException`.
    pub entries_throttled: u64,
    /// PutRecords entries answered `InternalFailure`.
    pub entries_internal_failure: u64,
    /// Requests delayed.
    pub delayed: u64,
    /// Connections closed after reading the request, without forwarding it.
    pub dropped_connections: u64,
    /// Connections closed after the upstream processed the request, without answering.
    pub lost_responses: u64,
    /// Requests that were held by [`Faults::stall`](crate::Faults::stall) (counted when they
    /// start waiting).
    pub stalled: u64,
}

/// The live counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    requests: Mutex<HashMap<String, u64>>,
    pub(crate) throttled: AtomicU64,
    pub(crate) server_errors: AtomicU64,
    pub(crate) entries_throttled: AtomicU64,
    pub(crate) entries_internal_failure: AtomicU64,
    pub(crate) delayed: AtomicU64,
    pub(crate) dropped_connections: AtomicU64,
    pub(crate) lost_responses: AtomicU64,
    pub(crate) stalled: AtomicU64,
    pub(crate) entries_received: AtomicU64,
    pub(crate) entries_forwarded: AtomicU64,
    pub(crate) upstream_errors: AtomicU64,
    pub(crate) invalid_requests: AtomicU64,
    pub(crate) records_read: AtomicU64,
}

/// Adds `n` to `counter`.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    /// Counts one request for `operation` (allocates only the first time an operation is seen).
    pub(crate) fn count_request(&self, operation: &str) {
        // A poisoned lock only means another thread panicked mid-increment: keep counting.
        let mut requests = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match requests.get_mut(operation) {
            Some(count) => *count += 1,
            None => {
                requests.insert(operation.to_owned(), 1);
            }
        }
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(op, count)| (op.clone(), *count))
            .collect();
        let faults = FaultCounts {
            throttled: load(&self.throttled),
            server_errors: load(&self.server_errors),
            entries_throttled: load(&self.entries_throttled),
            entries_internal_failure: load(&self.entries_internal_failure),
            delayed: load(&self.delayed),
            dropped_connections: load(&self.dropped_connections),
            lost_responses: load(&self.lost_responses),
            stalled: load(&self.stalled),
        };
        Stats {
            requests,
            entries_received: load(&self.entries_received),
            entries_forwarded: load(&self.entries_forwarded),
            entries_failed_injected: faults.entries_throttled + faults.entries_internal_failure,
            upstream_errors: load(&self.upstream_errors),
            records_read: load(&self.records_read),
            invalid_requests: load(&self.invalid_requests),
            faults,
        }
    }
}
