//! Routing one stream's records under one shard map (or, while none can be listed, a stand-in
//! shard): which shard and [lane](super::lanes) a record goes to, when open aggregates are
//! sealed, what lanes let go to the ready queue past the shard's rate limit, and (when order
//! is kept) the rule that lets one Kinesis record per lane be in flight.
//!
//! A shard has one lane when order is not kept. When it is, a shard has `ordering_lanes` lanes
//! and every hash key belongs to one of them (a hash of the key), so records of one key share a
//! lane and stay in order, while lanes, holding disjoint keys, are in flight side by side: a
//! failed aggregate of one lane can never be overtaken by a later record of any of its keys.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use aggregation_proto::{AddError, AggregatorConfig};
use tokio::time::Instant;

use super::lanes::{Lane, ShardLanes, later, seal};
use super::pack::{alone, pack_in_order};
use super::record::{PendingRecord, Target};
use super::shard_map::ShardMap;
use crate::limiter::ShardLimiter;

/// Which open aggregates a tick seals besides those due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SealScope {
    /// Only those due (their linger is over).
    Due,
    /// Also every one holding a record of this flush generation or an older one.
    UpTo(u64),
    /// All of them (the producer is shutting down).
    All,
}

/// What the router needs to know of the settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RouterConfig {
    pub(crate) aggregation: Option<AggregatorConfig>,
    pub(crate) lanes: usize,
    pub(crate) ordered: bool,
    pub(crate) linger: std::time::Duration,
    pub(crate) rate_limit_percent: u32,
}

/// Where every record of one stream waits before dispatch, under one shard map.
pub(crate) struct Router {
    config: RouterConfig,
    pub(crate) map: ShardMap,
    /// Bumped with every new map; outgoing records carry the epoch they were routed in.
    pub(crate) epoch: u64,
    pub(crate) shards: Vec<ShardLanes>,
    /// Open aggregates by seal time (entries go stale when a lane seals early: checked).
    lingering: BinaryHeap<Reverse<(Instant, usize, usize)>>,
    /// Lanes with queued records.
    dispatch: Vec<(usize, usize)>,
    /// Member lists of settled aggregates, for the next ones: an aggregate's list is large
    /// (hundreds of records), and many are alive at once when order is kept.
    spare: Vec<Vec<PendingRecord>>,
    /// The map is unknown and cannot be listed (ListShards denied, or failing): one stand-in
    /// shard owns every key, and records go alone, routed by Kinesis from their own hash keys,
    /// not rate-limited (the C++ KPL's choice: sending beats waiting for the TTL).
    unmapped: bool,
}

/// The id of the stand-in shard while the map is unknown (no shard is called that).
pub(crate) const UNMAPPED_SHARD: &str = "";

