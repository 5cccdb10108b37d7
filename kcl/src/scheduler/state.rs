//! What a worker is doing, shard by shard: [`WorkerState`], read with
//! [`SchedulerHandle::state`](super::SchedulerHandle::state), and the board the shard
//! consumers write it to.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Where one held shard is in its lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardPhase {
    /// Waiting until these parents are processed to their end.
    WaitingOnParents {
        /// The parents not finished yet.
        parents: Vec<String>,
    },
    /// The processor is being initialized.
    Initializing,
    /// Reading and delivering records.
    Processing,
    /// The lease could not be renewed in time: no records are delivered until a renewal gets
    /// through (or the lease turns out lost).
    Paused,
    /// The shard's end was reached: child leases, `childShardIds` and the SHARD_END
    /// checkpoint are being written (retried until they are).
    ShardEnding,
    /// The processor's `shard_ended` did not store SHARD_END in
    /// [`max_shard_end_attempts`](crate::SchedulerBuilder::max_shard_end_attempts) calls: the
    /// worker no longer calls it. The shard stays unfinished and held (its children wait)
    /// until the lease is lost, handed over, or the worker shuts down; the next holder tries
    /// again from the last checkpoint.
    ShardEndFailed,
    /// Another worker asked for the shard: the processor is checkpointing before the lease
    /// is handed over.
    HandingOff,
    /// The worker is shutting down.
    ShuttingDown,
    /// The processor failed (panicked or timed out): the shard starts over from its last
    /// checkpoint at this instant.
    Restarting {
        /// When.
        at: Instant,
    },
}

/// One held shard.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardState {
    /// The lifecycle phase.
    pub phase: ShardPhase,
    /// Since when the shard has been at the tip: the last read returned nothing new and
    /// `MillisBehindLatest` 0, and every record delivered before was processed. `None` while
    /// records are waiting or being processed (time spent in `process_records`, waiting on a
    /// slow output say, is never idle time).
    pub at_tip_since: Option<Instant>,
    /// Since when the current `process_records` call has been running, if one is.
    pub processing_since: Option<Instant>,
    /// The latest `MillisBehindLatest`.
    pub millis_behind_latest: Option<i64>,
    /// User records delivered in this holding.
    pub records_delivered: u64,
    /// Since when reads have been failing (they are retried with backoff), if they are.
    pub retrieval_failing_since: Option<Instant>,
}

impl ShardState {
    fn new(phase: ShardPhase) -> Self {
        Self {
            phase,
            at_tip_since: None,
            processing_since: None,
            millis_behind_latest: None,
            records_delivered: 0,
            retrieval_failing_since: None,
        }
    }
}

/// A worker's state at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerState {
    /// Every shard this worker holds.
    pub shards: BTreeMap<String, ShardState>,
    /// When the set of held shards last changed.
    pub held_changed_at: Instant,
    /// Leases nobody alive holds, not finished, that this worker could take, as of
    /// [`last_scan`](Self::last_scan), less those it holds now (taken in that scan's cycle).
    pub takeable_leases: usize,
    /// When the lease table was last scanned (`None` before the first scan).
    pub last_scan: Option<Instant>,
    /// Leases this worker asked other workers for (graceful handoffs) and waits on.
    pub pending_handoffs: usize,
}

impl WorkerState {
    /// Since when there has been nothing left for this worker to read: every held shard at the
    /// tip (none waiting on a parent, ending, paused, or processing), no lease left to take as
    /// of the last scan, and no handoff asked for and not completed. `None` when that is not
    /// the case now.
    pub fn idle_since(&self) -> Option<Instant> {
        self.last_scan?;
        if self.takeable_leases > 0 || self.pending_handoffs > 0 {
            return None;
        }
        let mut since = self.held_changed_at;
        for shard in self.shards.values() {
            if shard.phase != ShardPhase::Processing {
                return None;
            }
            since = since.max(shard.at_tip_since?);
        }
        Some(since)
    }

    /// Whether there has been nothing left to read for at least `idle`, as of `now` (see
    /// [`idle_since`](Self::idle_since)).
    pub fn is_idle_for(&self, idle: Duration, now: Instant) -> bool {
        self.idle_since()
            .is_some_and(|since| now.saturating_duration_since(since) >= idle)
    }
}

/// Where shard consumers publish their state.
#[derive(Debug)]
pub(crate) struct StatusBoard {
    inner: Mutex<Board>,
}

#[derive(Debug)]
struct Board {
    shards: BTreeMap<String, ShardState>,
    held_changed_at: Instant,
}

impl Default for StatusBoard {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Board {
                shards: BTreeMap::new(),
                held_changed_at: Instant::now(),
            }),
        }
    }
}

