//! Attribute names of the lease table, exactly as the Java KCL 2.x writes them.
//!
//! Source: `DynamoDBLeaseSerializer` in awslabs/amazon-kinesis-client
//! (`amazon-kinesis-client/src/main/java/software/amazon/kinesis/leases/dynamodb/`), 2.x and
//! 3.x branches. Types are DynamoDB attribute types: `S` string, `N` number (sent as a decimal
//! string), `B` binary, `SS` string set.
//!
//! | attribute | type | written by the Java KCL |
//! |---|---|---|
//! | [`LEASE_KEY`] | S, hash key | always |
//! | [`LEASE_OWNER`] | S | when the lease has an owner (removed on evict) |
//! | [`LEASE_COUNTER`] | N | always |
//! | [`CHECKPOINT`] | S | always: a sequence number or a sentinel |
//! | [`CHECKPOINT_SUB_SEQUENCE_NUMBER`] | N | always |
//! | [`OWNER_SWITCHES_SINCE_CHECKPOINT`] | N | always |
//! | [`PENDING_CHECKPOINT`] | S | only while a checkpoint is prepared |
//! | [`PENDING_CHECKPOINT_SUB_SEQUENCE_NUMBER`] | N | with [`PENDING_CHECKPOINT`] |
//! | [`PENDING_CHECKPOINT_STATE`] | B | only while prepared with application state |
//! | [`PARENT_SHARD_ID`] | SS | when the shard has parents (the name is singular) |
//! | [`CHILD_SHARD_IDS`] | SS | once the shard's children are known (2.3+) |
//! | [`STARTING_HASH_KEY`], [`ENDING_HASH_KEY`] | S | decimal hash key range (2.3+) |
//! | [`CHECKPOINT_OWNER`] | S | 3.x only: the old holder while a lease is handed over |
//! | [`HANDOFF_REQUEST_ID`] | S | this crate only: which request a handoff answers |
//!
//! The Java `Lease` object calls the hash range `hashKeyRangeForLease`, but no attribute of that
//! name (nor `hashKeyRange`) is ever stored: the range is the two string attributes above.
//!
//! [`CHECKPOINT_OWNER`] is the Java KCL 3.x's graceful handoff: the worker taking a lease
//! writes itself as `leaseOwner` and the old holder as `checkpointOwner`; the old holder keeps
//! processing until it has checkpointed, then removes `checkpointOwner`. Every take removes it,
//! as 3.x does.
//!
//! Attributes this crate does not model, and leaves untouched (every update names only the
//! attributes it changes, so they survive our writes):
//! - `streamName` and `shardId` (S): written by the Java KCL's multi-stream mode, whose
//!   lease keys look like `account:stream:creationEpoch:shardId`. Such rows are not leases of
//!   a single-stream application: [`LeaseTable::list`](super::LeaseTable::list) skips them.
//! - `throughputKBps` (N): written only by the Java KCL 3.x (throughput-based assignment).
//! - [`ENTITY_TYPE`] (S): 3.x rows of other kinds share the table; anything but `LEASE` is
//!   skipped.
//! - anything else: ignored when reading, never rewritten.

/// Hash key of the table (S): the shard id, or `account:stream:creationEpoch:shardId` in the
/// Java KCL's multi-stream mode.
pub(crate) const LEASE_KEY: &str = "leaseKey";
/// Worker id of the lease holder (S); absent when nobody holds the lease.
pub(crate) const LEASE_OWNER: &str = "leaseOwner";
/// Fencing counter (N), bumped by every renew, take, evict and checkpoint.
pub(crate) const LEASE_COUNTER: &str = "leaseCounter";
/// Checkpointed sequence number or sentinel (S).
pub(crate) const CHECKPOINT: &str = "checkpoint";
/// Sub-sequence number of the checkpoint inside an aggregated record (N).
pub(crate) const CHECKPOINT_SUB_SEQUENCE_NUMBER: &str = "checkpointSubSequenceNumber";
/// Prepared (two-phase) checkpoint: sequence number or sentinel (S).
pub(crate) const PENDING_CHECKPOINT: &str = "pendingCheckpoint";
/// Sub-sequence number of the prepared checkpoint (N).
pub(crate) const PENDING_CHECKPOINT_SUB_SEQUENCE_NUMBER: &str =
    "pendingCheckpointSubSequenceNumber";
/// Application state stored with a prepared checkpoint (B).
pub(crate) const PENDING_CHECKPOINT_STATE: &str = "pendingCheckpointState";
/// Times the lease changed owner since the last checkpoint (N).
pub(crate) const OWNER_SWITCHES_SINCE_CHECKPOINT: &str = "ownerSwitchesSinceCheckpoint";
/// Parent shard ids (SS). Singular name, plural content.
pub(crate) const PARENT_SHARD_ID: &str = "parentShardId";
/// Child shard ids (SS), written when the shard is closed.
pub(crate) const CHILD_SHARD_IDS: &str = "childShardIds";
/// First hash key of the shard, decimal (S).
pub(crate) const STARTING_HASH_KEY: &str = "startingHashKey";
/// Last hash key of the shard, decimal (S).
pub(crate) const ENDING_HASH_KEY: &str = "endingHashKey";

/// The old holder while a lease is handed over (S; Java KCL 3.x graceful handoff).
pub(crate) const CHECKPOINT_OWNER: &str = "checkpointOwner";
/// A handoff request's id (S; this crate only, the Java KCL ignores it): written with
/// [`CHECKPOINT_OWNER`] by the worker asking, kept by the holder letting go, removed by every
/// take and withdrawal. The worker that asked takes a let-go lease only when it still carries
/// its request's id: `leaseOwner` alone cannot tell its request from another process's with the
/// same worker id.
pub(crate) const HANDOFF_REQUEST_ID: &str = "handoffRequestId";
/// When a lease still at the `LATEST` checkpoint was first read, in milliseconds since the Unix
/// epoch (N; this crate only, the Java KCL ignores it). Written by the first worker to read the
/// lease, before its first read; removed by every checkpoint. A worker that reads the lease
/// later (a restart, a failover) starts `AT_TIMESTAMP` of this time less a clock-skew margin
/// instead of `LATEST`, so the records that arrived in between are not skipped.
pub(crate) const LATEST_STARTED_AT: &str = "latestStartedAt";
/// The kind of a Java KCL 3.x row (S); absent or [`LEASE_ENTITY_TYPE`] for leases.
pub(crate) const ENTITY_TYPE: &str = "entityType";
/// The [`ENTITY_TYPE`] of a lease row.
pub(crate) const LEASE_ENTITY_TYPE: &str = "LEASE";

/// The checkpoint sentinels, as stored in [`CHECKPOINT`] and [`PENDING_CHECKPOINT`].
pub(crate) mod sentinel {
    /// Start from the oldest record in the shard.
    pub(crate) const TRIM_HORIZON: &str = "TRIM_HORIZON";
    /// Start after the newest record in the shard.
    pub(crate) const LATEST: &str = "LATEST";
    /// Start from the configured timestamp.
    pub(crate) const AT_TIMESTAMP: &str = "AT_TIMESTAMP";
    /// The shard is closed and fully processed.
    pub(crate) const SHARD_END: &str = "SHARD_END";
}
