//! Carrying out what a call's settlement decided: answering stored and failed records, putting
//! retries back (at the front of their lane when order is kept), slowing throttled shards
//! (once per shard per answer), and holding dispatch when a put shows the map is stale.

use aggregation_proto::KinesisRecord;
use tokio::time::Instant;

use super::calls::InFlight;
use super::congestion::CallEnd;
use super::lanes::UNMAPPED_SHARD;
use super::ledger::Resolution;
use super::pack::pack_in_order;
use super::record::{Outgoing, PendingRecord};
use super::settle::{Answer, CallOutcome, Decision, SettleRules, Settlement, settle};
use super::task::Pipeline;
use std::sync::Arc;

impl Pipeline {
    pub(super) fn on_call(&mut self, call: InFlight, outcome: CallOutcome) {
        let now = Instant::now();
        let end = match &outcome.answer {
            Answer::Entries(_) => CallEnd::Answered,
            Answer::TimedOut(_) => CallEnd::TimedOut,
            Answer::Failed(error)
                if matches!(
                    error.code(),
                    "Timeout" | "ResponseError" | "DispatchFailure"
                ) =>
            {
                CallEnd::Lost
            }
            Answer::Failed(_) => CallEnd::Answered,
            Answer::TaskFailed(_) => CallEnd::Lost,
        };
        self.congestion.finish(call.ticket, outcome.duration, end);
        let index = call.stream;
        let Some(stream) = self.streams.get_mut(index) else {
            return;
        };
        stream.calls_in_flight = stream.calls_in_flight.saturating_sub(1);
        if call.epoch < stream.router.epoch {
            stream.barrier = stream.barrier.saturating_sub(1);
        }
        self.metrics.put_call(
            &stream.metrics,
            outcome.duration,
            call.batch.len(),
            end == CallEnd::TimedOut,
            self.congestion.allowed(),
        );
        let _ = call.bytes;
        let rules = SettleRules {
            now,
            ttl: self.config.ttl(),
            fail_if_throttled: self.config.fail_if_throttled,
        };
        let backoff = &mut self.backoff;
        let settlement = settle(call.batch, &outcome, rules, &mut |attempts| {
            backoff.delay(attempts)
        });
        self.apply(index, settlement, outcome.started, now);
    }

    /// Carries out what the answer of a call sent at `sent` decided.
    fn apply(&mut self, index: usize, settlement: Settlement, sent: Instant, now: Instant) {
        let Settlement {
            decisions,
            targets,
            throttled_shards,
            elsewhere,
            errors,
            retried,
            unknown_fate,
            timed_out: _,
        } = settlement;
        let stream = &mut self.streams[index];
        for (code, records) in &errors {
            self.metrics.error(&stream.metrics, code, *records);
        }
        if retried > 0 {
            self.metrics.retried(&stream.metrics, retried, unknown_fate);
        }
        for shard_id in &throttled_shards {
            if let Some(position) = stream.router.map.position(shard_id) {
                stream.router.shards[position].limiter.throttled(sent, now);
            }
        }
        // Without a map every record lands "elsewhere" (Kinesis routes it): nothing is stale.
        if !stream.router.is_unmapped()
            && elsewhere
                .iter()
                .any(|shard_id| stream.router.map.position(shard_id).is_none())
        {
            // Stored on a shard the map does not know: it is stale (a reshard). Nothing more
            // leaves the lanes until a refresh that started after this: every aggregate built
            // for a closed parent would land whole in one child.
            let level = stream.refresh.demand(now, true);
            stream.hold = Some(stream.hold.map_or(level, |held| held.max(level)));
        }
        for decision in decisions {
            match decision {
                Decision::Stored {
                    outgoing,
                    shard_id,
                    sequence_number,
                } => self.stored(index, outgoing, &shard_id, &sequence_number),
                Decision::Landed {
                    outgoing,
                    shard_id,
                    sequence_number,
                } => self.landed(index, outgoing, shard_id, sequence_number, now),
                Decision::Retry {
                    outgoing,
                    at,
                    repack,
                } => self.place_retry(index, outgoing, at, repack, now),
                Decision::Failed { members, reason } => {
                    for member in members {
                        self.resolve(Some(index), member, Resolution::Failed(reason.clone()));
                    }
                }
            }
        }
        // After the retries went back to the front of their lanes: only then may a lane move.
        let router = &mut self.streams[index].router;
        for target in &targets {
            if let Some(lane) = router.lane_mut(target) {
                lane.in_flight = lane.in_flight.saturating_sub(1);
            }
            router.list_target(target);
        }
    }

