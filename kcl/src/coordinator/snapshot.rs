//! [`ScanSnapshot`]: what the taker saw in its last scan of the lease table, for the worker's
//! state, lease cleanup and `--idle-exit`.

use std::time::{Duration, Instant};

use crate::lease::Lease;

/// The lease table as this worker's last successful scan saw it.
#[derive(Debug, Clone)]
pub(crate) struct ScanSnapshot {
    /// When the scan was made (this worker's clock).
    pub(crate) at: Instant,
    /// Every lease, with how long its counter had stood still in this worker's scans.
    pub(crate) leases: Vec<(Lease, Duration)>,
    /// Leases this worker could take as of the scan, before that cycle's takes: not finished,
    /// and unowned or expired (held by nobody alive), excluding those it held then or had just
    /// given back. Some of them are this worker's own a moment later (see
    /// [`WorkerState::takeable_leases`](crate::WorkerState::takeable_leases), which leaves
    /// those out).
    pub(crate) takeable: Vec<String>,
}
