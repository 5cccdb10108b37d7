//! The pipeline task: the one owner of every buffered record.
//!
//! ```text
//! inbox -> Ledger::admit -> StreamState (one per stream)
//!   Router: shard map -> shard -> lane -> open aggregate -> lane queue
//!     -> rate limiter (and, with order kept, one Kinesis record in flight per lane)
//!   -> ReadyQueue -> PutRecords batch (500 records / 5 MiB, linger; Congestion bounds the
//!      calls in flight and sets each call's timeout) -> Calls (a task per call)
//!   -> settle (pure): stored | landed elsewhere | retry after backoff | failed
//!   -> Ledger::resolve: the receipt, the flush generation, the budget charge
//! ```
//!
//! Parts with their own state, one job each: [`ledger`] (exactly one answer per record,
//! flushes, charges), [`lanes`] (routing and aggregation per shard and lane), [`ready`]
//! (batches), [`calls`] (PutRecords tasks in flight), [`listings`] (ListShards tasks in
//! flight), [`refresh`] (when a stream's map is listed again: demand levels, backoff),
//! [`congestion`] (calls in flight and their timeouts), and [`settle`] (pure: what an outcome
//! means). [`Pipeline`] is the task that owns them all; its handlers are split by the event they
//! answer: this file (commands from the inbox, the tick, dispatch), [`apply`] (a call's
//! answer), [`maps`] (a listing's answer: installing a map, settling misrouted aggregates) and
//! [`expiry`] (the TTL sweep wherever a record waits). The handles talk to it through a short
//! [`inbox`](crate::inbox); backpressure is the [`Budget`] they charge before queueing.
//!
//! Every step runs under `catch_unwind`: should one ever panic, the pipeline answers every
//! record it holds with the cause, and `send`, `flush` and receipts report it.

mod apply;
mod calls;
mod congestion;
mod expiry;
#[cfg(test)]
mod hardening_tests;
mod lanes;
mod ledger;
mod listings;
mod maps;
mod pack;
mod ready;
mod record;
mod refresh;
mod settle;
mod shard_map;
mod stream;
#[cfg(test)]
mod tests;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use aggregation_proto::AggregatorConfig;
use kinesis_common::{Backoff, Jitter};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{debug, warn};

use self::calls::Calls;
use self::congestion::Congestion;
use self::lanes::{RouterConfig, SealScope};
use self::ledger::{Ledger, Resolution};
use self::listings::Listings;
pub(crate) use self::record::Incoming;
use self::record::PendingRecord;
pub(crate) use self::shard_map::ShardMap;
use self::stream::StreamState;
use crate::budget::Budget;
use crate::client::KinesisApi;
use crate::config::ProducerConfig;
use crate::error::{FailureReason, FlushReport};
use crate::health::{Health, panic_text};
use crate::inbox::{InboxReceiver, Taken};
use crate::metrics::Metrics;
use crate::streams::StreamRegistry;

/// Calls kept going while the budget is pressed, batches full or not.
const PRESSED_CALLS: usize = 2;

/// The shortest timeout a call gets when its records' TTL is nearly over (a call timed out
/// before it could be answered only adds a possible duplicate).
const MIN_CALL_TIMEOUT: Duration = Duration::from_millis(50);

/// Commands from the handles.
// Records are nearly every command: boxing them would cost an allocation per record.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Command {
    Record(Incoming),
    Flush(oneshot::Sender<FlushReport>),
    Shutdown(oneshot::Sender<()>),
    /// A sender waits for room (in the budget or its stream's share): the tick that follows
    /// sends what lingers.
    SendersWaiting,
    /// Makes the pipeline panic, for the tests of its failure path.
    #[cfg(test)]
    Crash,
}

/// What the pipeline is built from.
pub(crate) struct Parts {
    pub(crate) config: ProducerConfig,
    pub(crate) api: Arc<dyn KinesisApi>,
    pub(crate) inbox: InboxReceiver,
    pub(crate) budget: Arc<Budget>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) health: Arc<Health>,
    pub(crate) registry: Arc<StreamRegistry>,
    pub(crate) jitter_seed: Option<u64>,
}

