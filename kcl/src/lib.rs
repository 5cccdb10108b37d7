//! The Kinesis consumer library (work in progress).
//!
//! This crate will hold the in-process replacement for Amazon's Java KCL: leases and checkpoints
//! in a DynamoDB table compatible with the Java KCL 2.x, lease taking and stealing across a worker
//! fleet, shard sync with parent-before-child ordering, polling and enhanced fan-out retrieval,
//! and deaggregation with sub-sequence checkpoints (built on [`aggregation_proto`]).
//!
//! Available so far:
//!
//! - [`lease`]: the lease table (rows, conditional writes, error classification);
//! - [`coordinator`]: the lease coordinator, which takes, renews, balances and releases this
//!   worker's leases and publishes the set it holds ([`LeaseCoordinator`]).
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod backoff;
mod checkpointer;
mod cleanup;
mod consumer;
pub mod coordinator;
pub mod lease;
mod metrics;
mod processor;
pub mod retrieval;
mod scheduler;
mod shard_sync;

pub use aggregation_proto::DeaggregatedRecord;
pub use checkpointer::{CheckpointError, Checkpointer};
pub use coordinator::{CoordinatorConfig, LeaseCoordinator};
pub use metrics::ConsumerSnapshot;
pub use processor::{InitializeInput, ProcessRecordsInput, ShardRecordProcessor};
pub use scheduler::{
    InitialPosition, Scheduler, SchedulerBuilder, SchedulerError, SchedulerHandle, ShardPhase,
    ShardState, WorkerState,
};
pub use shard_sync::ShardSyncError;
