//! Leases: which worker processes which shard, and how far it got.
//!
//! A fleet of workers shares one DynamoDB table with one row (a *lease*) per shard. The row
//! names its owner, carries the checkpoint (where processing resumes) and a `leaseCounter`
//! that every write bumps. Workers never trust clocks: a worker holding a lease keeps renewing
//! it (bumping the counter); another worker that sees a counter stand still for longer than
//! the failover time may take the lease. Every write is conditional on the counter the writer
//! last saw, so of two workers racing for a lease exactly one wins, and a worker whose lease
//! was taken finds out on its next renew or checkpoint ([`LeaseError::LeaseLost`]).
//!
//! The table is the Java KCL 2.x's lease table: same attribute names and types (`schema.rs`
//! lists them, with sources), so a Java fleet and this crate can read each other's rows.
//! Attributes this crate does not model (multi-stream `streamName`/`shardId`, the 3.x
//! `throughputKBps`, anything newer) are ignored when reading and survive our writes; the 3.x
//! `checkpointOwner` (graceful handoff) is modelled. Rows that are not leases of a
//! single-stream application (multi-stream keys, 3.x rows of other kinds, malformed rows) are
//! skipped by [`LeaseTable::list`] with a warning, never taken.
//!
//! Part of the crate's lower layer (see [Layers](crate#layers)): what is public here reads
//! the table, creates it, and creates leases nobody holds yet. Every write to an existing
//! lease (renew, take, hand over, release, checkpoint, delete) is crate-private: the
//! [coordinator](crate::coordinator) makes them, each fenced to the holding it writes for.
//! The one exception is the operator's [`LeaseTable::reset_checkpoint`] (`reset.rs`), which
//! moves a checkpoint only on an unowned lease, or takes a held one from its holder when forced.
//!
//! - [`Lease`] and [`Checkpoint`]: the row (its DynamoDB item form is in `codec.rs`).
//! - [`LeaseTable`]: create the table ([`TableOptions`]), get / scan / list leases, create
//!   unowned leases ([`LeaseTable::create_lease`]).
//! - [`LeaseError`] and [`LeaseErrorKind`]: the one place that says whether a DynamoDB failure
//!   is a lost lease, worth retrying, or fatal.
//!
//! # Examples
//!
//! A table seeded with one lease, then listed as a tool would:
//!
//! ```no_run
//! use kcl::lease::{Checkpoint, Lease, LeaseError, LeaseTable};
//!
//! # async fn run(client: aws_sdk_dynamodb::Client) -> Result<(), LeaseError> {
//! let table = LeaseTable::new(client, "my-application");
//! table.create_if_missing().await?;
//! // Nobody holds it yet: the first worker's coordinator to see it takes it.
//! table
//!     .create_lease(&Lease::new("shardId-000000000000", Checkpoint::TrimHorizon))
//!     .await?;
//!
//! let scan = table.scan().await?;
//! for lease in &scan.leases {
//!     println!("{} {:?} {}", lease.lease_key, lease.lease_owner, lease.checkpoint);
//! }
//! for row in &scan.skipped {
//!     println!("skipped {:?}: {:?}", row.lease_key, row.reason);
//! }
//! # Ok(())
//! # }
//! ```

mod codec;
mod create;
mod error;
#[cfg(test)]
pub(crate) mod memory;
mod model;
mod reset;
mod scan;
mod schema;
pub(crate) mod store;
mod table;
#[cfg(test)]
mod table_tests;
mod update;

pub(crate) use codec::whole_millis;
pub use codec::{MalformedKind, MalformedLease};
pub use create::{BillingMode, TableOptions};
pub use error::{LeaseError, LeaseErrorKind};
pub use model::{Checkpoint, InvalidCheckpoint, Lease};
pub use reset::ResetOutcome;
pub use scan::{SkipReason, SkippedRow, TableScan};
pub use table::LeaseTable;