pub(crate) struct Pipeline {
    config: ProducerConfig,
    router_config: RouterConfig,
    api: Arc<dyn KinesisApi>,
    inbox: InboxReceiver,
    /// The last batch taken from the inbox (its buffer goes back to the senders).
    incoming: Vec<Command>,
    budget: Arc<Budget>,
    ledger: Ledger,
    streams: Vec<StreamState>,
    registry: Arc<StreamRegistry>,
    calls: Calls,
    congestion: Congestion,
    listings: Listings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown_waiters: Vec<oneshot::Sender<()>>,
    /// A shutdown was asked for, or every handle is gone: everything goes out now.
    input_closed: bool,
    /// Every handle is gone: nothing more can arrive. (After a shutdown the inbox is still
    /// read: a flush, or a record that raced the shutdown, is answered for real.)
    inbox_done: bool,
    /// When the expiry sweep runs next.
    next_sweep: Option<Instant>,
    /// Dispatch starts from a different stream each pass (fairness).
    next_stream: usize,
    backoff: Backoff,
}

impl Pipeline {
    pub(crate) fn new(parts: Parts) -> Self {
        let Parts {
            config,
            api,
            inbox,
            budget,
            metrics,
            health,
            registry,
            jitter_seed,
        } = parts;
        let router_config = RouterConfig {
            aggregation: config.aggregation.then(|| {
                AggregatorConfig::default()
                    .max_size(config.max_aggregate_size)
                    .max_count(config.max_aggregate_count)
            }),
            lanes: config.lanes(),
            ordered: config.ordered,
            linger: config.linger,
            rate_limit_percent: config.rate_limit_percent,
        };
        let backoff = Backoff::new(config.min_backoff, config.max_backoff, Jitter::Full)
            .with_seed(jitter_seed);
        let congestion = Congestion::new(
            config.max_concurrent_requests,
            config.request_timeout,
            config.adaptive_concurrency,
        );
        Self {
            config,
            router_config,
            api,
            inbox,
            incoming: Vec::new(),
            budget,
            ledger: Ledger::new(),
            streams: Vec::new(),
            registry,
            calls: Calls::default(),
            congestion,
            listings: Listings::default(),
            metrics,
            health,
            shutdown_waiters: Vec::new(),
            input_closed: false,
            inbox_done: false,
            next_sweep: None,
            next_stream: 0,
            backoff,
        }
    }

    /// Knows stream `index` from the start, without a map: its first refresh is due at once.
    pub(crate) fn with_stream(mut self, index: usize) -> Self {
        self.ensure_stream(index, Instant::now());
        self
    }

    /// Installs the first map of stream `index`, fetched before the producer is handed out.
    pub(crate) fn with_map(mut self, index: usize, map: ShardMap) -> Self {
        let now = Instant::now();
        self.ensure_stream(index, now);
        if let Some(stream) = self.streams.get_mut(index) {
            let level = stream.refresh.start();
            stream.refresh.finish(level, true, now);
            stream.router.install(map, now);
        }
        self
    }

    /// Knows stream `index` from the start and sends its records without a map (its listing
    /// was refused at build); it keeps trying to list it, with backoff.
    pub(crate) fn without_map(mut self, index: usize) -> Self {
        let now = Instant::now();
        self.ensure_stream(index, now);
        if let Some(stream) = self.streams.get_mut(index) {
            let level = stream.refresh.start();
            stream.refresh.finish(level, false, now);
        }
        if index < self.streams.len() {
            self.install_unmapped(index, now);
        }
        self
    }

