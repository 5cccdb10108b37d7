//! The tick and dispatch: refreshes due, retries released, aggregates sealed, the expiry
//! sweep when due, then batches sent while calls are allowed (streams taken in turn).

use std::time::Duration;

use tokio::time::Instant;

use super::lanes::later;
use super::ledger::Resolution;
use super::record::PendingRecord;
use super::router::SealScope;
use super::task::Pipeline;
use crate::error::FailureReason;

/// Calls kept going while the budget is pressed, batches full or not.
const PRESSED_CALLS: usize = 2;

/// The shortest timeout a call gets when its records' TTL is nearly over (a call timed out
/// before it could be answered only adds a possible duplicate).
const MIN_CALL_TIMEOUT: Duration = Duration::from_millis(50);

impl Pipeline {
    /// Makes sure the expiry sweep runs by the time a record that arrived at `arrived` expires.
    // On the pipeline: the sweep is one for all streams.
    pub(super) fn arm_sweep(&mut self, arrived: Instant) {
        if let Some(ttl) = self.config.ttl() {
            let deadline = later(arrived, ttl);
            if self.next_sweep.is_none_or(|at| deadline < at) {
                self.next_sweep = Some(deadline);
            }
        }
    }

    /// Routes a record into its stream's lanes, or keeps it until a map covers it (see
    /// [`StreamState::route`](super::stream::StreamState::route)).
    // On the pipeline: it arms the expiry sweep.
    pub(super) fn route(&mut self, index: usize, member: PendingRecord, now: Instant) {
        self.arm_sweep(member.arrived);
        self.streams[index].route(member, now);
    }

    /// Routes `members` of stream `index`, in order.
    // On the pipeline: see `route`.
    pub(super) fn route_all(&mut self, index: usize, members: Vec<PendingRecord>, now: Instant) {
        for member in members {
            self.route(index, member, now);
        }
    }

    // On the pipeline: input closed (the task) or a flush waiting (the ledger).
    pub(super) fn draining(&self) -> bool {
        self.input_closed || self.ledger.flushing()
    }

    // On the pipeline: every part, in order.
    pub(super) fn tick(&mut self, now: Instant) {
        self.start_due_refreshes(now);
        // Before sealing: a retry routed again under a newer map joins an open aggregate,
        // which a draining tick must then seal (after it, nothing would wake the pipeline for
        // it until its linger, never with `Duration::MAX`).
        self.release_retries(now);
        let scope = if self.input_closed {
            SealScope::All
        } else {
            self.ledger
                .flush_horizon()
                .map_or(SealScope::Due, SealScope::UpTo)
        };
        for stream in &mut self.streams {
            stream.router.seal_due(now, scope);
        }
        if self.next_sweep.is_some_and(|at| at <= now) {
            self.sweep(now);
        }
        self.dispatch(now);
        self.end_pass();
        self.ledger.notify_flushes();
    }

    /// Unordered retries whose backoff is over go back to the front of their lane (or are
    /// routed again under a newer map).
    // On the pipeline: routing arms the expiry sweep, between the pushes to the lanes (whose
    // order is the order lanes are listed for dispatch).
    pub(super) fn release_retries(&mut self, now: Instant) {
        for index in 0..self.streams.len() {
            let due = self.streams[index].due_retries(now);
            for mut outgoing in due {
                for member in &mut outgoing.members {
                    member.ready_since = now;
                }
                let stream = &mut self.streams[index];
                let target = outgoing.target.clone();
                if let Some(lane) = stream.router.lane_mut(&target) {
                    lane.queue.push_front(outgoing);
                    stream.router.list_target(&target);
                } else {
                    self.route_all(index, outgoing.members, now);
                }
            }
        }
    }

