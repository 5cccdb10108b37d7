//! Leases still at `LATEST` (no checkpoint yet): where a reader starts.
//!
//! `LATEST` means "from when the application started reading the shard", but a lease keeps the
//! `LATEST` checkpoint until its processor first checkpoints, and a fresh `LATEST` iterator
//! starts after everything that arrived in between. A processor restarted after a panic or a
//! timeout, a lease lost and taken back, or a lease that fails over to another worker before
//! its first checkpoint would skip the records its first processor was given but never
//! checkpointed, and those that arrived meanwhile. The Java KCL (2.x and 3.x) skips them.
//!
//! So before the first read of such a lease, the worker notes the time in the lease row
//! (`latestStartedAt`, with a write fenced to its holding, see
//! [`LeaseTable::note_latest_start`](crate::lease::LeaseTable::note_latest_start)), and every
//! later read of it, by any worker of ours, while the checkpoint is still `LATEST`, starts
//! `AT_TIMESTAMP` of that time less `LATEST_CLOCK_SKEW_MARGIN` (arrival times are the
//! service's clock): records are delivered again, as after any restart, never skipped. The
//! first checkpoint removes the note. A Java worker ignores it and starts at `LATEST`.
//!
//! When the note cannot be written (the lease table failing), the time is kept in this process
//! and written again at the next read: a restart of the processor still starts at the first
//! read, only a failover before the note is stored starts at `LATEST`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use tracing::warn;

use crate::coordinator::{HeldLeaseError, HeldRef, LeaseCoordinator};
use crate::lease::{Checkpoint, Lease};
use crate::retrieval::{LATEST_CLOCK_SKEW_MARGIN, StartingPosition};

/// When this worker first read each lease that is still at `LATEST` and whose note is not
/// stored yet (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct LatestStarts(Mutex<HashMap<String, SystemTime>>);

impl LatestStarts {
    /// When this worker first read lease `key`, noting `now` if this is the first time, and
    /// whether it is.
    fn first_read(&self, key: &str, now: SystemTime) -> (SystemTime, bool) {
        let Ok(mut starts) = self.0.lock() else {
            return (now, true);
        };
        match starts.get(key) {
            Some(first) => (*first, false),
            None => {
                starts.insert(key.to_owned(), now);
                (now, true)
            }
        }
    }

    /// Lease `key`'s first read no longer needs keeping here (stored, checkpointed, or gone).
    pub(crate) fn forget(&self, key: &str) {
        if let Ok(mut starts) = self.0.lock() {
            starts.remove(key);
        }
    }
}

/// Where the holding's lease starts being read, and the lease as stored after noting its first
/// read. `None` when the holding ended meanwhile.
pub(crate) async fn starting_position(
    coordinator: &LeaseCoordinator,
    holding: &HeldRef,
    starts: &LatestStarts,
    lease: Lease,
) -> Option<(Lease, StartingPosition)> {
    if lease.checkpoint != Checkpoint::Latest {
        starts.forget(&holding.key);
        return Some((lease, StartingPosition::Latest));
    }
    if let Some(first) = lease.latest_started_at {
        starts.forget(&holding.key);
        return Some((lease, since(first)));
    }
    // Noted before the source asks for its iterator, so the time is at or before that
    // iterator's start.
    let (first, first_time) = starts.first_read(&holding.key, SystemTime::now());
    let position = if first_time {
        StartingPosition::Latest
    } else {
        since(first)
    };
    match coordinator.note_latest_start_holding(holding, first).await {
        Ok(stored) => {
            starts.forget(&holding.key);
            Some((stored, position))
        }
        Err(HeldLeaseError::NotHeld { .. }) => None,
        Err(error) => {
            warn!(
                %error,
                "could not note in the lease when this LATEST lease was first read: a failover before its first checkpoint would start at LATEST; noted in this process and written again at the next read"
            );
            Some((lease, position))
        }
    }
}

/// `AT_TIMESTAMP` of a first read, less the clock-skew margin.
fn since(first: SystemTime) -> StartingPosition {
    StartingPosition::AtTimestamp(
        first
            .checked_sub(LATEST_CLOCK_SKEW_MARGIN)
            .unwrap_or(SystemTime::UNIX_EPOCH),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_read_is_kept_until_forgotten() {
        let starts = LatestStarts::default();
        let first = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000);
        let later = first + std::time::Duration::from_secs(60);
        assert_eq!(starts.first_read("s", first), (first, true));
        assert_eq!(starts.first_read("s", later), (first, false));
        assert_eq!(starts.first_read("other", later), (later, true));
        starts.forget("s");
        assert_eq!(starts.first_read("s", later), (later, true));
        assert_eq!(
            since(first),
            StartingPosition::AtTimestamp(first - LATEST_CLOCK_SKEW_MARGIN)
        );
    }
}
