//! Everything the pipeline keeps for one stream: its router (map, lanes), refresh state, ready
//! queue, retries, the records waiting for a map, the aggregates waiting to be settled, and
//! what holds its dispatch.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use tokio::time::Instant;

use super::lanes::{Router, RouterConfig};
use super::ready::ReadyQueue;
use super::record::{Outgoing, PendingRecord};
use super::refresh::Refresh;
use crate::client::StreamId;
use crate::metrics::StreamMetrics;
use crate::streams::StreamShare;

/// An aggregate stored on a shard the current map does not know: settled once a refresh
/// brings the map that has that shard.
pub(crate) struct Unsettled {
    pub(crate) outgoing: Outgoing,
    pub(crate) shard_id: Arc<str>,
    pub(crate) sequence_number: Arc<str>,
    /// Where each member sits in the stored aggregate (its sub-sequence number): members
    /// expired meanwhile leave it, the others keep theirs.
    pub(crate) positions: Vec<u64>,
    /// Hash keys of members expired meanwhile: still in the stored aggregate, so they count
    /// when deciding whether the landing shard owns all of it.
    pub(crate) expired_hash_keys: Vec<u128>,
}

impl Unsettled {
    pub(crate) fn new(outgoing: Outgoing, shard_id: Arc<str>, sequence_number: Arc<str>) -> Self {
        let positions = (0..outgoing.members.len() as u64).collect();
        Self {
            outgoing,
            shard_id,
            sequence_number,
            positions,
            expired_hash_keys: Vec::new(),
        }
    }
}

/// A Kinesis record waiting out its backoff (when order is not kept; ordered retries wait at
/// the front of their lane).
pub(crate) struct Retrying {
    pub(crate) at: Instant,
    pub(crate) sequence: u64,
    pub(crate) outgoing: Outgoing,
}

impl PartialEq for Retrying {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.sequence) == (other.at, other.sequence)
    }
}
impl Eq for Retrying {}
impl PartialOrd for Retrying {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Retrying {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.sequence).cmp(&(other.at, other.sequence))
    }
}

pub(crate) struct StreamState {
    pub(crate) id: Arc<StreamId>,
    pub(crate) metrics: StreamMetrics,
    pub(crate) router: Router,
    pub(crate) refresh: Refresh,
    pub(crate) ready: ReadyQueue,
    pub(crate) retries: BinaryHeap<Reverse<Retrying>>,
    retry_sequence: u64,
    /// No shard of the map owns them yet (no map yet, or a gap after a reshard), in arrival
    /// order.
    pub(crate) waiting_for_map: Vec<PendingRecord>,
    pub(crate) unsettled: Vec<Unsettled>,
    /// A put landed on a shard the map does not know: nothing leaves the lanes until a refresh
    /// that started after it (this demand level) has ended.
    pub(crate) hold: Option<u64>,
    /// PutRecords calls of this stream in flight.
    pub(crate) calls_in_flight: usize,
    /// With order kept: calls started under an older map still in flight. Nothing is sent
    /// until they settle, or a record re-routed to a new shard could overtake an earlier record
    /// of its key still on its way to the old one.
    pub(crate) barrier: usize,
    /// When a lane waiting for its rate limit or a retry can move.
    pub(crate) wake: Option<Instant>,
    /// Records of this stream accepted and not yet answered.
    pub(crate) outstanding: usize,
    /// Counted in this pass, published at its end.
    pub(crate) pass: PassCounts,
    /// What this stream holds of the budget (its handles charge it).
    pub(crate) share: Arc<StreamShare>,
    /// No handle writes to it and it holds nothing: its map and lanes are dropped and it is
    /// not refreshed, until a handle for it sends again.
    pub(crate) retired: bool,
    /// Since when it has had no handle and held nothing.
    idle_since: Option<Instant>,
}

/// How long a stream without handles and records keeps its map before it is retired.
pub(crate) const RETIRE_AFTER: std::time::Duration = std::time::Duration::from_secs(300);

/// What one pass received and failed, for the metrics.
#[derive(Debug, Default)]
pub(crate) struct PassCounts {
    pub(crate) received: u64,
    pub(crate) failed: u64,
    pub(crate) expired: u64,
    /// Records answered, and their budget charges: given back to the stream's share.
    pub(crate) released_records: usize,
    pub(crate) released_bytes: usize,
}