    pub(crate) async fn run(mut self) {
        loop {
            let wake = self.next_wake();
            tokio::select! {
                biased;
                (call, outcome) = self.calls.next(), if !self.calls.is_empty() => {
                    if !self.guarded(|p| p.on_call(call, outcome)) { break; }
                },
                Some(listed) = self.listings.next(), if !self.listings.is_empty() => {
                    if !self.guarded(|p| p.on_refresh(listed)) { break; }
                },
                more = self.inbox.recv_batch(&mut self.incoming), if !self.inbox_done => {
                    if !more {
                        self.inbox_done = true;
                        self.input_closed = true;
                    } else {
                        if !self.guarded(|p| p.take_incoming()) { break; }
                        // Take what else arrives in one go: fewer wake-ups under load. A busy
                        // sender gets one scheduler turn to queue more before this task parks
                        // (waking a parked task costs more than a turn).
                        tokio::task::yield_now().await;
                        match self.inbox.try_recv_batch(&mut self.incoming) {
                            Taken::Some => if !self.guarded(|p| p.take_incoming()) { break; },
                            Taken::Nothing => {}
                            Taken::Finished => {
                                self.inbox_done = true;
                                self.input_closed = true;
                            }
                        }
                    }
                },
                () = sleep_until(wake) => {},
            }
            if !self.guarded(|p| p.tick(Instant::now())) {
                break;
            }
            if self.input_closed
                && self.ledger.outstanding() == 0
                && self.health.failure().is_none()
            {
                break;
            }
        }
        self.close();
        debug!("producer pipeline stopped");
    }

    /// Runs one step; after a panic, fails everything held with the cause and returns false.
    fn guarded(&mut self, step: impl FnOnce(&mut Self)) -> bool {
        match catch_unwind(AssertUnwindSafe(|| step(self))) {
            Ok(()) => self.health.failure().is_none(),
            Err(payload) => {
                let cause = format!("the pipeline panicked: {}", panic_text(&*payload));
                tracing::error!(%cause, "producer pipeline failed; every record it held fails");
                self.health.fail(cause.as_str());
                // Best effort: the state may be half-changed, but answering what can be
                // found beats dropping it.
                let _ = catch_unwind(AssertUnwindSafe(|| self.abandon_all()));
                false
            }
        }
    }

    /// Answers every record held with the failure cause.
    fn abandon_all(&mut self) {
        let cause = self.health.failure().unwrap_or_else(|| "stopped".into());
        let mut held: Vec<(usize, PendingRecord)> = Vec::new();
        for call in self.calls.abandon() {
            for outgoing in call.batch {
                held.extend(outgoing.members.into_iter().map(|m| (call.stream, m)));
            }
        }
        for (index, stream) in self.streams.iter_mut().enumerate() {
            held.extend(stream.drain_all().into_iter().map(|m| (index, m)));
        }
        for (index, member) in held {
            let reason = FailureReason::Stopped {
                cause: cause.clone(),
            };
            self.resolve(Some(index), member, Resolution::Failed(reason));
        }
        self.end_pass();
    }

    /// Closes the inbox and answers what reached it after the shutdown began (a `send` racing
    /// `shutdown`), rather than dropping it unanswered; later sends are refused by the closed
    /// inbox. Then the shutdown waiters.
    fn close(&mut self) {
        let mut late = std::mem::take(&mut self.incoming);
        self.inbox.close(&mut late);
        let now = Instant::now();
        let reason = match self.health.failure() {
            Some(cause) => FailureReason::Stopped { cause },
            None => FailureReason::ShuttingDown,
        };
        for command in late {
            match command {
                Command::Record(incoming) => {
                    let index = Some(incoming.stream);
                    let member = self.admit(index, incoming, now);
                    self.resolve(index, member, Resolution::Failed(reason.clone()));
                }
                // Dropped: the flush sees the pipeline gone (and the failure, if any).
                Command::Flush(_) | Command::SendersWaiting => {}
                Command::Shutdown(waiter) => self.shutdown_waiters.push(waiter),
                #[cfg(test)]
                Command::Crash => {}
            }
        }
        self.end_pass();
        self.ledger.notify_flushes();
        for waiter in self.shutdown_waiters.drain(..) {
            let _ = waiter.send(());
        }
    }

