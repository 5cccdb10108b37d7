//! [`SchedulerHandle`]: shutting a running worker down, reading its counters and its state.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::state::{StatusBoard, WorkerState};
use crate::coordinator::{CoordinatorStats, SharedState};
use crate::metrics::{ConsumerMetrics, ConsumerSnapshot};

/// Controls a running [`Scheduler`](super::Scheduler) from elsewhere. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SchedulerHandle {
    pub(super) shutdown: CancellationToken,
    pub(super) done: watch::Receiver<bool>,
    pub(super) metrics: Arc<ConsumerMetrics>,
    pub(super) status: Arc<StatusBoard>,
    /// The coordinator's shared state, not the coordinator itself: a handle must not keep
    /// the renew and take loops alive once the worker is gone.
    pub(super) coordinator: watch::Receiver<Option<SharedState>>,
}

impl SchedulerHandle {
    /// Asks every processor to finish (`shutdown_requested`, where it may checkpoint), hands
    /// the leases back so other workers take them in their next cycle, and waits until
    /// [`Scheduler::run`](super::Scheduler::run) has returned: within the
    /// [shutdown timeout](super::SchedulerBuilder::shutdown_timeout) (25 s by default), the
    /// releases included. A processor that does not return within its share of that time is
    /// abandoned and its lease handed back anyway.
    ///
    /// # Cancel safety
    /// The shutdown proceeds whether or not this future is polled to the end.
    pub async fn graceful_shutdown(&self) {
        self.shutdown.cancel();
        let mut done = self.done.clone();
        let _ = done.wait_for(|finished| *finished).await;
    }

    /// The worker's counters now.
    pub fn metrics(&self) -> ConsumerSnapshot {
        let held = self.status.snapshot().0.len();
        self.metrics.snapshot(held)
    }

    /// The lease coordinator's counters (takes, steals, handoffs, renewals...), once the
    /// worker has started.
    pub fn lease_stats(&self) -> Option<CoordinatorStats> {
        self.coordinator
            .borrow()
            .as_ref()
            .map(|shared| shared.stats())
    }

    /// What the worker is doing now: every held shard's phase, whether it is at the tip and
    /// since when, and whether leases are left to take (see [`WorkerState::idle_since`]).
    pub fn state(&self) -> WorkerState {
        let (shards, held_changed_at) = self.status.snapshot();
        let shared = self.coordinator.borrow().clone();
        let scan = shared.as_ref().and_then(|shared| shared.last_scan());
        WorkerState {
            held_changed_at,
            // The scan lists what was takeable before this worker's takes of that cycle:
            // what it holds now is not left to take.
            takeable_leases: scan.as_ref().map_or(0, |scan| {
                scan.takeable
                    .iter()
                    .filter(|key| !shards.contains_key(key.as_str()))
                    .count()
            }),
            last_scan: scan.map(|scan| tokio::time::Instant::from_std(scan.at)),
            pending_handoffs: shared.map_or(0, |shared| shared.stats().pending_handoffs),
            shards,
        }
    }

    /// Scans the lease table now (taking what is there to take, as every taking cycle does)
    /// and returns the state after that scan, so a decision like "nothing left to read" is not
    /// made on a scan older than one take interval. Waits at most `limit` for the scan (it
    /// may fail, DynamoDB being unreachable); returns the state then either way.
    pub async fn refreshed_state(&self, limit: Duration) -> WorkerState {
        let coordinator = self.coordinator.borrow().clone();
        if let Some(coordinator) = coordinator {
            let mut scans = coordinator.subscribe_scans();
            scans.borrow_and_update();
            coordinator.wake_taker.notify_one();
            let _ = tokio::time::timeout(limit, scans.changed()).await;
        }
        self.state()
    }

    /// Returns once the worker has had nothing left to read for `idle`: every held shard at
    /// its tip for that long, no child waiting for a parent, nothing left to take and no
    /// handoff pending ([`WorkerState::is_idle_for`]), confirmed on a fresh scan of the lease
    /// table so a lease that became free meanwhile is taken and read instead. What a batch
    /// job or a test waits on before it shuts the worker down ("drain, then exit").
    ///
    /// ```no_run
    /// # async fn example(handle: kcl::SchedulerHandle) {
    /// use std::time::Duration;
    /// handle.wait_idle(Duration::from_secs(10)).await;
    /// handle.graceful_shutdown().await;
    /// # }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads the worker's state.
    pub async fn wait_idle(&self, idle: Duration) {
        let poll = (idle / 10).clamp(Duration::from_millis(50), Duration::from_millis(500));
        loop {
            tokio::time::sleep(poll).await;
            if !self.state().is_idle_for(idle, tokio::time::Instant::now()) {
                continue;
            }
            let state = self.refreshed_state(Duration::from_secs(10)).await;
            if state.is_idle_for(idle, tokio::time::Instant::now()) {
                return;
            }
        }
    }
}
