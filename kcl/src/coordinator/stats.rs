//! [`CoordinatorStats`]: counters of the renew and take loops, read with
//! [`LeaseCoordinator::stats`](super::LeaseCoordinator::stats).

/// The figures of one taking cycle (also emitted as fields of its `take cycle` log event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TakeCycleStats {
    /// Leases in the table.
    pub leases: usize,
    /// Live workers seen (owners of non-expired leases, this worker included).
    pub live_workers: usize,
    /// The number of leases this worker aimed at.
    pub target: usize,
    /// Leases this worker was short of its target.
    pub needed: usize,
    /// Owned leases judged expired.
    pub expired_seen: usize,
    /// Leases nobody alive holds that this worker could take (unfinished, unowned or
    /// expired, not held or just given back by this worker).
    pub takeable: usize,
    /// Takes planned.
    pub planned: usize,
    /// Leases taken (stolen ones included).
    pub taken: usize,
    /// Of those, leases stolen from live workers (without a graceful handoff).
    pub stolen: usize,
    /// Handoffs asked of live workers (graceful steals).
    pub handoffs_requested: usize,
    /// Takes that failed (another worker got there first, or a request failed).
    pub failed: usize,
}

/// A snapshot of the coordinator's counters since it was built.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CoordinatorStats {
    /// Leases held now.
    pub held: usize,
    /// Taking cycles run (scans that succeeded).
    pub take_cycles: u64,
    /// Scans of the lease table that failed.
    pub scan_failures: u64,
    /// The last taking cycle, if any.
    pub last_take: Option<TakeCycleStats>,
    /// Leases taken, all cycles together (stolen ones included).
    pub taken: u64,
    /// Leases stolen, all cycles together.
    pub stolen: u64,
    /// Takes that failed, all cycles together.
    pub take_failures: u64,
    /// Successful renewals.
    pub renewals: u64,
    /// Renewals that failed without losing the lease (transport errors, timeouts).
    pub renew_failures: u64,
    /// Leases lost: taken by another worker, or unrenewable for longer than the failover time.
    pub lost: u64,
    /// Leases released (handed back).
    pub released: u64,
    /// Handoffs this worker asked other workers for.
    pub handoffs_requested: u64,
    /// Of those, leases the holder let go of, taken from its last checkpoint.
    pub handoffs_completed: u64,
    /// Of those, leases taken without the holder letting go (it never answered within the
    /// handoff timeout, or stopped renewing).
    pub handoffs_forced: u64,
    /// Handoffs waited on now.
    pub pending_handoffs: usize,
    /// Handoffs other workers asked this worker for.
    pub handoffs_requested_of_me: u64,
    /// Leases this worker handed over.
    pub handed_off: u64,
    /// Leases this worker finished (SHARD_END checkpointed; no longer renewed).
    pub finished: u64,
    /// Finished leases this worker held that are not cleaned up yet.
    pub finished_held: usize,
    /// Times a lease stored under this worker's id moved without this process: another
    /// process runs with the same worker id (each also logged as an error and counted in the
    /// `DuplicateWorkerId` metric). Worker ids must be unique; see the coordinator's docs.
    pub duplicate_worker_detections: u64,
}
