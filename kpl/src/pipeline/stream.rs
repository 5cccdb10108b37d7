//! Everything the pipeline keeps for one stream: its router (map, lanes), refresh state, ready
//! queue, retries, the records waiting for a map, the aggregates waiting to be settled, and
//! what holds its dispatch.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use aggregation_proto::KinesisRecord;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::lanes::retain_outgoing;
use super::ledger::Resolution;
use super::pack::pack_in_order;
use super::ready::ReadyQueue;
use super::record::{AttemptError, Outgoing, PendingRecord};
use super::refresh::{Finished, Refresh};
use super::router::{Router, RouterConfig};
use super::shard_map::ShardMap;
use crate::client::{KinesisError, StreamId};
use crate::config::MisroutedRecords;
use crate::metrics::{Metrics, StreamMetrics};
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

/// What settling a landed aggregate leaves the pipeline to do.
#[derive(Default)]
pub(crate) struct SettledLanding {
    /// Records stored where it landed, to be answered.
    pub(crate) stored: Vec<(PendingRecord, Resolution)>,
    /// Records to send again, routed as new (empty when order is kept: they went to the
    /// fronts of their lanes).
    pub(crate) route_again: Vec<PendingRecord>,
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

    /// Moves what its lanes let go to the ready queue, unless dispatch is held; notes when a
    /// lane can move next.
    pub(crate) fn move_to_ready(&mut self, now: Instant) {
        self.wake = None;
        if !self.held() {
            self.wake = self.router.move_to_ready(now, &mut self.ready);
        }
    }

    /// Seals every open aggregate and moves what its lanes let go to the ready queue, unless
    /// dispatch is held (lingering cannot bring more records: its senders wait).
    pub(crate) fn send_idle(&mut self, now: Instant) {
        if !self.held() {
            self.router.seal_idle();
            self.wake = self.router.move_to_ready(now, &mut self.ready);
        }
    }

