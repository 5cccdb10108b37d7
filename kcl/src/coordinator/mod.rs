//! The lease coordinator: which leases this worker holds, kept renewed and balanced across
//! the fleet (the Java KCL's `LeaseCoordinator`, `LeaseTaker` and `LeaseRenewer`).
//!
//! Part of the crate's lower layer (see [Layers](crate#layers)): the
//! [`Scheduler`](crate::Scheduler) runs one and does everything else (shard sync, processors,
//! checkpoints, handoff answers). Used alone, a [`LeaseCoordinator`] tells which leases this
//! worker holds and keeps them; it writes to them only through its own loops and the
//! scheduler, never on a lease key given from outside, so nothing public can write into a
//! holding it was not given.
//!
//! # Model
//!
//! Every worker of an application runs one [`LeaseCoordinator`] over the shared
//! [`LeaseTable`](crate::lease::LeaseTable). It runs two loops:
//!
//! ```text
//!               renew each held lease               scan, judge expiry, plan, take
//!               (every renew interval)              (every take interval)
//!  held leases ─────────────────────────► lease table ◄──────────────────────────── take loop
//!       │      ◄─── lost / unrenewable ───
//!       │ watch: lease key → lease as acquired
//!       ▼
//!  shard consumers: start a processor for a new key, stop it when the key goes away
//! ```
//!
//! - **Renewing** bumps each held lease's `leaseCounter`. A renewal that fails its condition
//!   means another worker took the lease: it is dropped at once. Transport errors are retried
//!   next interval; a holding stays *valid* for the failover time (less a margin) after the
//!   last write that got through was sent, and a consumer delivers records only while its
//!   holding is valid, so a worker cut off from DynamoDB stops delivering before any other
//!   worker may take its leases, and resumes where it stopped if nobody did.
//! - **Expiry** is judged locally, never from wall clocks (`expiry.rs`): a lease is
//!   expired when its counter has not changed for more than the failover time across this
//!   worker's own scans. Unowned leases are takeable at once; held leases never expire for
//!   their holder; leases stored under this worker's id that it does not hold (left over from
//!   a previous run) expire as any other worker's, since another process wrongly started
//!   with the same id may be delivering from them (it is detected and reported, see
//!   `coordinator/state.rs`).
//! - **Writes whose answer was lost** are found out by the next write, whose condition fails:
//!   the re-read counts one as applied only when what it wrote is stored, and otherwise
//!   retries on the fresh counter (see `coordinator/state.rs`).
//! - **Taking** is a pure function (`plan.rs`): free leases first, then steals from the
//!   most loaded workers, as many as needed in one cycle but never across an imbalance of one
//!   lease, so a fleet converges without trading leases back and forth (see `plan.rs` for the
//!   rules and the simulations in its tests: any start converges in one cycle when workers
//!   take in turn). Finished leases (SHARD_END) are neither taken nor counted.
//! - **Stealing is a graceful handoff** (the Java KCL 3.x's `checkpointOwner`, see
//!   `coordinator/handoff.rs`): the taker asks, the holder checkpoints and lets go, the taker
//!   starts from that checkpoint; a holder that does not answer within the handoff timeout loses the
//!   lease as in a 2.x steal.
//! - **Writes to held leases** (checkpoints, releases) go through the coordinator, fenced to
//!   one *holding* (a lease lost and taken again is a new holding, so a checkpointer of the
//!   earlier one never writes into the later; `handle.rs`, `write_holding`), which keeps them
//!   from racing with renewals of the same lease and keeps the local copy's counter current.
//!   They are crate-private: the scheduler's checkpointers and handoff answers make them.
//! - **Leaving**: [`LeaseCoordinator::release_all`] hands the leases back so other workers
//!   take them in their next cycle instead of after the failover time.
//! - **Scans** are published (`snapshot.rs`): lease cleanup and the worker's state read them
//!   instead of scanning again.
//!
//! Time is injected (`clock.rs`): the system clock follows tokio's clock, so tests with paused
//! tokio time move expiry and the loops together, and a manual clock drives the expiry
//! tracker by hand.

mod clock;
mod config;
mod error;
mod expiry;
mod handle;
mod handoff;
mod plan;
mod renewer;
mod snapshot;
mod state;
mod stats;
mod taker;

pub use config::{CoordinatorConfig, CoordinatorConfigBuilder, CoordinatorConfigError};
pub use error::{HeldLeaseError, StartError};
pub use handle::{LeaseCoordinator, LeaseCoordinatorBuilder, ReleaseSummary};
pub use stats::{CoordinatorStats, TakeCycleStats};

pub(crate) use snapshot::ScanSnapshot;
pub(crate) use state::HeldRef;

/// The state a coordinator's loops share, for read-only views that must not keep the loops
/// alive (a [`LeaseCoordinator`] handle stops them when the last one is dropped).
pub(crate) type SharedState = std::sync::Arc<state::Shared>;

use kinesis_common::later;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod table_tests;
#[cfg(test)]
pub(crate) mod tests;
