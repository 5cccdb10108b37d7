//! The Kinesis consumer library: the in-process replacement for Amazon's Java KCL.
//!
//! Leases and checkpoints live in a DynamoDB table compatible with the Java KCL 2.x (and its
//! 3.x graceful handoff), shared by a fleet of workers that may mix Java and Rust; shards are
//! balanced across the fleet, read parents before children across reshards, deaggregated with
//! sub-sequence checkpoints (built on [`aggregation_proto`]), and cleaned up by the Java KCL's
//! rules once finished. Records are read by polling (GetRecords) or through an enhanced
//! fan-out consumer (SubscribeToShard), see [`Retrieval`].
//!
//! # Layers
//!
//! **The common path is the crate root.** A [`Scheduler`] (from [`Scheduler::builder`], a
//! [`SchedulerBuilder`]) is one worker of an application: it creates the lease table, keeps a
//! lease per shard, takes its share of them, reads each shard it holds and hands the records
//! to one [`ShardRecordProcessor`] per shard ([`InitializeInput`], [`ProcessRecordsInput`]),
//! which checkpoints through its [`Checkpointer`]. A [`SchedulerHandle`] stops the worker
//! gracefully and reports its [`WorkerState`] (each [`ShardState`] and [`ShardPhase`]) and
//! counters ([`ConsumerSnapshot`]). Errors: [`SchedulerError`] (with [`ShardSyncError`]),
//! [`CheckpointError`]. Settings: [`InitialPosition`], [`Retrieval`], [`StreamId`], and the
//! values of the layer each one tunes, taken by the builder as they are: the lease table's
//! [`lease::TableOptions`], [`retrieval::PollingConfig`], [`retrieval::FanOutConfig`]; a
//! checkpoint is a [`lease::Checkpoint`].
//!
//! **The lower layer is three modules**, the building blocks the scheduler is made of, public
//! for what needs one of them without the rest (as rdkafka's `BaseConsumer` is public under
//! its `StreamConsumer`):
//!
//! - [`lease`]: the lease table: create it, read its rows, create leases (to seed a table, or
//!   for leases that are not Kinesis shards). For tools that inspect or prepare a fleet's
//!   table (`kinesis-cat leases` lists it).
//! - [`coordinator`]: a [`LeaseCoordinator`](coordinator::LeaseCoordinator) alone: which
//!   leases this worker holds, taken, renewed, balanced across the fleet and released. For
//!   sharing leases over a fleet without reading Kinesis, and for measuring the coordinator
//!   (the `lease_scale` example).
//! - [`retrieval`]: reading one shard from a position, without leases
//!   ([`retrieval::PollingSource`], [`retrieval::FanOutSource`], both a
//!   [`retrieval::RecordSource`]). For tools and benchmarks (`kinesis-cat perf-consume`).
//!
//! Writes to a lease somebody holds (renewals, takes, checkpoints, handoffs, releases) are in
//! neither layer: the coordinator makes them, each fenced to one holding (a lease lost and
//! taken again is a new holding), for the scheduler's checkpointers. Nothing public takes a
//! lease key to write to, so no code outside the crate can write into a holding it was not
//! given. The planner, expiry tracking and clocks behind the coordinator are private.
//!
//! **Testing a processor**: the `testing` module (feature `test-util`) builds the inputs and a
//! [`Checkpointer`] without a lease table that records what the processor checkpointed.
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod checkpointer;
mod cleanup;
mod consumer;
pub mod coordinator;
pub mod lease;
mod metrics;
mod position;
mod processor;
pub mod retrieval;
mod scheduler;
mod shard_sync;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use aggregation_proto::DeaggregatedRecord;
pub use checkpointer::{CheckpointError, Checkpointer};
/// Which stream to read: by name, or by ARN (needed for cross-account access and for IAM
/// policies written against ARNs). Shared with the producer (`kpl::StreamId`).
///
/// ```
/// use kcl::StreamId;
/// assert_eq!(StreamId::from("orders"), StreamId::Name("orders".into()));
/// ```
pub use kinesis_common::StreamId;
/// The CloudWatch publisher, with the KCL's table in [`cloudwatch::Builder::consumer`]
/// (feature `cloudwatch`).
#[cfg(feature = "cloudwatch")]
pub use kinesis_common::cloudwatch;
pub use metrics::ConsumerSnapshot;
pub use position::InitialPosition;
pub use processor::{InitializeInput, ProcessRecordsInput, ShardRecordProcessor};
pub use scheduler::{
    Retrieval, Scheduler, SchedulerBuilder, SchedulerError, SchedulerHandle, ShardPhase,
    ShardState, WorkerState,
};
pub use shard_sync::ShardSyncError;