    /// Moves records to the ready queues and sends batches while calls are allowed.
    // On the pipeline: the budget, the calls and congestion decide across streams.
    pub(super) fn dispatch(&mut self, now: Instant) {
        for stream in &mut self.streams {
            stream.move_to_ready(now);
        }
        // At the budget, lingering cannot bring more records (the senders wait for these to
        // resolve): keep a call or two going with whatever is ready instead.
        let pressed = self.budget.pressed();
        if pressed && self.calls.is_empty() && self.streams.iter().all(|s| s.ready.is_empty()) {
            for stream in &mut self.streams {
                stream.send_idle(now);
            }
        }
        // A stream at its share of the budget is pressed on its own: its senders wait.
        let share_limit = self.share_limit();
        if let Some(limit) = share_limit {
            for stream in &mut self.streams {
                if stream.share.pressed(limit)
                    && stream.calls_in_flight == 0
                    && stream.ready.is_empty()
                {
                    stream.send_idle(now);
                }
            }
        }
        let draining = self.draining();
        let count = self.streams.len();
        let mut idle_streams = 0;
        while self.calls.len() < self.congestion.allowed() && count > 0 && idle_streams < count {
            let index = self.next_stream % count;
            self.next_stream = self.next_stream.wrapping_add(1);
            let stream = &mut self.streams[index];
            let stream_pressed = pressed || share_limit.is_some_and(|l| stream.share.pressed(l));
            let starved = stream_pressed && self.calls.len() < PRESSED_CALLS;
            let sendable = !stream.ready.is_empty()
                && !stream.held()
                && (starved
                    || draining
                    || stream
                        .ready
                        .full(self.config.max_batch_records, self.config.max_batch_bytes)
                    || stream.ready.next_due().is_some_and(|due| due <= now));
            if !sendable {
                idle_streams += 1;
                continue;
            }
            idle_streams = 0;
            self.send_batch(index, now);
        }
    }

    /// One stream's most of the budget, while the producer has several streams.
    // On the pipeline: config and registry.
    pub(super) fn share_limit(&self) -> Option<crate::streams::ShareLimit> {
        self.config
            .share_limit()
            .filter(|_| self.registry.len() > 1)
    }

    // On the pipeline: congestion sets the timeout, the calls set spawns the task.
    pub(super) fn send_batch(&mut self, index: usize, now: Instant) {
        let stream = &mut self.streams[index];
        let batch = stream
            .ready
            .take_batch(self.config.max_batch_records, self.config.max_batch_bytes);
        let bytes: usize = batch.iter().map(|o| o.size()).sum();
        for outgoing in &batch {
            if let Some(first) = outgoing.members.first() {
                self.metrics.buffered(
                    &stream.metrics,
                    now.saturating_duration_since(first.ready_since),
                );
            }
        }
        let mut ticket = self.congestion.start(bytes);
        // Never wait for an answer past the TTL of every record in the call: they are expired
        // by then, and their receipts would wait for the timeout instead. Not with order kept:
        // a call given up early may still be carried out, and the next record of its keys,
        // sent once the lane is free, would land before it.
        let ttl = if self.config.ordered {
            None
        } else {
            self.config.ttl()
        };
        let last_deadline = batch
            .iter()
            .flat_map(|o| &o.members)
            .map(|m| m.deadline(ttl))
            .try_fold(now, |latest, deadline| deadline.map(|d| latest.max(d)));
        if let Some(deadline) = last_deadline {
            ticket.timeout = ticket
                .timeout
                .min(deadline.saturating_duration_since(now))
                .max(MIN_CALL_TIMEOUT);
        }
        stream.calls_in_flight += 1;
        let call = super::calls::CallStream {
            id: stream.id.clone(),
            index,
            epoch: stream.router.epoch,
        };
        self.calls.spawn(&self.api, call, batch, ticket, now);
    }

    // On the pipeline: calls, congestion, streams and the sweep.
    pub(super) fn next_wake(&self) -> Option<Instant> {
        let draining = self.draining();
        let room = self.calls.len() < self.congestion.allowed();
        self.streams
            .iter()
            .filter_map(|s| s.next_wake(draining, room))
            .chain(self.next_sweep)
            .min()
    }

    /// The expiry sweep: runs when the oldest waiting record's TTL runs out, and at most every
    /// 1/20 of the TTL (between 1 ms and 1 s), so a record fails at most that long after its
    /// TTL while a stream keeps failing.
    // On the pipeline: the expired records are answered through the ledger.
    pub(super) fn sweep(&mut self, now: Instant) {
        let Some(ttl) = self.config.ttl() else {
            self.next_sweep = None;
            return;
        };
        let mut oldest: Option<Instant> = None;
        let mut expired: Vec<(usize, PendingRecord)> = Vec::new();
        for (index, stream) in self.streams.iter_mut().enumerate() {
            let gone = stream.take_expired(ttl, now, &mut oldest);
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
