//! Carrying out what a call's settlement decided: answering stored and failed records, putting
//! retries back (at the front of their lane when order is kept), slowing throttled shards
//! (once per shard per answer), and holding dispatch when a put shows the map is stale.

use aggregation_proto::KinesisRecord;
use tokio::time::Instant;

use super::calls::InFlight;
use super::congestion::CallEnd;
use super::ledger::Resolution;
use super::record::{Outgoing, PendingRecord};
use super::router::UNMAPPED_SHARD;
use super::settle::{Answer, CallOutcome, Decision, SettleRules, Settlement, settle};
use super::task::Pipeline;
use std::sync::Arc;

impl Pipeline {
    // On the pipeline: congestion, metrics, the backoff and the stream.
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
        stream.call_ended(call.epoch);
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
    // On the pipeline: answers go through the ledger, retries arm the sweep.
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
        stream.answer_seen(&throttled_shards, &elsewhere, sent, now);
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
        self.streams[index].router.calls_ended(&targets);
    }

    /// Every member of `outgoing` is stored in `shard_id` at `sequence_number`.
    // On the pipeline: the ledger answers, the stream counts and recycles.
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
            shard_id,
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
        let charge = outgoing.members.iter().map(|m| m.charge as usize).sum();
        stream.answered(outgoing.members.len(), charge, 0, 0);
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
    // On the pipeline: it arms the sweep and may answer through the ledger.
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

    /// Puts a failed Kinesis record back to be sent at `at` (see
    /// [`StreamState::place_retry`](super::stream::StreamState::place_retry)).
    // On the pipeline: it arms the expiry sweep.
    fn place_retry(
        &mut self,
        index: usize,
        outgoing: Outgoing,
        at: Instant,
        repack: bool,
        now: Instant,
    ) {
        if let Some(arrived) = outgoing.members.iter().map(|m| m.arrived).min() {
            self.arm_sweep(arrived);
        }
        let ordered = self.config.ordered;
        self.streams[index].place_retry(outgoing, at, repack, ordered, now);
    }
}
