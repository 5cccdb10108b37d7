//! One ordering lane of a shard: its open aggregate, the queue of sealed Kinesis records
//! waiting for the shard's rate limit (and, with order kept, for the one in flight), and
//! sealing and trimming what it holds. The [`Router`](super::router::Router) chooses the lane.

use std::collections::VecDeque;
use std::sync::Arc;

use aggregation_proto::{Aggregator, AggregatorConfig};
use tokio::time::Instant;

use super::pack::{finish, pack_in_order};
use super::record::{Outgoing, PendingRecord, Target};
use crate::limiter::ShardLimiter;

/// One ordering lane of a shard.
pub(crate) struct Lane {
    pub(crate) aggregator: Aggregator,
    /// The records in the open aggregate, in order.
    pub(crate) members: Vec<PendingRecord>,
    /// When the open aggregate must be sealed (its first member's arrival plus the linger).
    pub(crate) due: Option<Instant>,
    /// Sealed Kinesis records waiting to be sent, in order.
    pub(crate) queue: VecDeque<Outgoing>,
    /// Kinesis records of this lane handed to dispatch and not yet settled.
    pub(crate) in_flight: usize,
    /// With order kept: the record at the front is a retry that waits until then.
    pub(crate) not_before: Option<Instant>,
    /// In the dispatch list.
    pub(crate) listed: bool,
}

impl Lane {
    pub(crate) fn new(config: AggregatorConfig) -> Self {
        Self {
            aggregator: Aggregator::new(config),
            members: Vec::new(),
            due: None,
            queue: VecDeque::new(),
            in_flight: 0,
            not_before: None,
            listed: false,
        }
    }

    /// Drops the records `keep` refuses (into `expired`) from the open aggregate and the queue,
    /// packing again what they leave for `target` (the aggregate's config is `aggregation`).
    pub(crate) fn retain_records(
        &mut self,
        keep: &mut impl FnMut(&PendingRecord) -> bool,
        aggregation: Option<AggregatorConfig>,
        target: &Target,
        expired: &mut Vec<PendingRecord>,
    ) {
        if self.members.iter().any(|m| !keep(m)) {
            let (kept, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.members)
                .into_iter()
                .partition(|m| keep(m));
            expired.extend(gone);
            self.aggregator = Aggregator::new(*self.aggregator.config());
            // Everything kept fitted together before, so it fits again.
            let mut refill = Vec::new();
            for member in kept {
                if self.aggregator.try_add(&member.record).is_ok() {
                    self.members.push(member);
                } else {
                    refill.push(member);
                }
            }
            if self.members.is_empty() {
                self.due = None;
            }
            for outgoing in pack_in_order(
                refill,
                aggregation,
                target,
                self.due.unwrap_or_else(Instant::now),
            ) {
                self.queue.push_back(outgoing);
            }
        }
        if self
            .queue
            .iter()
            .any(|o| o.members.iter().any(|m| !keep(m)))
        {
            let mut rebuilt = VecDeque::new();
            for outgoing in self.queue.drain(..) {
                rebuilt.extend(retain_outgoing(outgoing, &mut *keep, aggregation, expired));
            }
            self.queue = rebuilt;
        }
    }

    /// Every record the lane holds (open aggregate and queue), leaving it empty.
    pub(crate) fn drain(&mut self, into: &mut Vec<PendingRecord>) {
        into.append(&mut self.members);
        self.aggregator = Aggregator::new(*self.aggregator.config());
        self.due = None;
        for outgoing in self.queue.drain(..) {
            into.extend(outgoing.members);
        }
        self.not_before = None;
    }
}

/// One open shard of the map, with its lanes and rate limiter.
pub(crate) struct ShardLanes {
    pub(crate) id: Arc<str>,
    pub(crate) limiter: ShardLimiter,
    pub(crate) lanes: Vec<Lane>,
}

/// Drops the members `keep` refuses from `outgoing` (into `expired`), packing the rest again if
/// any went.
pub(crate) fn retain_outgoing(
    outgoing: Outgoing,
    keep: &mut impl FnMut(&PendingRecord) -> bool,
    aggregation: Option<AggregatorConfig>,
    expired: &mut Vec<PendingRecord>,
) -> Vec<Outgoing> {
    if outgoing.members.iter().all(&mut *keep) {
        return vec![outgoing];
    }
    let Outgoing {
        members,
        target,
        due,
        ..
    } = outgoing;
    let (kept, gone): (Vec<_>, Vec<_>) = members.into_iter().partition(|m| keep(m));
    expired.extend(gone);
    pack_in_order(kept, aggregation, &target, due)
}

/// Closes a lane's open aggregate and queues it.
pub(crate) fn seal(lane: &mut Lane, target: &Target, spare: &mut Vec<Vec<PendingRecord>>) {
    if lane.members.is_empty() {
        return;
    }
    // The next aggregate likely holds as many: a list of a settled aggregate, or one sized
    // once instead of doubling.
    let capacity = lane.members.len();
    let next = spare.pop().unwrap_or_else(|| Vec::with_capacity(capacity));
    let members = std::mem::replace(&mut lane.members, next);
    let due = lane.due.take().unwrap_or_else(Instant::now);
    let sealed = finish(&mut lane.aggregator, members, target, due);
    lane.queue.extend(sealed);
}

pub(crate) use kinesis_common::later;
