//! Leases still at `LATEST` (no checkpoint yet), read again by this worker.
//!
//! `LATEST` means "from when the application started reading the shard", but a lease keeps the
//! `LATEST` checkpoint until its processor first checkpoints, and a fresh `LATEST` iterator
//! starts after everything that arrived in between: a processor restarted after a panic or a
//! timeout, or the lease lost and taken back, would skip the records its first processor was
//! given but never checkpointed, and those that arrived meanwhile. So the first time this
//! worker reads such a lease it notes the time, and every later read of it (while the
//! checkpoint is still `LATEST`) starts `AT_TIMESTAMP` of that time less
//! `LATEST_CLOCK_SKEW_MARGIN` (arrival times are the service's clock): records are delivered
//! again, as after any restart, never skipped.
//!
//! The note lives in this process only. Another worker taking the lease, or this one after a
//! restart, starts at `LATEST` again, as the Java KCL does: its lease rows have no place for
//! the time, and a Java worker would ignore one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::retrieval::{LATEST_CLOCK_SKEW_MARGIN, StartingPosition};

/// When this worker first read each lease that is still at `LATEST` (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct LatestStarts(Mutex<HashMap<String, SystemTime>>);

impl LatestStarts {
    /// Where to read lease `key`, whose checkpoint is `LATEST`, from: `LATEST` the first time,
    /// then `AT_TIMESTAMP` of that first time less the clock-skew margin.
    pub(crate) fn resolve(&self, key: &str) -> StartingPosition {
        let now = SystemTime::now();
        let Ok(mut starts) = self.0.lock() else {
            return StartingPosition::Latest;
        };
        match starts.get(key) {
            Some(first) => StartingPosition::AtTimestamp(
                first
                    .checked_sub(LATEST_CLOCK_SKEW_MARGIN)
                    .unwrap_or(SystemTime::UNIX_EPOCH),
            ),
            None => {
                // Noted before the source asks for its iterator, so the timestamp is at or
                // before that iterator's start.
                starts.insert(key.to_owned(), now);
                StartingPosition::Latest
            }
        }
    }

    /// Lease `key` has a checkpoint now (or is gone): its first read no longer matters.
    pub(crate) fn forget(&self, key: &str) {
        if let Ok(mut starts) = self.0.lock() {
            starts.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_the_first_time_then_the_first_time_less_the_margin() {
        let starts = LatestStarts::default();
        let before = SystemTime::now();
        assert_eq!(starts.resolve("s"), StartingPosition::Latest);
        let after = SystemTime::now();
        let StartingPosition::AtTimestamp(at) = starts.resolve("s") else {
            panic!("a timestamp");
        };
        assert!(at >= before - LATEST_CLOCK_SKEW_MARGIN && at <= after - LATEST_CLOCK_SKEW_MARGIN);
        // The same first time, however often it is read again.
        assert_eq!(starts.resolve("s"), StartingPosition::AtTimestamp(at));
        assert_eq!(starts.resolve("other"), StartingPosition::Latest);
        starts.forget("s");
        assert_eq!(starts.resolve("s"), StartingPosition::Latest);
    }
}