    fn take_incoming(&mut self) {
        let now = Instant::now();
        let mut batch = std::mem::take(&mut self.incoming);
        for command in batch.drain(..) {
            self.on_command(command, now);
        }
        self.incoming = batch;
    }

    fn on_command(&mut self, command: Command, now: Instant) {
        match command {
            Command::Record(incoming) => {
                let index = incoming.stream;
                if !self.ensure_stream(index, now) {
                    // A handle cannot name a stream the registry does not have; answer anyway.
                    let member = self.admit(None, incoming, now);
                    let reason = FailureReason::Stopped {
                        cause: "a record named an unknown stream".into(),
                    };
                    self.resolve(None, member, Resolution::Failed(reason));
                    return;
                }
                if self.streams[index].retired {
                    // A handle for it again: its map is listed afresh (records wait for it).
                    self.streams[index].retired = false;
                }
                let member = self.admit(Some(index), incoming, now);
                self.route(index, member, now);
            }
            Command::Flush(reply) => self.ledger.flush(reply),
            Command::SendersWaiting => {}
            Command::Shutdown(waiter) => {
                self.shutdown_waiters.push(waiter);
                self.input_closed = true;
            }
            #[cfg(test)]
            Command::Crash => panic!("injected crash"),
        }
    }

    /// Makes sure stream `index` has a state; false if the registry does not know it.
    fn ensure_stream(&mut self, index: usize, now: Instant) -> bool {
        while self.streams.len() <= index {
            let Some((id, share)) = self.registry.entry(self.streams.len()) else {
                return false;
            };
            self.streams.push(StreamState::new(
                id,
                share,
                self.router_config,
                self.config.shard_map_refresh_interval,
                now,
            ));
        }
        true
    }

    /// Makes sure the expiry sweep runs by the time a record that arrived at `arrived` expires.
    fn arm_sweep(&mut self, arrived: Instant) {
        if let Some(ttl) = self.config.ttl() {
            let deadline = lanes::later(arrived, ttl);
            if self.next_sweep.is_none_or(|at| deadline < at) {
                self.next_sweep = Some(deadline);
            }
        }
    }

    /// Routes a record into its stream's lanes, or keeps it until a map covers it.
    fn route(&mut self, index: usize, member: PendingRecord, now: Instant) {
        self.arm_sweep(member.arrived);
        let stream = &mut self.streams[index];
        if let Some(member) = stream.router.route(member) {
            if stream.router.has_map() || stream.refresh.is_parked() {
                // The open shards do not cover it: the map is stale (a reshard); or the stream
                // was missing and no refresh is due: look again.
                stream.refresh.demand(now, false);
            }
            stream.waiting_for_map.push(member);
        }
    }

    fn draining(&self) -> bool {
        self.input_closed || self.ledger.flushing()
    }

