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
//! The table is the Java KCL 2.x's lease table: same attribute names and types
//! ([`schema`] lists them, with sources), so a Java fleet and this crate can read each other's
//! rows. Attributes this crate does not model (multi-stream `streamName`/`shardId`, the 3.x
//! `throughputKBps`, anything newer) are ignored when reading and survive our writes; the 3.x
//! `checkpointOwner` (graceful handoff) is modelled. Rows that are not leases of a
//! single-stream application (multi-stream keys, 3.x rows of other kinds, malformed rows) are
//! skipped by [`LeaseTable::list`] with a warning, never taken.
//!
//! - [`Lease`] and [`Checkpoint`]: the row, and its conversion from and to a DynamoDB item.
//! - [`LeaseTable`]: create the table ([`TableOptions`]), list / get / create / renew / take /
//!   hand over / release / checkpoint / delete leases.
//! - [`LeaseError`] and [`LeaseErrorKind`]: the one place that says whether a DynamoDB failure
//!   is a lost lease, worth retrying, or fatal.
//!
//! # Examples
//!
//! One worker's view of one shard:
//!
//! ```no_run
//! use kcl::lease::{Checkpoint, Lease, LeaseError, LeaseTable};
//!
//! # async fn run(client: aws_sdk_dynamodb::Client) -> Result<(), LeaseError> {
//! let table = LeaseTable::new(client, "my-application");
//! table.create_if_missing().await?;
//! table
//!     .create_if_absent(&Lease::new("shardId-000000000000", Checkpoint::TrimHorizon))
//!     .await?;
//!
//! let Some(lease) = table.get("shardId-000000000000").await? else {
//!     return Ok(());
//! };
//! // Every write returns the stored lease; keep using the latest copy.
//! let mut held = table.take(&lease, "worker-1").await?;
//! held = table.renew(&held).await?;
//! match table
//!     .checkpoint(&held, Checkpoint::sequence("49590338271490256608559692538361571095921575989136588898", 0))
//!     .await
//! {
//!     Ok(updated) => held = updated,
//!     // Another worker took the shard: stop processing it.
//!     Err(err) if err.is_lease_lost() => return Ok(()),
//!     Err(err) => return Err(err),
//! }
//! table.release(&held).await?;
//! # Ok(())
//! # }
//! ```

mod create;
mod error;
#[cfg(test)]
pub(crate) mod memory;
mod model;
mod scan;
pub mod schema;
pub(crate) mod store;
mod table;
mod update;

pub use create::{BillingMode, TableOptions};
pub use error::{LeaseError, LeaseErrorKind};
pub(crate) use model::whole_millis;
pub use model::{Checkpoint, InvalidCheckpoint, Lease, MalformedKind, MalformedLease};
pub use scan::{SkipReason, SkippedRow, TableScan};
pub use table::LeaseTable;
