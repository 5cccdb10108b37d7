//! What an application implements: a processor per shard, driven through its lifecycle.
//!
//! ```text
//! initialize -> process_records* -> one of:
//!     lease_lost          another worker took the shard: stop, do not checkpoint
//!     shard_ended         the shard is closed and fully read: checkpoint (SHARD_END) now
//!                         (called again, after a backoff, until SHARD_END is stored; a
//!                         processor that never stores it is given up on after
//!                         max_shard_end_attempts calls, and the shard stays unfinished)
//!     shutdown_requested  this worker is leaving, or another worker asked for the shard
//!                         (a graceful handoff): checkpoint what is done; the next owner
//!                         starts right after it
//! ```
//!
//! A processor that panics, or whose call goes the processor timeout without a sign of
//! progress (each checkpoint call through its [`Checkpointer`] starts the timeout again), is
//! dropped and the shard starts over from its last checkpoint with a new processor after a
//! backoff (the lease stays with this worker); its failures are counted in
//! [`ConsumerSnapshot::processor_failures`](crate::ConsumerSnapshot::processor_failures).

use std::future::Future;

use aggregation_proto::DeaggregatedRecord;

use crate::checkpointer::Checkpointer;
use crate::lease::Checkpoint;

/// The shard a processor works on and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InitializeInput {
    /// The shard id (the lease key).
    pub shard_id: String,
    /// The checkpoint processing resumes after (or the initial position).
    pub checkpoint: Checkpoint,
    /// The checkpoint an earlier processor prepared but did not commit (two-phase
    /// checkpoints), if any: records from [`checkpoint`](Self::checkpoint) on are delivered
    /// again, and [`Checkpointer::commit_prepared`] commits this one once it is delivered.
    pub pending_checkpoint: Option<Checkpoint>,
    /// The application state saved with the pending checkpoint.
    pub pending_checkpoint_state: Option<Vec<u8>>,
}

/// A batch of user records, in order, deaggregated and filtered to the shard's hash range.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProcessRecordsInput {
    /// The user records: partition key, data, sequence and sub-sequence number, arrival time.
    pub records: Vec<DeaggregatedRecord>,
    /// How far behind the tip of the shard this batch is, in milliseconds.
    pub millis_behind_latest: Option<i64>,
}

/// Processes one shard's records. One instance per shard lease, called from one task at a time
/// (never concurrently), in this order: [`initialize`](Self::initialize), then
/// [`process_records`](Self::process_records) for each batch, then exactly one of
/// [`lease_lost`](Self::lease_lost), [`shard_ended`](Self::shard_ended) or
/// [`shutdown_requested`](Self::shutdown_requested).
///
/// ```
/// use kcl::{Checkpointer, ProcessRecordsInput, ShardRecordProcessor};
///
/// struct Printer;
///
/// impl ShardRecordProcessor for Printer {
///     async fn process_records(&mut self, input: ProcessRecordsInput, checkpointer: &mut Checkpointer) {
///         for record in &input.records {
///             println!("{}: {:?}", record.partition_key(), record.data());
///         }
///         // At-least-once: checkpoint after the work is done.
///         if let Err(error) = checkpointer.checkpoint().await {
///             eprintln!("checkpoint failed: {error}");
///         }
///     }
///
///     async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
///         let _ = checkpointer.checkpoint_shard_end().await;
///     }
/// }
/// ```
///
/// To unit-test a processor without DynamoDB or Kinesis, the `kcl::testing` module (feature
/// `test-util`) builds its inputs and a `Checkpointer` that records what it checkpointed.
pub trait ShardRecordProcessor: Send + 'static {
    /// Called once before the first batch.
    fn initialize(&mut self, input: InitializeInput) -> impl Future<Output = ()> + Send {
        let _ = input;
        async {}
    }

    /// Called with each batch of records. Checkpoint through `checkpointer` when the work for
    /// them is durable.
    ///
    /// **Never block the thread here**: the worker's lease renewals, the other shards and
    /// retrieval share the runtime's threads, and a thread blocked on a slow disk, a full pipe
    /// or a synchronous client stalls all of them (leases then expire at other workers). Await
    /// instead: an async client, `tokio::task::spawn_blocking`, or a dedicated thread fed
    /// through a bounded channel whose `send` you await, as `kinesis-cat consume` does for its
    /// output (its printer hands each batch to a writer thread and awaits the write before
    /// checkpointing, so a reader that stops reading slows the worker down without stopping
    /// it). Time spent awaiting here is not idle time: the shard is not at the tip until the
    /// call returns.
    fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> impl Future<Output = ()> + Send;

    /// Another worker took the shard: stop. Checkpointing is no longer possible.
    fn lease_lost(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The shard is closed and every record was delivered. Call
    /// [`Checkpointer::checkpoint_shard_end`], or the shard's children never start.
    fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> impl Future<Output = ()> + Send;

    /// This worker is shutting down gracefully: checkpoint what is done, if anything. The
    /// lease is handed back right after.
    fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> impl Future<Output = ()> + Send {
        let _ = checkpointer;
        async {}
    }
}