/// Spreads hash keys over lanes (MD5 hash keys are uniform already; explicit ones may not be).
fn lane_of(hash_key: u128, lanes: usize) -> usize {
    if lanes <= 1 {
        return 0;
    }
    let folded = (hash_key as u64) ^ ((hash_key >> 64) as u64);
    (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % lanes
}

impl Router {
    /// A router with no shards yet (the map is unknown).
    pub(crate) fn new(config: RouterConfig) -> Self {
        Self {
            config,
            map: ShardMap::default(),
            epoch: 0,
            shards: Vec::new(),
            lingering: BinaryHeap::new(),
            dispatch: Vec::new(),
            spare: Vec::new(),
            unmapped: false,
        }
    }

    /// Keeps an emptied member list for a later aggregate.
    pub(crate) fn recycle(&mut self, mut members: Vec<PendingRecord>) {
        members.clear();
        let limit = (self.shards.len() * self.config.lanes).clamp(8, 256);
        if members.capacity() > 1 && self.spare.len() < limit {
            self.spare.push(members);
        }
    }

    /// Whether a map listed from Kinesis is installed (a listing always has an open shard).
    pub(crate) fn has_map(&self) -> bool {
        !self.map.shards.is_empty() && !self.unmapped
    }

    /// How Kinesis records of this stream are packed now: `None` (each user record alone)
    /// without aggregation, or without a map (an aggregate's records must share a shard).
    pub(crate) fn aggregation(&self) -> Option<AggregatorConfig> {
        self.config.aggregation.filter(|_| !self.unmapped)
    }

    /// Whether records go without a map (see [`install_unmapped`](Self::install_unmapped)).
    pub(crate) fn is_unmapped(&self) -> bool {
        self.unmapped
    }

    /// Sends without a map from now on, until a listed map is installed: one stand-in shard
    /// owns every hash key, records are not aggregated (an aggregate's records must share a
    /// shard, which only a map predicts) and not rate-limited; with order kept, one record
    /// per lane is in flight as usual. Returns what was held, like [`install`](Self::install).
    pub(crate) fn install_unmapped(&mut self, now: Instant) -> Vec<PendingRecord> {
        let shards = vec![super::shard_map::Shard {
            id: UNMAPPED_SHARD.into(),
            range: aggregation_proto::HashRange::ALL,
        }];
        let displaced = self.install(ShardMap { shards }, now);
        for shard in &mut self.shards {
            shard.limiter = ShardLimiter::new(u32::MAX, now);
        }
        self.unmapped = true;
        displaced
    }

    fn aggregator_config(&self) -> AggregatorConfig {
        self.config.aggregation.unwrap_or_default()
    }

    /// Installs `map` as a new epoch and returns every record held under the old one (open
    /// aggregates and queues), for the caller to route again in arrival order. Limiters
    /// survive for shards that still exist.
    pub(crate) fn install(&mut self, map: ShardMap, now: Instant) -> Vec<PendingRecord> {
        let mut displaced = Vec::new();
        let mut old = std::mem::take(&mut self.shards);
        for shard in &mut old {
            for lane in &mut shard.lanes {
                lane.drain(&mut displaced);
            }
        }
        let aggregator = self.aggregator_config();
        self.shards = map
            .shards
            .iter()
            .map(|shard| {
                let limiter = old.iter().find(|s| s.id == shard.id).map_or_else(
                    || ShardLimiter::new(self.config.rate_limit_percent, now),
                    |s| s.limiter.clone(),
                );
                ShardLanes {
                    id: shard.id.clone(),
                    limiter,
                    lanes: (0..self.config.lanes)
                        .map(|_| Lane::new(aggregator))
                        .collect(),
                }
            })
            .collect();
        self.map = map;
        self.epoch += 1;
        self.unmapped = false;
        self.lingering.clear();
        self.dispatch.clear();
        displaced
    }

    /// The target a record of `hash_key` goes to under the current map.
    pub(crate) fn target_of(&self, hash_key: u128) -> Option<Target> {
        let shard = self.map.lookup(hash_key)?;
        Some(Target {
            shard_id: self.shards[shard].id.clone(),
            shard,
            lane: lane_of(hash_key, self.config.lanes),
            map_epoch: self.epoch,
        })
    }

    /// Whether `target` was routed under the current map.
    pub(crate) fn is_current(&self, target: &Target) -> bool {
        target.map_epoch == self.epoch
    }

    pub(crate) fn lane_mut(&mut self, target: &Target) -> Option<&mut Lane> {
        if !self.is_current(target) {
            return None;
        }
        self.shards
            .get_mut(target.shard)
            .and_then(|s| s.lanes.get_mut(target.lane))
    }

    fn list(&mut self, shard: usize, lane: usize) {
        let entry = &mut self.shards[shard].lanes[lane];
        if !entry.listed {
            entry.listed = true;
            self.dispatch.push((shard, lane));
        }
    }

    /// The calls that carried a Kinesis record of each of `targets` have ended: their lanes
    /// may move again (a lane of an older map is gone).
    pub(crate) fn calls_ended(&mut self, targets: &[Target]) {
        for target in targets {
            if let Some(lane) = self.lane_mut(target) {
                lane.in_flight = lane.in_flight.saturating_sub(1);
            }
            self.list_target(target);
        }
    }

    /// Lists the lane of `target` for dispatch (something was queued there).
    pub(crate) fn list_target(&mut self, target: &Target) {
        if self.is_current(target) && target.shard < self.shards.len() {
            self.list(target.shard, target.lane);
        }
    }

    /// Adds a record to its lane's open aggregate (or queues it alone); gives it back when no
    /// open shard of the map owns its hash key.
    pub(crate) fn route(&mut self, pending: PendingRecord) -> Option<PendingRecord> {
        let Some(shard) = self.map.lookup(pending.hash_key) else {
            return Some(pending);
        };
        let lane_index = lane_of(pending.hash_key, self.config.lanes);
        let due = later(pending.arrived, self.config.linger);
        let aggregating = self.aggregation().is_some();
        // The target (an `Arc` clone) is made only when a Kinesis record is: not per record.
        let epoch = self.epoch;
        let state = &mut self.shards[shard];
        let target = || Target {
            shard_id: state.id.clone(),
            shard,
            lane: lane_index,
            map_epoch: epoch,
        };
        let lane = &mut state.lanes[lane_index];
        let queued = if !aggregating {
            lane.queue.push_back(alone(pending, target(), due));
            true
        } else {
            match lane.aggregator.try_add(&pending.record) {
                Ok(()) => {
                    lane.members.push(pending);
                    false
                }
                Err(AddError::Full) => {
                    let target = target();
                    seal(lane, &target, &mut self.spare);
                    if lane.aggregator.try_add(&pending.record).is_ok() {
                        lane.members.push(pending);
                    } else {
                        // Cannot happen for a record that passed a full aggregate's size check.
                        lane.queue.push_back(alone(pending, target, due));
                    }
                    true
                }
                Err(_) => {
                    // Larger than an aggregate may be: alone, after the records before it.
                    let target = target();
                    seal(lane, &target, &mut self.spare);
                    lane.queue.push_back(alone(pending, target, due));
                    true
                }
            }
        };
        if !lane.members.is_empty() && lane.due.is_none() {
            lane.due = Some(due);
            self.lingering.push(Reverse((due, shard, lane_index)));
        }
        if queued {
            self.list(shard, lane_index);
        }
        None
    }

    /// Puts records that must go before anything their lanes hold (retries from before a map
    /// change, in arrival order) at the fronts of their lanes. Gives back those no shard owns.
    pub(crate) fn route_first(
        &mut self,
        mut members: Vec<PendingRecord>,
        not_before: Option<Instant>,
        now: Instant,
    ) -> Vec<PendingRecord> {
        members.sort_by_key(|m| m.sequence);
        let mut unowned = Vec::new();
        let mut by_lane: Vec<(Target, Vec<PendingRecord>)> = Vec::new();
        for member in members {
            let Some(target) = self.target_of(member.hash_key) else {
                unowned.push(member);
                continue;
            };
            match by_lane
                .iter_mut()
                .find(|(t, _)| (t.shard, t.lane) == (target.shard, target.lane))
            {
                Some((_, list)) => list.push(member),
                None => by_lane.push((target, vec![member])),
            }
        }
        let aggregation = self.aggregation();
        for (target, list) in by_lane {
            let packed = pack_in_order(list, aggregation, &target, now);
            let lane = &mut self.shards[target.shard].lanes[target.lane];
            for outgoing in packed.into_iter().rev() {
                lane.queue.push_front(outgoing);
            }
            if self.config.ordered
                && let Some(at) = not_before
            {
                lane.not_before = Some(lane.not_before.map_or(at, |t| t.max(at)));
            }
            self.list(target.shard, target.lane);
        }
        unowned
    }

    /// Seals the open aggregates due by `now`, and those `scope` asks for besides.
    pub(crate) fn seal_due(&mut self, now: Instant, scope: SealScope) {
        match scope {
            SealScope::All => {
                self.seal_all();
                return;
            }
            // A flush waits for these: they go now. Records that came after it keep
            // aggregating (a flush behind a throttled record must not turn every later
            // record into an aggregate of its own, tick after tick).
            SealScope::UpTo(generation) => self.seal_where(|lane| {
                lane.members
                    .first()
                    .is_some_and(|first| first.generation <= generation)
            }),
            SealScope::Due => {}
        }
        while let Some(&Reverse((due, shard, lane))) = self.lingering.peek() {
            if due > now {
                break;
            }
            self.lingering.pop();
            if shard >= self.shards.len() || lane >= self.shards[shard].lanes.len() {
                continue;
            }
            let target = self.lane_target(shard, lane);
            let entry = &mut self.shards[shard].lanes[lane];
            if entry.due.is_none_or(|d| d > due) {
                continue;
            }
            if self.config.ordered && (entry.in_flight > 0 || !entry.queue.is_empty()) {
                // The lane cannot send it yet: keep filling it rather than seal one small
                // aggregate per linger behind a slow answer (the lane would then move one
                // per round trip and fall behind for good). Not looked at again on a timer:
                // every way a lane gets free (an answer, an expiry, a queue moved out) lists
                // it, and `move_to_ready` then seals it. A timer at `now + linger` would be a
                // loop with no end here at zero linger.
                continue;
            }
            seal(entry, &target, &mut self.spare);
            self.list(shard, lane);
        }
    }

    /// Seals every open aggregate.
    pub(crate) fn seal_all(&mut self) {
        self.seal_where(|_| true);
        self.lingering.clear();
    }

    /// Seals the open aggregates of lanes with nothing queued (the budget is nearly taken and
    /// nothing is moving: partial aggregates must go). Lanes with a queue wait for their rate
    /// limit, where a partial aggregate would spend a record token on fewer records.
    pub(crate) fn seal_idle(&mut self) {
        self.seal_where(|lane| lane.queue.is_empty());
    }

    /// Seals the open aggregate of every lane `choose` picks (among those with one).
    fn seal_where(&mut self, choose: impl Fn(&Lane) -> bool) {
        for shard in 0..self.shards.len() {
            for lane in 0..self.shards[shard].lanes.len() {
                let entry = &self.shards[shard].lanes[lane];
                if !entry.members.is_empty() && choose(entry) {
                    let target = self.lane_target(shard, lane);
                    seal(
                        &mut self.shards[shard].lanes[lane],
                        &target,
                        &mut self.spare,
                    );
                    self.list(shard, lane);
                }
            }
        }
    }

    fn lane_target(&self, shard: usize, lane: usize) -> Target {
        Target {
            shard_id: self.shards[shard].id.clone(),
            shard,
            lane,
            map_epoch: self.epoch,
        }
    }

    /// When the next open aggregate is due.
    pub(crate) fn next_seal(&self) -> Option<Instant> {
        self.lingering.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Moves what the rate limits and the ordering rule allow from the lane queues into
    /// `ready` (in lane order). Returns when a lane waiting only for its rate limit or a retry
    /// can move next.
    pub(crate) fn move_to_ready(
        &mut self,
        now: Instant,
        ready: &mut super::ready::ReadyQueue,
    ) -> Option<Instant> {
        let ordered = self.config.ordered;
        let mut wake: Option<Instant> = None;
        let mut still_waiting = Vec::new();
        for (shard, lane_index) in std::mem::take(&mut self.dispatch) {
            let epoch = self.epoch;
            let Some(state) = self.shards.get_mut(shard) else {
                continue;
            };
            let limiter = &mut state.limiter;
            let Some(lane) = state.lanes.get_mut(lane_index) else {
                continue;
            };
            lane.listed = false;
            // An ordered lane that just got free seals its open aggregate if it is due (held
            // back by `seal_due` while the lane was busy).
            if ordered
                && lane.in_flight == 0
                && lane.queue.is_empty()
                && lane.due.is_some_and(|due| due <= now)
            {
                let target = Target {
                    shard_id: state.id.clone(),
                    shard,
                    lane: lane_index,
                    map_epoch: epoch,
                };
                seal(lane, &target, &mut self.spare);
            }
            while let Some(front) = lane.queue.front() {
                if ordered {
                    if lane.in_flight > 0 {
                        break;
                    }
                    if let Some(at) = lane.not_before {
                        if at > now {
                            wake = Some(wake.map_or(at, |w| w.min(at)));
                            break;
                        }
                        lane.not_before = None;
                    }
                }
                if let Err(wait) = limiter.try_take(front.size(), now) {
                    let at = now + wait;
                    wake = Some(wake.map_or(at, |w| w.min(at)));
                    break;
                }
                let Some(outgoing) = lane.queue.pop_front() else {
                    break;
                };
                lane.in_flight += 1;
                ready.push(outgoing);
            }
            if !lane.queue.is_empty() {
                lane.listed = true;
                still_waiting.push((shard, lane_index));
            }
        }
        self.dispatch = still_waiting;
        wake
    }

    /// Every record the router holds, for the expiry sweep: `keep` decides per record.
    pub(crate) fn retain_records(
        &mut self,
        mut keep: impl FnMut(&PendingRecord) -> bool,
        expired: &mut Vec<PendingRecord>,
    ) {
        let aggregation = self.aggregation();
        for shard in 0..self.shards.len() {
            for lane_index in 0..self.shards[shard].lanes.len() {
                let target = self.lane_target(shard, lane_index);
                self.shards[shard].lanes[lane_index].retain_records(
                    &mut keep,
                    aggregation,
                    &target,
                    expired,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::ready::ReadyQueue;
    use crate::pipeline::record::Incoming;
    use crate::pipeline::shard_map::Shard;
    use aggregation_proto::HashRange;
    use aggregation_proto::UserRecord;
    use std::time::Duration;

    fn config(ordered: bool, lanes: usize) -> RouterConfig {
        RouterConfig {
            aggregation: Some(AggregatorConfig::default().max_size(2_000)),
            lanes,
            ordered,
            linger: Duration::from_millis(100),
            rate_limit_percent: 100_000,
        }
    }

    fn two_shards() -> ShardMap {
        let half = u128::MAX / 2;
        ShardMap {
            shards: vec![
                Shard {
                    id: "a".into(),
                    range: HashRange::new(0, half).unwrap(),
                },
                Shard {
                    id: "b".into(),
                    range: HashRange::new(half + 1, u128::MAX).unwrap(),
                },
            ],
        }
    }

    fn record(sequence: u64, hash_key: u128, size: usize) -> PendingRecord {
        PendingRecord::new(
            Incoming {
                record: UserRecord::new("k", vec![b'x'; size])
                    .with_explicit_hash_key(hash_key.to_string()),
                hash_key,
                reply: None,
                charge: 1,
                stream: 0,
            },
            0,
            sequence,
            Instant::now(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn records_aggregate_per_shard_and_seal_at_linger() {
        let mut router = Router::new(config(false, 1));
        assert!(router.route(record(0, 1, 10)).is_some(), "no map yet");
        router.install(two_shards(), Instant::now());
        for i in 0..3 {
            assert!(router.route(record(i, 5, 10)).is_none());
        }
        assert!(router.route(record(3, u128::MAX, 10)).is_none());
        let mut ready = ReadyQueue::default();
        router.move_to_ready(Instant::now(), &mut ready);
        assert!(ready.is_empty(), "lingering");
        tokio::time::advance(Duration::from_millis(100)).await;
        router.seal_due(Instant::now(), SealScope::Due);
        router.move_to_ready(Instant::now(), &mut ready);
        let sizes: Vec<usize> = ready.iter().map(|o| o.members.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 4);
        assert_eq!(ready.len(), 2, "one aggregate per shard");
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_record_does_not_overtake_the_open_aggregate() {
        let mut router = Router::new(config(true, 1));
        router.install(two_shards(), Instant::now());
        assert!(router.route(record(0, 5, 10)).is_none());
        assert!(router.route(record(1, 5, 5_000)).is_none());
        assert!(router.route(record(2, 5, 10)).is_none());
        router.seal_all();
        let lane = &router.shards[0].lanes[0];
        let order: Vec<u64> = lane
            .queue
            .iter()
            .flat_map(|o| o.members.iter().map(|m| m.sequence))
            .collect();
        assert_eq!(order, [0, 1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_ordered_lane_has_one_record_in_flight_and_waits_for_its_retry() {
        let mut router = Router::new(config(true, 1));
        router.install(two_shards(), Instant::now());
        for i in 0..40 {
            assert!(router.route(record(i, 5, 100)).is_none());
        }
        router.seal_all();
        let mut ready = ReadyQueue::default();
        router.move_to_ready(Instant::now(), &mut ready);
        assert_eq!(ready.len(), 1, "one Kinesis record of the lane at a time");
        let sent = ready.pop_front().unwrap();
        // It failed: back to the front, not before its backoff.
        let lane = router.lane_mut(&sent.target).unwrap();
        lane.in_flight -= 1;
        lane.queue.push_front(sent);
        let retry_at = Instant::now() + Duration::from_secs(1);
        lane.not_before = Some(retry_at);
        router.list_target(&router.target_of(5).unwrap());
        let wake = router.move_to_ready(Instant::now(), &mut ready);
        assert!(ready.is_empty());
        assert_eq!(wake, Some(retry_at));
        tokio::time::advance(Duration::from_secs(1)).await;
        router.move_to_ready(Instant::now(), &mut ready);
        assert_eq!(
            ready.pop_front().unwrap().first_sequence(),
            0,
            "the retry goes first"
        );
    }

    /// A lane whose one Kinesis record in flight answers slower than the linger must not seal
    /// an aggregate per linger behind it: it then sends one small aggregate per round trip
    /// while a new one is sealed every linger, and falls behind for good (the chaos test saw a
    /// key's lag grow by half a second per second after a reshard's pause).
    #[tokio::test(start_paused = true)]
    async fn an_ordered_lane_keeps_aggregating_while_its_record_is_in_flight() {
        let mut router = Router::new(config(true, 1));
        router.install(two_shards(), Instant::now());
        let mut ready = ReadyQueue::default();
        assert!(router.route(record(0, 5, 10)).is_none());
        tokio::time::advance(Duration::from_millis(100)).await;
        router.seal_due(Instant::now(), SealScope::Due);
        router.move_to_ready(Instant::now(), &mut ready);
        let sent = ready.pop_front().expect("the first aggregate goes");
        // Its answer takes 3 lingers; a record arrives in each.
        for i in 1..=3 {
            assert!(router.route(record(i, 5, 10)).is_none());
            tokio::time::advance(Duration::from_millis(100)).await;
            router.seal_due(Instant::now(), SealScope::Due);
            router.move_to_ready(Instant::now(), &mut ready);
        }
        assert!(ready.is_empty(), "nothing passes the record in flight");
        let lane = &router.shards[0].lanes[0];
        assert_eq!(lane.queue.len(), 0, "nothing sealed behind it");
        assert_eq!(lane.members.len(), 3, "still one open aggregate");
        // The answer comes: the open aggregate goes at once, whole.
        let lane = router.lane_mut(&sent.target).expect("lane");
        lane.in_flight -= 1;
        router.list_target(&sent.target);
        router.move_to_ready(Instant::now(), &mut ready);
        let next = ready.pop_front().expect("the open aggregate goes");
        let sequences: Vec<u64> = next.members.iter().map(|m| m.sequence).collect();
        assert_eq!(sequences, [1, 2, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn lanes_split_keys_and_move_side_by_side() {
        let mut router = Router::new(config(true, 8));
        router.install(two_shards(), Instant::now());
        for i in 0..200u64 {
            // Spread over many keys of shard a.
            let key = (i as u128 + 1) * 7_919_000_000_000_000_000_000_000u128 % (u128::MAX / 2);
            assert!(router.route(record(i, key, 10)).is_none());
        }
        router.seal_all();
        let mut ready = ReadyQueue::default();
        router.move_to_ready(Instant::now(), &mut ready);
        assert!(
            ready.len() > 1,
            "several lanes in flight at once: {}",
            ready.len()
        );
        let mut lanes: Vec<usize> = ready.iter().map(|o| o.target.lane).collect();
        lanes.dedup();
        assert_eq!(lanes.len(), ready.len(), "one per lane");
        assert_eq!(lane_of(42, 8), lane_of(42, 8));
    }

    #[tokio::test(start_paused = true)]
    async fn install_hands_back_everything_held() {
        let mut router = Router::new(config(false, 1));
        router.install(two_shards(), Instant::now());
        for i in 0..10 {
            assert!(router.route(record(i, i as u128 * 1_000, 100)).is_none());
        }
        router.seal_due(Instant::now(), SealScope::Due);
        let displaced = router.install(two_shards(), Instant::now());
        assert_eq!(displaced.len(), 10);
        assert_eq!(router.epoch, 2);
    }
}
