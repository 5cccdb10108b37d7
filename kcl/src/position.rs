//! [`InitialPosition`]: where reading starts in a shard with no checkpoint yet. Below the
//! scheduler, which takes it as a setting, because shard sync (the checkpoint of a new lease)
//! and the shard consumer (how a `LATEST` lease is read) use it too.

use std::time::SystemTime;

/// Where a new application starts reading shards that have no checkpoint yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialPosition {
    /// After the newest record (the reference's default).
    ///
    /// A lease keeps the `LATEST` checkpoint until its processor first checkpoints. The Java
    /// KCL then reads such a lease from a fresh `LATEST` iterator every time it starts it, so
    /// a processor restarted, or a lease that moved to another worker, before its first
    /// checkpoint skips every record that arrived since the first read began (those given
    /// to the failed processor included). Here the first worker to read such a lease notes
    /// the time in the lease row (`latestStartedAt`, an attribute the Java KCL ignores) before
    /// its first read, and every later read of the lease while it is still at `LATEST` (a
    /// processor restart, a worker restart, a failover to another worker of ours) starts
    /// `AT_TIMESTAMP` of that time, less a 5 s clock-skew margin: duplicates, never gaps. The
    /// first checkpoint removes the note. A Java worker taking such a lease still starts at
    /// `LATEST`.
    Latest,
    /// At the oldest record still in the stream.
    TrimHorizon,
    /// At the first record at or after this time.
    AtTimestamp(SystemTime),
}