    fn tick(&mut self, now: Instant) {
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

    /// Budget, metrics and logs of everything resolved in this pass, at once.
    fn end_pass(&mut self) {
        self.ledger.release_to(&self.budget);
        let now = Instant::now();
        for stream in &mut self.streams {
            let pass = std::mem::take(&mut stream.pass);
            stream
                .share
                .release(pass.released_records, pass.released_bytes);
            if stream.should_retire(now) {
                debug!(stream = %stream.id, "no handle writes to the stream any more: its state is dropped");
                stream.retire(now);
            }
            self.metrics.received(Some(&stream.metrics), pass.received);
            self.metrics
                .failed(Some(&stream.metrics), pass.failed, pass.expired);
            self.metrics.pending(&stream.metrics, stream.outstanding);
        }
        let detached = self.ledger.take_detached_failures();
        if detached.records > 0 {
            warn!(
                records = detached.records,
                first = detached.first.as_deref().unwrap_or(""),
                "records sent with send_detached failed; Producer::metrics counts them by error code"
            );
        }
    }

    /// Takes a record of stream `index` in (see [`Ledger::admit`]).
    fn admit(&mut self, index: Option<usize>, incoming: Incoming, now: Instant) -> PendingRecord {
        match index.and_then(|i| self.streams.get_mut(i)) {
            Some(stream) => {
                stream.pass.received += 1;
                stream.outstanding += 1;
            }
            None => self.metrics.received(None, 1),
        }
        self.ledger.admit(incoming, now)
    }

    /// Answers a record of stream `index` (see [`Ledger::resolve`]).
    fn resolve(&mut self, index: Option<usize>, member: PendingRecord, resolution: Resolution) {
        let (failed, expired) = match &resolution {
            Resolution::Stored { .. } => (0, 0),
            Resolution::Failed(reason) => (1, u64::from(*reason == FailureReason::Expired)),
        };
        match index.and_then(|i| self.streams.get_mut(i)) {
            Some(stream) => {
                stream.outstanding = stream.outstanding.saturating_sub(1);
                stream.pass.failed += failed;
                stream.pass.expired += expired;
                stream.pass.released_records += 1;
                stream.pass.released_bytes += member.charge as usize;
            }
            None => {
                self.metrics.failed(None, failed, expired);
                // A stream the pipeline never started (a record racing the shutdown): its
                // handle charged the share all the same.
                if let Some((_, share)) = index.and_then(|i| self.registry.entry(i)) {
                    share.release(1, member.charge as usize);
                }
            }
        }
        self.ledger.resolve(member, resolution);
    }

    /// Unordered retries whose backoff is over go back to the front of their lane (or are
    /// routed again under a newer map).
    fn release_retries(&mut self, now: Instant) {
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
                    for member in outgoing.members {
                        self.route(index, member, now);
                    }
                }
            }
        }
    }

    /// Moves records to the ready queues and sends batches while calls are allowed.
    fn dispatch(&mut self, now: Instant) {
        for stream in &mut self.streams {
            stream.wake = None;
            if !stream.held() {
                stream.wake = stream.router.move_to_ready(now, &mut stream.ready);
            }
        }
        // At the budget, lingering cannot bring more records (the senders wait for these to
        // resolve): keep a call or two going with whatever is ready instead.
        let pressed = self.budget.pressed();
        if pressed && self.calls.is_empty() && self.streams.iter().all(|s| s.ready.is_empty()) {
            for stream in &mut self.streams {
                if !stream.held() {
                    stream.router.seal_idle();
                    stream.wake = stream.router.move_to_ready(now, &mut stream.ready);
                }
            }
        }
        // A stream at its share of the budget is pressed on its own: its senders wait.
        let share_limit = self.share_limit();
        if let Some(limit) = share_limit {
            for stream in &mut self.streams {
                if stream.share.pressed(limit)
                    && stream.calls_in_flight == 0
                    && stream.ready.is_empty()
                    && !stream.held()
                {
                    stream.router.seal_idle();
                    stream.wake = stream.router.move_to_ready(now, &mut stream.ready);
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
    fn share_limit(&self) -> Option<crate::streams::ShareLimit> {
        self.config
            .share_limit()
            .filter(|_| self.registry.len() > 1)
    }

    fn send_batch(&mut self, index: usize, now: Instant) {
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
        let call = calls::CallStream {
            id: stream.id.clone(),
            index,
            epoch: stream.router.epoch,
        };
        self.calls.spawn(&self.api, call, batch, ticket, now);
    }

    fn next_wake(&self) -> Option<Instant> {
        let draining = self.draining();
        let room = self.calls.len() < self.congestion.allowed();
        self.streams
            .iter()
            .filter_map(|s| s.next_wake(draining, room))
            .chain(self.next_sweep)
            .min()
    }
}

impl Drop for Pipeline {
    /// Stopped (drained, failed, or its runtime shut down): handles waiting for room must not
    /// wait forever for releases that will never come.
    fn drop(&mut self) {
        self.ledger.release_to(&self.budget);
        self.budget.close();
        self.registry.wake_all();
    }
}

async fn sleep_until(when: Option<Instant>) {
    match when {
        Some(when) => tokio::time::sleep_until(when).await,
        None => std::future::pending().await,
    }
}