impl StreamState {
    pub(crate) fn new(
        id: Arc<StreamId>,
        share: Arc<StreamShare>,
        router: RouterConfig,
        refresh_interval: std::time::Duration,
        now: Instant,
    ) -> Self {
        Self {
            metrics: StreamMetrics::new(id.as_str()),
            id,
            router: Router::new(router),
            refresh: Refresh::new(refresh_interval, now),
            ready: ReadyQueue::default(),
            retries: BinaryHeap::new(),
            retry_sequence: 0,
            waiting_for_map: Vec::new(),
            unsettled: Vec::new(),
            hold: None,
            calls_in_flight: 0,
            barrier: 0,
            wake: None,
            outstanding: 0,
            pass: PassCounts::default(),
            share,
            retired: false,
            idle_since: None,
        }
    }

    /// Whether no handle has written to it for [`RETIRE_AFTER`] and it holds nothing (the
    /// registry and this state own the share's only references). Not at once: a handle made
    /// per record (`producer.for_stream(name).send(..)`) must not lose the map between two.
    pub(crate) fn should_retire(&mut self, now: Instant) -> bool {
        let idle = !self.retired
            && self.outstanding == 0
            && self.calls_in_flight == 0
            && Arc::strong_count(&self.share) <= 2;
        if !idle {
            self.idle_since = None;
            return false;
        }
        let since = *self.idle_since.get_or_insert(now);
        // Not while a refresh runs: its map would come back after.
        now.saturating_duration_since(since) >= RETIRE_AFTER && self.refresh.next_due().is_some()
    }

    /// Drops its map and lanes and stops refreshing it (see [`retired`](Self::retired)).
    pub(crate) fn retire(&mut self, now: Instant) {
        let displaced = self
            .router
            .install(super::shard_map::ShardMap::default(), now);
        debug_assert!(displaced.is_empty(), "a retired stream held records");
        self.waiting_for_map.extend(displaced);
        self.refresh.park(now);
        self.retired = true;
        self.idle_since = None;
    }

    /// Whether dispatch is held (a stale map, or calls of an older map still out).
    pub(crate) fn held(&self) -> bool {
        self.hold.is_some() || self.barrier > 0
    }

    pub(crate) fn schedule_retry(&mut self, at: Instant, outgoing: Outgoing) {
        self.retry_sequence += 1;
        self.retries.push(Reverse(Retrying {
            at,
            sequence: self.retry_sequence,
            outgoing,
        }));
    }

    /// The retries due by `now`.
    pub(crate) fn due_retries(&mut self, now: Instant) -> Vec<Outgoing> {
        let mut due = Vec::new();
        while self.retries.peek().is_some_and(|Reverse(r)| r.at <= now) {
            if let Some(Reverse(retrying)) = self.retries.pop() {
                due.push(retrying.outgoing);
            }
        }
        due
    }

    /// When the next thing of this stream is due: a seal, a retry, a lane, a ready record's
    /// linger, a refresh.
    /// A ready record's linger counts only when a call could carry it (`room`): otherwise the
    /// end of a call wakes the pipeline anyway, and a linger already past would spin it.
    pub(crate) fn next_wake(&self, draining: bool, room: bool) -> Option<Instant> {
        let ready = if draining || !room || self.held() {
            None
        } else {
            self.ready.next_due()
        };
        [
            self.router.next_seal(),
            self.retries.peek().map(|Reverse(r)| r.at),
            self.wake,
            ready,
            self.refresh.next_due(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Every record held here, leaving it empty (the pipeline is failing).
    pub(crate) fn drain_all(&mut self) -> Vec<PendingRecord> {
        let mut all = self.router.install(Default::default(), Instant::now());
        self.ready.drain_members(&mut all);
        for Reverse(retrying) in self.retries.drain() {
            all.extend(retrying.outgoing.members);
        }
        all.append(&mut self.waiting_for_map);
        for unsettled in self.unsettled.drain(..) {
            all.extend(unsettled.outgoing.members);
        }
        all
    }
}
