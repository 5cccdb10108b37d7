//! The TTL wherever a record waits: open aggregates, lane queues (behind a rate limit or a
//! retry), ready queues, unordered retries, records waiting for a map, misrouted aggregates
//! waiting to be settled. Records in a call in flight wait for its answer (bounded by its
//! timeout), whose settlement checks the TTL before any retry.
//!
//! The sweep runs when the oldest waiting record's TTL runs out, and at most every 1/20 of the
//! TTL (between 1 ms and 1 s), so a record fails at most that long after its TTL while a stream
//! keeps failing.

use std::time::Duration;

use tokio::time::Instant;

use super::lanes::{later, retain_outgoing};
use super::ledger::Resolution;
use super::record::PendingRecord;
use super::task::Pipeline;
use crate::error::FailureReason;

impl Pipeline {
    pub(super) fn sweep(&mut self, now: Instant) {
        let Some(ttl) = self.config.ttl() else {
            self.next_sweep = None;
            return;
        };
        let mut oldest: Option<Instant> = None;
        let mut expired: Vec<(usize, PendingRecord)> = Vec::new();
        for (index, stream) in self.streams.iter_mut().enumerate() {
            let aggregation = stream.router.aggregation();
            let mut gone = Vec::new();
            let mut keep = |member: &PendingRecord| {
                let live = !member.expired(Some(ttl), now);
                if live {
                    oldest = Some(oldest.map_or(member.arrived, |o| o.min(member.arrived)));
                }
                live
            };
            stream.router.retain_records(&mut keep, &mut gone);
            for target in stream
                .ready
                .retain_records(&mut keep, aggregation, &mut gone)
            {
                if let Some(lane) = stream.router.lane_mut(&target) {
                    lane.in_flight = lane.in_flight.saturating_sub(1);
                }
                stream.router.list_target(&target);
            }
            if stream
                .retries
                .iter()
                .any(|r| r.0.outgoing.members.iter().any(|m| !keep(m)))
            {
                let retries: Vec<_> = std::mem::take(&mut stream.retries).into_vec();
                for std::cmp::Reverse(retrying) in retries {
                    let at = retrying.at;
                    for outgoing in
                        retain_outgoing(retrying.outgoing, &mut keep, aggregation, &mut gone)
                    {
                        stream.schedule_retry(at, outgoing);
                    }
                }
            }
            let waiting = std::mem::take(&mut stream.waiting_for_map);
            for member in waiting {
                if keep(&member) {
                    stream.waiting_for_map.push(member);
                } else {
                    gone.push(member);
                }
            }
            for entry in &mut stream.unsettled {
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
            stream
                .unsettled
                .retain(|entry| !entry.outgoing.members.is_empty());
            expired.extend(gone.into_iter().map(|m| (index, m)));
        }
        for (index, member) in expired {
            self.resolve(
                Some(index),
                member,
                Resolution::Failed(FailureReason::Expired),
            );
        }
        let spacing = (ttl / 20).clamp(Duration::from_millis(1), Duration::from_secs(1));
        self.next_sweep = oldest.map(|arrived| later(arrived, ttl).max(now + spacing));
    }
}