impl StatusBoard {
    fn board(&self) -> MutexGuard<'_, Board> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, key: &str, change: impl FnOnce(&mut ShardState)) {
        let mut board = self.board();
        if let Some(state) = board.shards.get_mut(key) {
            change(state);
        }
    }

    /// A shard is held now (a new holding).
    pub(crate) fn held(&self, key: &str) {
        let mut board = self.board();
        board
            .shards
            .insert(key.to_owned(), ShardState::new(ShardPhase::Initializing));
        board.held_changed_at = Instant::now();
    }

    /// A shard is not held any more.
    pub(crate) fn gone(&self, key: &str) {
        let mut board = self.board();
        if board.shards.remove(key).is_some() {
            board.held_changed_at = Instant::now();
        }
    }

    pub(crate) fn phase(&self, key: &str, phase: ShardPhase) {
        self.update(key, |state| {
            if !matches!(phase, ShardPhase::Processing) {
                state.at_tip_since = None;
            }
            state.phase = phase;
        });
    }

    /// A batch with records is being handed to the processor.
    pub(crate) fn delivering(&self, key: &str, records: usize) {
        self.update(key, |state| {
            state.at_tip_since = None;
            state.processing_since = Some(Instant::now());
            state.records_delivered += records as u64;
            state.retrieval_failing_since = None;
        });
    }

    /// The processor returned.
    pub(crate) fn processed(&self, key: &str, behind: Option<i64>) {
        self.update(key, |state| {
            state.processing_since = None;
            if behind.is_some() {
                state.millis_behind_latest = behind;
            }
        });
    }

    /// A read returned nothing new: at the tip if the service says so.
    pub(crate) fn read_nothing(&self, key: &str, behind: Option<i64>) {
        self.update(key, |state| {
            state.retrieval_failing_since = None;
            if behind.is_some() {
                state.millis_behind_latest = behind;
            }
            if behind.is_none_or(|ms| ms <= 0) {
                state.at_tip_since.get_or_insert_with(Instant::now);
            } else {
                state.at_tip_since = None;
            }
        });
    }

    pub(crate) fn retrieval_failing(&self, key: &str) {
        self.update(key, |state| {
            state
                .retrieval_failing_since
                .get_or_insert_with(Instant::now);
        });
    }

    pub(crate) fn snapshot(&self) -> (BTreeMap<String, ShardState>, Instant) {
        let board = self.board();
        (board.shards.clone(), board.held_changed_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(
        start: Instant,
        shards: &[(&str, ShardState)],
        takeable: usize,
        scanned: bool,
    ) -> WorkerState {
        WorkerState {
            shards: shards
                .iter()
                .map(|(k, s)| ((*k).to_owned(), s.clone()))
                .collect(),
            held_changed_at: start,
            takeable_leases: takeable,
            last_scan: scanned.then_some(start),
            pending_handoffs: 0,
        }
    }

    fn at_tip(since: Instant) -> ShardState {
        ShardState {
            at_tip_since: Some(since),
            ..ShardState::new(ShardPhase::Processing)
        }
    }

    #[test]
    fn idle_needs_every_shard_at_the_tip_and_nothing_to_take() {
        let start = Instant::now();
        let now = start + Duration::from_secs(100);
        let tip = start + Duration::from_secs(10);
        let state = |shards: &[(&str, ShardState)], takeable, scanned| {
            state(start, shards, takeable, scanned)
        };
        let idle = state(&[("a", at_tip(tip)), ("b", at_tip(tip))], 0, true);
        assert_eq!(idle.idle_since(), Some(tip));
        assert!(idle.is_idle_for(Duration::from_secs(90), now));
        assert!(!idle.is_idle_for(Duration::from_secs(91), now));

        // A shard processing a batch (blocked on output, say) is not idle.
        let busy = ShardState {
            processing_since: Some(tip),
            ..ShardState::new(ShardPhase::Processing)
        };
        assert_eq!(
            state(&[("a", at_tip(tip)), ("b", busy)], 0, true).idle_since(),
            None
        );
        // Nor one waiting on a parent.
        let waiting = ShardState::new(ShardPhase::WaitingOnParents {
            parents: vec!["p".into()],
        });
        assert_eq!(state(&[("a", waiting)], 0, true).idle_since(), None);
        // Nor is a worker that could take a lease, or has not scanned yet.
        assert_eq!(state(&[("a", at_tip(tip))], 1, true).idle_since(), None);
        assert_eq!(state(&[("a", at_tip(tip))], 0, false).idle_since(), None);
        // Holding nothing with nothing to take is idle since the held set changed, unless a
        // handoff it asked for is still coming.
        assert!(state(&[], 0, true).idle_since().is_some());
        let waiting_on_a_handoff = WorkerState {
            pending_handoffs: 1,
            ..state(&[], 0, true)
        };
        assert_eq!(waiting_on_a_handoff.idle_since(), None);
    }
}
