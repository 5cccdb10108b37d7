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
    /// Takes planned.
    pub planned: usize,
    /// Leases taken (stolen ones included).
    pub taken: usize,
    /// Of those, leases stolen from live workers.
    pub stolen: usize,
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
}
