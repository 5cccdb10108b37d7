//! The Kinesis consumer library: the in-process replacement for Amazon's Java KCL.
//!
//! Leases and checkpoints live in a DynamoDB table compatible with the Java KCL 2.x (and its
//! 3.x graceful handoff), shared by a fleet of workers that may mix Java and Rust; shards are
//! balanced across the fleet, read parents before children across reshards, deaggregated with
//! sub-sequence checkpoints (built on [`aggregation_proto`]), and cleaned up by the Java KCL's
//! rules once finished. Polling retrieval today; enhanced fan-out to come.
//!
//! - [`Scheduler`]: one worker: implement [`ShardRecordProcessor`], build, run; control it with
//!   a [`SchedulerHandle`] (graceful shutdown, counters, [`WorkerState`]);
//! - [`lease`]: the lease table (rows, conditional writes, table options, error
//!   classification);
//! - [`coordinator`]: the lease coordinator, which takes, renews, balances, hands over and
//!   releases this worker's leases and publishes the set it holds ([`LeaseCoordinator`]);
//! - [`retrieval`]: reading one shard ([`retrieval::PollingSource`]).
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

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
    InitialPosition, Retrieval, Scheduler, SchedulerBuilder, SchedulerError, SchedulerHandle,
    ShardPhase, ShardState, WorkerState,
};
pub use shard_sync::ShardSyncError;