    /// Ends a pass: gives back its share of what was answered, publishes its counts, and
    /// retires the stream when it is due.
    pub(crate) fn end_pass(&mut self, metrics: &Metrics, now: Instant) {
        let pass = std::mem::take(&mut self.pass);
        self.share
            .release(pass.released_records, pass.released_bytes);
        if self.should_retire(now) {
            debug!(stream = %self.id, "no handle writes to the stream any more: its state is dropped");
            self.retire(now);
        }
        metrics.received(Some(&self.metrics), pass.received);
        metrics.failed(Some(&self.metrics), pass.failed, pass.expired);
        metrics.pending(&self.metrics, self.outstanding);
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
    /// Counts a record taken in.
    pub(crate) fn admitted(&mut self) {
        self.pass.received += 1;
        self.outstanding += 1;
    }

    /// Counts `records` answered (`failed` of them failed, `expired` of those expired) and
    /// gives their budget `charge` back to the share at the end of the pass.
    pub(crate) fn answered(&mut self, records: usize, charge: usize, failed: u64, expired: u64) {
        self.outstanding = self.outstanding.saturating_sub(records);
        self.pass.failed += failed;
        self.pass.expired += expired;
        self.pass.released_records += records;
        self.pass.released_bytes += charge;
    }

    /// Routes a record into its lanes, or keeps it until a map covers it.
    pub(crate) fn route(&mut self, member: PendingRecord, now: Instant) {
        if let Some(member) = self.router.route(member) {
            if self.router.has_map() || self.refresh.is_parked() {
                // The open shards do not cover it: the map is stale (a reshard); or the stream
                // was missing and no refresh is due: look again.
                self.refresh.demand(now, false);
            }
            self.waiting_for_map.push(member);
        }
    }

    /// Replaces the map: gives back everything not in flight, to be routed again against it
    /// in arrival order. With order kept, nothing is sent until the calls made under the old
    /// map have settled.
    pub(crate) fn install(
        &mut self,
        map: ShardMap,
        ordered: bool,
        now: Instant,
    ) -> Vec<PendingRecord> {
        let displaced = self.router.install(map, now);
        self.take_to_route_again(displaced, ordered)
    }

    /// Sends without a map (see `Router::install_unmapped`); gives back what must be routed
    /// again, as [`install`](Self::install) does.
    pub(crate) fn install_unmapped(&mut self, ordered: bool, now: Instant) -> Vec<PendingRecord> {
        let displaced = self.router.install_unmapped(now);
        self.take_to_route_again(displaced, ordered)
    }

    /// `displaced` (what the old map held), the ready queue and the records waiting for a map,
    /// in arrival order, behind a barrier when order is kept.
    fn take_to_route_again(
        &mut self,
        mut displaced: Vec<PendingRecord>,
        ordered: bool,
    ) -> Vec<PendingRecord> {
        self.ready.drain_members(&mut displaced);
        displaced.append(&mut self.waiting_for_map);
        if ordered {
            self.barrier = self.calls_in_flight;
        }
        displaced.sort_by_key(|m| m.sequence);
        displaced
    }

    /// A listing (refresh `level`) brought `map`: installed if its shards differ (see
    /// [`install`](Self::install)). Gives back what must be routed again (everything held
    /// then, else the records waiting for a map) and how the refresh ended.
    pub(crate) fn map_listed(
        &mut self,
        level: u64,
        map: ShardMap,
        ordered: bool,
        now: Instant,
    ) -> (Vec<PendingRecord>, Finished) {
        let finished = self.refresh.finish(level, true, now);
        let again = if !self.router.has_map() || !map.same_shards(&self.router.map) {
            debug!(stream = %self.id, shards = map.shards.len(), "shard map changed");
            self.install(map, ordered, now)
        } else {
            std::mem::take(&mut self.waiting_for_map)
        };
        (again, finished)
    }

    /// A listing (refresh `level`) failed: retried with backoff, and the hold is lifted
    /// (sending with a stale map beats stalling until every record expires).
    pub(crate) fn listing_failed(&mut self, level: u64, error: &KinesisError, now: Instant) {
        self.refresh.finish(level, false, now);
        warn!(
            stream = %self.id,
            %error,
            failures = self.refresh.failures(),
            "shard map refresh failed; retrying with backoff"
        );
        self.hold = None;
    }

    /// A listing ended: the hold is lifted once a refresh that started after it has ended.
    pub(crate) fn listed(&mut self) {
        if self.hold.is_some_and(|held| self.refresh.satisfies(held)) {
            self.hold = None;
        }
    }

    /// The stream does not exist: no map will come, and no put could store what waits for
    /// one. Listed again only when a record for it needs a map. Gives back what waited.
    pub(crate) fn not_found(&mut self, now: Instant) -> Vec<PendingRecord> {
        self.refresh.park(now);
        std::mem::take(&mut self.waiting_for_map)
    }

    /// The aggregates waiting for a map that knows where they landed, now that one does (or,
    /// with a `current` map that still does not know the shard, which closed meanwhile: all).
    pub(crate) fn take_settleable(&mut self, current: bool) -> Vec<Unsettled> {
        let (settleable, waiting) = std::mem::take(&mut self.unsettled)
            .into_iter()
            .partition(|entry| current || self.router.map.position(&entry.shard_id).is_some());
        self.unsettled = waiting;
        settleable
    }

    /// Settles an aggregate stored whole on its shard: when that shard owns every record of
    /// it, all of them count as stored there; otherwise a record that shard owns counts as
    /// stored there under [`MisroutedRecords::ResendOutOfRange`], and every other record
    /// (every record, by default) is sent again to the shard that owns it: with order kept,
    /// at the fronts of its lanes here; else given back to be routed again.
    ///
    /// With the stream `gone` (deleted: nothing can be sent again), a record the landing shard
    /// owns counts as stored there and every other one is given back (possibly duplicated, as
    /// it is stored) for the caller to fail.
    pub(crate) fn settle_landed(
        &mut self,
        landed: Unsettled,
        policy: MisroutedRecords,
        ordered: bool,
        gone: bool,
        metrics: &Metrics,
        now: Instant,
    ) -> SettledLanding {
        let Unsettled {
            outgoing,
            shard_id,
            sequence_number,
            positions,
            expired_hash_keys,
        } = landed;
        let (shard_id, sequence_number) = (&shard_id, &sequence_number);
        let range = self
            .router
            .map
            .position(shard_id)
            .map(|i| self.router.map.shards[i].range);
        let error = AttemptError::new(
            "Misrouted",
            format!(
                "stored on {shard_id} after a reshard, outside the hash range of some of its records; sent again to the shards that own them"
            ),
        );
        // An aggregate whose every record the landing shard owns (built for a child just
        // merged into it, say) is where it belongs: every consumer reads it once as it is.
        let policy = if gone {
            MisroutedRecords::ResendOutOfRange
        } else {
            policy
        };
        let all_owned = range.is_some_and(|r| {
            outgoing
                .members
                .iter()
                .map(|member| member.hash_key)
                .chain(expired_hash_keys.iter().copied())
                .all(|hash_key| r.contains(hash_key))
        });
        let mut settled = SettledLanding::default();
        let kinesis_bytes = KinesisRecord::size(&outgoing.record);
        let (mut stored, mut stored_bytes) = (0, 0);
        for (position, mut member) in positions.into_iter().zip(outgoing.members) {
            let owned = range.is_some_and(|r| r.contains(member.hash_key));
            if owned && (all_owned || policy == MisroutedRecords::ResendOutOfRange) {
                stored += 1;
                stored_bytes += member.size();
                settled.stored.push((
                    member,
                    Resolution::Stored {
                        shard_id: shard_id.clone(),
                        sequence_number: sequence_number.clone(),
                        sub_sequence_number: Some(position),
                    },
                ));
                continue;
            }
            if let Some(last) = member.attempts.last_mut() {
                last.error_code = Some(error.code.clone());
                last.error_message = Some(error.message.clone());
            }
            member.possibly_duplicated = true;
            member.ready_since = now;
            settled.route_again.push(member);
        }
        if stored > 0 {
            // The Kinesis record is stored, whoever of its records it counts for.
            metrics.kinesis_record_put(
                &self.metrics,
                shard_id,
                stored,
                stored_bytes,
                kinesis_bytes,
            );
        }
        if settled.route_again.is_empty() {
            return settled;
        }
        let resend = settled.route_again.len();
        metrics.error(&self.metrics, "Misrouted", resend);
        metrics.possibly_duplicated(&self.metrics, resend);
        if ordered && !gone {
            // Older than anything their lanes hold now.
            let members = std::mem::take(&mut settled.route_again);
            let unowned = self.router.route_first(members, None, now);
            self.waiting_for_map.extend(unowned);
        }
        settled
    }

    /// A call of this stream ended (sent under the map of `epoch`).
    pub(crate) fn call_ended(&mut self, epoch: u64) {
        self.calls_in_flight = self.calls_in_flight.saturating_sub(1);
        if epoch < self.router.epoch {
            self.barrier = self.barrier.saturating_sub(1);
        }
    }

    /// What a call's answer says of the shards: those that throttled it (sent at `sent`) slow
    /// down; a record stored on a shard the map does not know shows the map is stale.
    pub(crate) fn answer_seen(
        &mut self,
        throttled_shards: &[Arc<str>],
        elsewhere: &[Arc<str>],
        sent: Instant,
        now: Instant,
    ) {
        for shard_id in throttled_shards {
            if let Some(position) = self.router.map.position(shard_id) {
                self.router.shards[position].limiter.throttled(sent, now);
            }
        }
        // Without a map every record lands "elsewhere" (Kinesis routes it): nothing is stale.
        if !self.router.is_unmapped()
            && elsewhere
                .iter()
                .any(|shard_id| self.router.map.position(shard_id).is_none())
        {
            // Stored on a shard the map does not know: it is stale (a reshard). Nothing more
            // leaves the lanes until a refresh that started after this: every aggregate built
            // for a closed parent would land whole in one child.
            let level = self.refresh.demand(now, true);
            self.hold = Some(self.hold.map_or(level, |held| held.max(level)));
        }
    }

    /// Puts a failed Kinesis record back to be sent at `at`: unordered, to the retries; with
    /// order kept, at the front of its lane (or, routed under an older map, of the lanes that
    /// own its keys now), nothing of the lane moving before `at`.
    pub(crate) fn place_retry(
        &mut self,
        outgoing: Outgoing,
        at: Instant,
        repack: bool,
        ordered: bool,
        now: Instant,
    ) {
        let target = outgoing.target.clone();
        let aggregation = self.router.aggregation();
        let outgoings = if repack {
            let due = outgoing.due;
            pack_in_order(outgoing.members, aggregation, &target, due)
        } else {
            vec![outgoing]
        };
        if !ordered {
            for outgoing in outgoings {
                self.schedule_retry(at, outgoing);
            }
            return;
        }
        if let Some(lane) = self.router.lane_mut(&target) {
            // Before anything queued after it, and nothing of the lane moves before `at`.
            for outgoing in outgoings.into_iter().rev() {
                lane.queue.push_front(outgoing);
            }
            lane.not_before = Some(lane.not_before.map_or(at, |t| t.max(at)));
            return;
        }
        // Routed under an older map: to the fronts of the lanes that own its keys now.
        let members: Vec<PendingRecord> = outgoings.into_iter().flat_map(|o| o.members).collect();
        let unowned = self.router.route_first(members, Some(at), now);
        if !unowned.is_empty() {
            self.refresh.demand(now, false);
            self.waiting_for_map.extend(unowned);
        }
    }
    /// Takes out the records whose TTL is over wherever they wait here: open aggregates, lane
    /// queues (behind a rate limit or a retry), the ready queue, unordered retries, records
    /// waiting for a map, misrouted aggregates waiting to be settled. Records in a call in
    /// flight wait for its answer (bounded by its timeout), whose settlement checks the TTL
    /// before any retry. Lowers `oldest` to the arrival of the oldest record kept.
    pub(crate) fn take_expired(
        &mut self,
        ttl: std::time::Duration,
        now: Instant,
        oldest: &mut Option<Instant>,
    ) -> Vec<PendingRecord> {
        let aggregation = self.router.aggregation();
        let mut gone = Vec::new();
        let mut keep = |member: &PendingRecord| {
            let live = !member.expired(Some(ttl), now);
            if live {
                *oldest = Some(oldest.map_or(member.arrived, |o| o.min(member.arrived)));
            }
            live
        };
        self.router.retain_records(&mut keep, &mut gone);
        for target in self.ready.retain_records(&mut keep, aggregation, &mut gone) {
            if let Some(lane) = self.router.lane_mut(&target) {
                lane.in_flight = lane.in_flight.saturating_sub(1);
            }
            self.router.list_target(&target);
        }
        if self
            .retries
            .iter()
            .any(|r| r.0.outgoing.members.iter().any(|m| !keep(m)))
        {
            let retries: Vec<_> = std::mem::take(&mut self.retries).into_vec();
            for std::cmp::Reverse(retrying) in retries {
                let at = retrying.at;
                for outgoing in
                    retain_outgoing(retrying.outgoing, &mut keep, aggregation, &mut gone)
                {
                    self.schedule_retry(at, outgoing);
                }
            }
        }
        let waiting = std::mem::take(&mut self.waiting_for_map);
        for member in waiting {
            if keep(&member) {
                self.waiting_for_map.push(member);
            } else {
                gone.push(member);
            }
        }
        for entry in &mut self.unsettled {
            let members = std::mem::take(&mut entry.outgoing.members);
            let positions = std::mem::take(&mut entry.positions);
            for (position, mut member) in positions.into_iter().zip(members) {
                if keep(&member) {
                    entry.outgoing.members.push(member);
                    entry.positions.push(position);
                } else {
                    // Stored, on a shard the map does not know yet: whether consumers read
                    // it there is not known.
                    member.possibly_duplicated = true;
                    entry.expired_hash_keys.push(member.hash_key);
                    gone.push(member);
                }
            }
        }
        self.unsettled
            .retain(|entry| !entry.outgoing.members.is_empty());
        gone
    }
}