    /// Every member of `outgoing` is stored in `shard_id` at `sequence_number`.
    pub(super) fn stored(
        &mut self,
        index: usize,
        mut outgoing: Outgoing,
        shard_id: &Arc<str>,
        sequence_number: &Arc<str>,
    ) {
        let stream = &self.streams[index];
        let user_bytes: usize = outgoing.members.iter().map(PendingRecord::size).sum();
        self.metrics.kinesis_record_put(
            &stream.metrics,
            outgoing.members.len(),
            user_bytes,
            KinesisRecord::size(&outgoing.record),
        );
        let without_shard_map = &*outgoing.target.shard_id == UNMAPPED_SHARD;
        if without_shard_map {
            self.metrics
                .sent_without_shard_map(&stream.metrics, outgoing.members.len());
        }
        let stream = &mut self.streams[index];
        stream.outstanding = stream.outstanding.saturating_sub(outgoing.members.len());
        stream.pass.released_records += outgoing.members.len();
        stream.pass.released_bytes += outgoing
            .members
            .iter()
            .map(|m| m.charge as usize)
            .sum::<usize>();
        let mut members = std::mem::take(&mut outgoing.members);
        self.ledger.resolve_stored(
            &mut members,
            shard_id,
            sequence_number,
            outgoing.aggregated,
            without_shard_map,
        );
        stream.router.recycle(members);
    }

    /// An aggregate stored on another shard than predicted: settled now if the map knows that
    /// shard, else once a refresh brings it.
    fn landed(
        &mut self,
        index: usize,
        outgoing: Outgoing,
        shard_id: Arc<str>,
        sequence_number: Arc<str>,
        now: Instant,
    ) {
        if let Some(arrived) = outgoing.members.iter().map(|m| m.arrived).min() {
            self.arm_sweep(arrived);
        }
        let stream = &mut self.streams[index];
        let landed = super::stream::Unsettled::new(outgoing, shard_id, sequence_number);
        if stream.router.map.position(&landed.shard_id).is_some() {
            self.settle_landed(index, landed, now);
        } else {
            stream.unsettled.push(landed);
        }
    }

    /// Puts a failed Kinesis record back to be sent at `at`.
    fn place_retry(
        &mut self,
        index: usize,
        outgoing: Outgoing,
        at: Instant,
        repack: bool,
        now: Instant,
    ) {
        let ordered = self.config.ordered;
        let target = outgoing.target.clone();
        if let Some(arrived) = outgoing.members.iter().map(|m| m.arrived).min() {
            self.arm_sweep(arrived);
        }
        let stream = &mut self.streams[index];
        let aggregation = stream.router.aggregation();
        let outgoings = if repack {
            let due = outgoing.due;
            pack_in_order(outgoing.members, aggregation, &target, due)
        } else {
            vec![outgoing]
        };
        if !ordered {
            for outgoing in outgoings {
                stream.schedule_retry(at, outgoing);
            }
            return;
        }
        if let Some(lane) = stream.router.lane_mut(&target) {
            // Before anything queued after it, and nothing of the lane moves before `at`.
            for outgoing in outgoings.into_iter().rev() {
                lane.queue.push_front(outgoing);
            }
            lane.not_before = Some(lane.not_before.map_or(at, |t| t.max(at)));
            return;
        }
        // Routed under an older map: to the fronts of the lanes that own its keys now.
        let members: Vec<PendingRecord> = outgoings.into_iter().flat_map(|o| o.members).collect();
        let unowned = stream.router.route_first(members, Some(at), now);
        if !unowned.is_empty() {
            stream.refresh.demand(now, false);
            stream.waiting_for_map.extend(unowned);
        }
    }
}
