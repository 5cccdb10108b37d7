//! The pipeline task: the one owner of every buffered record.
//!
//! ```text
//! Command::Record -> route (shard map) -> per-shard Aggregator -> shard queue
//!   -> per-shard limiter (and, with ordering, one Kinesis record in flight per shard)
//!   -> ready queue -> PutRecords batch (500 records / 5 MiB, linger) -> spawned call
//!   -> results: success resolves receipts; retryable failures wait a jittered backoff
//!      (bounded by each record's TTL) and re-enter routing; the rest fail at once
//! ```
//!
//! Handles talk to it through a short [`inbox`](crate::inbox); backpressure is the [`Budget`]
//! the handles charge before queueing, refilled in bulk as records resolve.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregation_proto::{AddError, Aggregator, AggregatorConfig, KinesisRecord, UserRecord};
use aws_sdk_kinesis::Client;
use backon::{BackoffBuilder, ExponentialBuilder};
use rand::Rng;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, warn};

use crate::budget::{Budget, Released};
use crate::config::ProducerConfig;
use crate::error::RecordFailure;
use crate::inbox::{InboxReceiver, Taken};
use crate::limiter::ShardLimiter;
use crate::metrics::Metrics;
use crate::put_records::{CallOutcome, EntryOutcome, Failure, Retry, put_records};
use crate::receipt::{Attempt, RecordResult, RecordSuccess};
use crate::shard_map::{ShardMap, ShardMapError};
use crate::stream::StreamId;

/// Calls kept going while the budget is pressed, batches full or not.
const PRESSED_CALLS: usize = 2;

/// Commands from the handles.
// Records are nearly every command: boxing them would cost an allocation per record.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Command {
    Record(Incoming),
    Flush(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// A user record the pipeline owns until it resolves.
pub(crate) struct PendingRecord {
    pub(crate) record: UserRecord,
    pub(crate) hash_key: u128,
    /// `None` when sent detached: nobody will read the outcome.
    pub(crate) reply: Option<oneshot::Sender<RecordResult>>,
    /// When the pipeline took the record: its linger and TTL count from here. Stamped once per
    /// burst of commands rather than per `send`, which saves a clock read per record.
    arrived: Instant,
    /// What this record took from the budget, in bytes (and one record).
    charge: u32,
    generation: u64,
    attempts: Vec<Attempt>,
    /// When the record last became ready to send (arrival, or the end of its last attempt).
    ready_since: Instant,
}

/// A record as a handle sends it: checked and charged, not yet stamped by the pipeline.
pub(crate) struct Incoming {
    pub(crate) record: UserRecord,
    pub(crate) hash_key: u128,
    /// `None` when sent detached: nobody will read the outcome.
    pub(crate) reply: Option<oneshot::Sender<RecordResult>>,
    pub(crate) charge: u32,
}

impl PendingRecord {
    fn new(incoming: Incoming, generation: u64, now: Instant) -> Self {
        Self {
            record: incoming.record,
            hash_key: incoming.hash_key,
            reply: incoming.reply,
            arrived: now,
            charge: incoming.charge,
            generation,
            attempts: Vec::new(),
            ready_since: now,
        }
    }

    fn size(&self) -> usize {
        self.record.partition_key.len() + self.record.data.len()
    }
}

/// Records sent detached that failed in one pipeline pass, and why the first did: logged at
/// the end of the pass, as they have no receipt to carry it.
#[derive(Default)]
struct DetachedFailures {
    records: usize,
    first: String,
}

impl DetachedFailures {
    fn add(&mut self, failure: &RecordFailure) {
        if self.records == 0 {
            self.first = failure.to_string();
        }
        self.records += 1;
    }
}

/// A Kinesis record on its way: an aggregate or a single user record.
struct Outgoing {
    record: KinesisRecord,
    members: Vec<PendingRecord>,
    shard_id: Option<Arc<str>>,
    due: Instant,
}

impl Outgoing {
    fn aggregated(&self) -> bool {
        self.members.len() > 1
    }
}

struct ShardState {
    id: Arc<str>,
    aggregator: Aggregator,
    members: Vec<PendingRecord>,
    due: Option<Instant>,
    queue: VecDeque<Outgoing>,
    limiter: ShardLimiter,
    in_flight: usize,
    /// With ordering: nothing leaves this shard before then (a retry is waiting).
    hold_until: Option<Instant>,
    queued_for_dispatch: bool,
}

/// A group of records waiting out a backoff.
struct Retrying {
    when: Instant,
    sequence: u64,
    shard_id: Option<Arc<str>>,
    members: Vec<PendingRecord>,
}

impl PartialEq for Retrying {
    fn eq(&self, other: &Self) -> bool {
        (self.when, self.sequence) == (other.when, other.sequence)
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
        (self.when, self.sequence).cmp(&(other.when, other.sequence))
    }
}

type CallResult = (Vec<Outgoing>, CallOutcome);

/// An aggregate stored on a shard other than the one it was built for.
struct Unsettled {
    shard_id: Arc<str>,
    sequence_number: Arc<str>,
    members: Vec<PendingRecord>,
}

pub(crate) struct Pipeline {
    config: ProducerConfig,
    client: Client,
    stream: StreamId,
    rx: InboxReceiver,
    /// The last batch taken from the inbox (its buffer goes back to the senders).
    incoming: Vec<Command>,
    budget: Arc<Budget>,
    released: Released,
    /// Records taken since the metrics last heard: counted per pass, not per record.
    received: u64,
    detached_failures: DetachedFailures,
    metrics: Arc<Metrics>,
    aggregator_config: AggregatorConfig,
    backoff: ExponentialBuilder,

    map: ShardMap,
    shards: Vec<ShardState>,
    refresh: Option<tokio::task::JoinHandle<Result<ShardMap, ShardMapError>>>,
    next_refresh: Instant,
    refresh_backoff: Duration,
    /// A put landed on a shard other than predicted: the map is stale (a reshard), so nothing
    /// more leaves the shard queues until a refresh re-routes them. Otherwise every aggregate
    /// built for a closed parent would land whole in one child, carrying the other child's
    /// records with it.
    hold_for_refresh: bool,
    unsettled: Vec<Unsettled>,
    /// Records with no known shard yet: sent alone, routed by Kinesis.
    unrouted: VecDeque<Outgoing>,
    dispatch_list: Vec<usize>,
    lingering: BinaryHeap<Reverse<(Instant, usize)>>,
    limited_until: Option<Instant>,

    ready: VecDeque<Outgoing>,
    ready_bytes: usize,
    retries: BinaryHeap<Reverse<Retrying>>,
    retry_sequence: u64,
    in_flight: JoinSet<CallResult>,

    generation: u64,
    /// Unresolved records per flush generation, oldest first (generations only grow, and
    /// there are as many as flushes waiting, so a scan beats a tree).
    outstanding: VecDeque<(u64, usize)>,
    flush_waiters: Vec<(u64, oneshot::Sender<()>)>,
    shutdown_waiters: Vec<oneshot::Sender<()>>,
    input_closed: bool,
}

impl Pipeline {
    pub(crate) fn new(
        config: ProducerConfig,
        client: Client,
        stream: StreamId,
        rx: InboxReceiver,
        budget: Arc<Budget>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let aggregator_config = AggregatorConfig::default()
            .max_size(config.max_aggregate_size)
            .max_count(config.max_aggregate_count);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(config.min_backoff)
            .with_max_delay(config.max_backoff)
            .with_factor(2.0)
            .without_max_times();
        Self {
            config,
            client,
            stream,
            rx,
            incoming: Vec::new(),
            budget,
            released: Released::default(),
            received: 0,
            detached_failures: DetachedFailures::default(),
            metrics,
            aggregator_config,
            backoff,
            map: ShardMap::default(),
            shards: Vec::new(),
            refresh: None,
            next_refresh: Instant::now(),
            refresh_backoff: Duration::from_secs(1),
            hold_for_refresh: false,
            unsettled: Vec::new(),
            unrouted: VecDeque::new(),
            dispatch_list: Vec::new(),
            lingering: BinaryHeap::new(),
            limited_until: None,
            ready: VecDeque::new(),
            ready_bytes: 0,
            retries: BinaryHeap::new(),
            retry_sequence: 0,
            in_flight: JoinSet::new(),
            generation: 0,
            outstanding: VecDeque::new(),
            flush_waiters: Vec::new(),
            shutdown_waiters: Vec::new(),
            input_closed: false,
        }
    }

    /// Installs the first shard map, fetched before the producer is handed out.
    pub(crate) fn with_map(mut self, map: ShardMap) -> Self {
        let now = Instant::now();
        self.install_map(map, now);
        self.next_refresh = now + self.config.shard_map_refresh_interval;
        self
    }

    pub(crate) async fn run(mut self) {
        loop {
            let wake = self.next_wake();
            tokio::select! {
                biased;
                Some(done) = self.in_flight.join_next(), if !self.in_flight.is_empty() => match done {
                    Ok(result) => self.on_call_result(result),
                    Err(error) => warn!(%error, "PutRecords task failed"),
                },
                refreshed = poll_refresh(&mut self.refresh), if self.refresh.is_some() => {
                    self.refresh = None;
                    self.on_refresh(refreshed);
                },
                more = self.rx.recv_batch(&mut self.incoming), if !self.input_closed => {
                    if more {
                        let mut now = Instant::now();
                        self.take_incoming(now);
                        // Take what else arrives in one go: fewer wake-ups under load. A busy
                        // sender gets one scheduler turn to queue more before this task parks
                        // (waking a parked task costs more than a turn).
                        tokio::task::yield_now().await;
                        match self.rx.try_recv_batch(&mut self.incoming) {
                            Taken::Some => {
                                now = Instant::now();
                                self.take_incoming(now);
                            }
                            Taken::Nothing => {}
                            Taken::Finished => self.input_closed = true,
                        }
                    } else {
                        self.input_closed = true;
                    }
                },
                () = sleep_until(wake) => {},
            }
            let now = Instant::now();
            if self.refresh.is_none() && now >= self.next_refresh {
                self.start_refresh(now);
            }
            self.seal_lingering(now);
            self.release_retries(now);
            self.dispatch(now);
            self.released.release_to(&self.budget);
            self.metrics.received(std::mem::take(&mut self.received));
            self.report_detached_failures();
            self.notify_waiters();
            if self.input_closed && self.outstanding.is_empty() {
                break;
            }
        }
        self.refuse_late_commands();
        for waiter in self.shutdown_waiters.drain(..) {
            let _ = waiter.send(());
        }
        debug!("producer pipeline stopped");
    }

    /// Closes the inbox and answers what reached it after the shutdown began (a `send` racing
    /// `shutdown`): each record fails with `ShuttingDown` and is counted, rather than being
    /// dropped unanswered with the inbox. Later sends are refused by the closed inbox.
    fn refuse_late_commands(&mut self) {
        let mut late = std::mem::take(&mut self.incoming);
        self.rx.close(&mut late);
        let now = Instant::now();
        for command in late {
            match command {
                Command::Record(incoming) => {
                    let pending = PendingRecord::new(incoming, self.generation, now);
                    self.received += 1;
                    self.resolve(
                        pending,
                        Err(RecordFailure::ShuttingDown {
                            attempts: Vec::new(),
                        }),
                    );
                }
                Command::Flush(waiter) => {
                    let _ = waiter.send(());
                }
                Command::Shutdown(waiter) => self.shutdown_waiters.push(waiter),
            }
        }
        self.released.release_to(&self.budget);
        self.metrics.received(std::mem::take(&mut self.received));
        self.report_detached_failures();
    }

    /// Handles the commands of a batch from the inbox, keeping the emptied buffer for the next.
    fn take_incoming(&mut self, now: Instant) {
        let mut batch = std::mem::take(&mut self.incoming);
        for command in batch.drain(..) {
            self.on_command(command, now);
        }
        self.incoming = batch;
    }

    fn draining(&self) -> bool {
        self.input_closed || !self.flush_waiters.is_empty() || !self.shutdown_waiters.is_empty()
    }

    fn on_command(&mut self, command: Command, now: Instant) {
        match command {
            Command::Record(incoming) => {
                let pending = PendingRecord::new(incoming, self.generation, now);
                match self.outstanding.back_mut() {
                    Some((generation, count)) if *generation == self.generation => *count += 1,
                    _ => self.outstanding.push_back((self.generation, 1)),
                }
                self.received += 1;
                self.route(pending, now);
            }
            Command::Flush(waiter) => {
                self.flush_waiters.push((self.generation, waiter));
                self.generation += 1;
                self.seal_all();
            }
            Command::Shutdown(waiter) => {
                self.shutdown_waiters.push(waiter);
                self.input_closed = true;
                self.seal_all();
            }
        }
    }

    /// Sends a record toward its predicted shard's aggregator (or alone).
    fn route(&mut self, pending: PendingRecord, now: Instant) {
        let Some(index) = self.map.lookup(pending.hash_key) else {
            self.request_refresh(now);
            let due = pending.arrived + self.config.linger;
            self.unrouted.push_back(alone(pending, None, due));
            return;
        };
        let linger = self.config.linger;
        let aggregation = self.config.aggregation;
        let state = &mut self.shards[index];
        if !aggregation {
            let due = pending.arrived + linger;
            state
                .queue
                .push_back(alone(pending, Some(state.id.clone()), due));
            mark_for_dispatch(state, index, &mut self.dispatch_list);
            return;
        }
        match state.aggregator.try_add(&pending.record) {
            Ok(()) => {}
            Err(AddError::Full) => {
                seal(state);
                mark_for_dispatch(state, index, &mut self.dispatch_list);
                if let Err(error) = state.aggregator.try_add(&pending.record) {
                    // Cannot happen for a record that fit a full aggregate's check; go alone.
                    debug!(%error, "record did not fit an empty aggregate");
                    let due = pending.arrived + linger;
                    state
                        .queue
                        .push_back(alone(pending, Some(state.id.clone()), due));
                    return;
                }
            }
            Err(_) => {
                // Larger than an aggregate may be: it goes alone.
                let due = pending.arrived + linger;
                state
                    .queue
                    .push_back(alone(pending, Some(state.id.clone()), due));
                mark_for_dispatch(state, index, &mut self.dispatch_list);
                return;
            }
        }
        let due = pending.arrived + linger;
        state.members.push(pending);
        if state.due.is_none_or(|d| due < d) {
            state.due = Some(due);
            self.lingering.push(Reverse((due, index)));
        }
    }

    fn seal_lingering(&mut self, now: Instant) {
        while let Some(Reverse((due, index))) = self.lingering.peek().copied() {
            if due > now && !self.draining() {
                break;
            }
            self.lingering.pop();
            if let Some(state) = self.shards.get_mut(index)
                && state.due.is_some_and(|d| d <= due)
            {
                seal(state);
                mark_for_dispatch(state, index, &mut self.dispatch_list);
            }
        }
    }

    fn seal_all(&mut self) {
        for (index, state) in self.shards.iter_mut().enumerate() {
            if !state.members.is_empty() {
                seal(state);
                mark_for_dispatch(state, index, &mut self.dispatch_list);
            }
        }
    }

    /// Moves records from shard queues to the ready queue (rate limits and ordering permitting)
    /// and sends batches while calls are allowed.
    fn dispatch(&mut self, now: Instant) {
        self.limited_until = None;
        if self.hold_for_refresh {
            return;
        }
        self.move_to_ready(now);
        // At the budget, lingering cannot bring more records (the senders wait for these to
        // resolve): keep a call or two going with whatever is ready instead.
        let pressed = self.budget.pressed();
        if pressed && self.in_flight.is_empty() && self.ready.is_empty() {
            // Even partial aggregates, as they could hold the whole budget with many shards;
            // not for a shard whose queue waits for its rate limit, where a partial aggregate
            // would spend a record token on fewer user records.
            for (index, state) in self.shards.iter_mut().enumerate() {
                if !state.members.is_empty() && state.queue.is_empty() {
                    seal(state);
                    mark_for_dispatch(state, index, &mut self.dispatch_list);
                }
            }
            self.move_to_ready(now);
        }
        let starved = pressed && self.in_flight.len() < PRESSED_CALLS;
        while self.in_flight.len() < self.config.max_concurrent_requests && !self.ready.is_empty() {
            let full = self.ready.len() >= self.config.max_batch_records
                || self.ready_bytes >= self.config.max_batch_bytes;
            let due = starved || self.draining() || self.ready.iter().any(|o| o.due <= now);
            if !(full || due) {
                break;
            }
            self.send_batch(now);
        }
    }

    /// Moves what the rate limits (and, with ordering, the one-in-flight rule) allow from the
    /// shard queues, and everything unrouted, to the ready queue.
    fn move_to_ready(&mut self, now: Instant) {
        let ordered = self.config.preserve_shard_order;
        let mut still_waiting = Vec::new();
        for index in std::mem::take(&mut self.dispatch_list) {
            let Some(state) = self.shards.get_mut(index) else {
                continue;
            };
            state.queued_for_dispatch = false;
            while let Some(front) = state.queue.front() {
                if ordered && (state.in_flight > 0 || state.hold_until.is_some_and(|t| t > now)) {
                    break;
                }
                if let Err(wait) = state.limiter.try_take(front.record.size(), now) {
                    let until = now + wait;
                    self.limited_until = Some(self.limited_until.map_or(until, |u| u.min(until)));
                    break;
                }
                let Some(outgoing) = state.queue.pop_front() else {
                    break;
                };
                state.in_flight += 1;
                self.ready_bytes += outgoing.record.size();
                self.ready.push_back(outgoing);
            }
            if !state.queue.is_empty() {
                state.queued_for_dispatch = true;
                still_waiting.push(index);
            }
        }
        self.dispatch_list = still_waiting;
        while let Some(outgoing) = self.unrouted.pop_front() {
            self.ready_bytes += outgoing.record.size();
            self.ready.push_back(outgoing);
        }
    }

    fn send_batch(&mut self, now: Instant) {
        let (count, bytes) = batch_len(
            self.ready.iter().map(|o| o.record.size()),
            self.config.max_batch_records,
            self.config.max_batch_bytes,
        );
        let batch: Vec<Outgoing> = self.ready.drain(..count).collect();
        self.ready_bytes -= bytes;
        for outgoing in &batch {
            if let Some(first) = outgoing.members.first() {
                self.metrics
                    .buffered(now.saturating_duration_since(first.ready_since));
            }
        }
        let client = self.client.clone();
        let stream = self.stream.clone();
        let timeout = self.config.request_timeout;
        let span =
            tracing::debug_span!("put_records", stream = %stream, records = batch.len(), bytes);
        self.in_flight.spawn(
            async move {
                let records: Vec<&KinesisRecord> = batch.iter().map(|o| &o.record).collect();
                let outcome = put_records(&client, &stream, &records, timeout).await;
                if let Some(failure) = &outcome.call_failure {
                    debug!(code = %failure.code, message = %failure.message, "PutRecords failed");
                }
                (batch, outcome)
            }
            .instrument(span),
        );
    }

    fn on_call_result(&mut self, (batch, outcome): CallResult) {
        let now = Instant::now();
        self.metrics.put_call(outcome.duration);
        let mut refresh = false;
        for (outgoing, entry) in batch.into_iter().zip(outcome.entries) {
            let shard_index = outgoing
                .shard_id
                .as_deref()
                .and_then(|id| self.map.position(id));
            if let Some(state) = shard_index.and_then(|i| self.shards.get_mut(i)) {
                state.in_flight = state.in_flight.saturating_sub(1);
                if !state.queue.is_empty() {
                    mark_for_dispatch(
                        state,
                        shard_index.unwrap_or_default(),
                        &mut self.dispatch_list,
                    );
                }
            }
            let attempt = |failure: Option<&Failure>, delay: Duration| Attempt {
                delay,
                duration: outcome.duration,
                error_code: failure.map(|f| f.code.clone()),
                error_message: failure.map(|f| f.message.clone()),
            };
            match entry {
                EntryOutcome::Stored {
                    shard_id,
                    sequence_number,
                } => {
                    let aggregated = outgoing.aggregated();
                    if outgoing.shard_id.as_deref() != Some(&*shard_id) {
                        refresh = true;
                        if aggregated {
                            // Built for a shard that has since been resharded: some of its
                            // records may now belong to a sibling, whose consumers would never
                            // see them here. Settle them once the new map is known.
                            let members = outgoing
                                .members
                                .into_iter()
                                .map(|mut member| {
                                    let delay = outcome
                                        .started
                                        .saturating_duration_since(member.ready_since);
                                    member.attempts.push(attempt(None, delay));
                                    member
                                })
                                .collect();
                            self.unsettled.push(Unsettled {
                                shard_id,
                                sequence_number,
                                members,
                            });
                            continue;
                        }
                    }
                    let user_bytes: usize = outgoing.members.iter().map(PendingRecord::size).sum();
                    self.metrics.kinesis_record_put(
                        outgoing.members.len(),
                        user_bytes,
                        outgoing.record.size(),
                    );
                    for (index, mut member) in outgoing.members.into_iter().enumerate() {
                        if member.reply.as_ref().is_none_or(|reply| reply.is_closed()) {
                            // Fire and forget: nobody reads the answer, so skip building it.
                            self.retire(&member);
                            continue;
                        }
                        let delay = outcome
                            .started
                            .saturating_duration_since(member.ready_since);
                        member.attempts.push(attempt(None, delay));
                        let success = RecordSuccess {
                            shard_id: shard_id.clone(),
                            sequence_number: sequence_number.clone(),
                            sub_sequence_number: aggregated.then_some(index as u64),
                            attempts: std::mem::take(&mut member.attempts),
                        };
                        self.resolve(member, Ok(success));
                    }
                }
                EntryOutcome::Failed(failure) => {
                    self.metrics.error(&failure.code, outgoing.members.len());
                    if failure.retry == Retry::Throttled
                        && let Some(state) = shard_index.and_then(|i| self.shards.get_mut(i))
                    {
                        state.limiter.throttled(now);
                    }
                    let mut retrying = Vec::new();
                    let mut retry_at = now;
                    for mut member in outgoing.members {
                        let delay = outcome
                            .started
                            .saturating_duration_since(member.ready_since);
                        member.attempts.push(attempt(Some(&failure), delay));
                        let attempts = std::mem::take(&mut member.attempts);
                        let verdict = match failure.retry {
                            Retry::Never => Err(RecordFailure::Rejected {
                                code: failure.code.clone(),
                                message: failure.message.clone(),
                                attempts,
                            }),
                            Retry::Throttled if self.config.fail_if_throttled => {
                                Err(RecordFailure::Throttled { attempts })
                            }
                            _ => {
                                let wait = self.backoff_delay(attempts.len());
                                if now + wait >= member.arrived + self.config.record_ttl {
                                    self.metrics.expired();
                                    Err(RecordFailure::Expired { attempts })
                                } else {
                                    retry_at = retry_at.max(now + wait);
                                    member.attempts = attempts;
                                    Ok(())
                                }
                            }
                        };
                        match verdict {
                            Ok(()) => retrying.push(member),
                            Err(failure) => self.resolve(member, Err(failure)),
                        }
                    }
                    if !retrying.is_empty() {
                        self.metrics.retried(retrying.len());
                        self.schedule_retry(retry_at, outgoing.shard_id, retrying);
                    }
                }
            }
        }
        if refresh {
            self.hold_for_refresh = true;
            if self.refresh.is_none() {
                self.next_refresh = now;
            }
        }
    }

    /// Full jitter over a capped exponential envelope: uniform in [0, envelope].
    fn backoff_delay(&self, attempts: usize) -> Duration {
        let envelope = self
            .backoff
            .build()
            .nth(attempts.saturating_sub(1))
            .unwrap_or(self.config.max_backoff);
        envelope.mul_f64(rand::rng().random::<f64>())
    }

    fn schedule_retry(
        &mut self,
        when: Instant,
        shard_id: Option<Arc<str>>,
        members: Vec<PendingRecord>,
    ) {
        if self.config.preserve_shard_order
            && let Some(state) = shard_id
                .as_deref()
                .and_then(|id| self.map.position(id))
                .and_then(|i| self.shards.get_mut(i))
        {
            state.hold_until = Some(state.hold_until.map_or(when, |t| t.max(when)));
        }
        self.retry_sequence += 1;
        self.retries.push(Reverse(Retrying {
            when,
            sequence: self.retry_sequence,
            shard_id,
            members,
        }));
    }

    fn release_retries(&mut self, now: Instant) {
        while self.retries.peek().is_some_and(|Reverse(r)| r.when <= now) {
            let Some(Reverse(retrying)) = self.retries.pop() else {
                break;
            };
            let mut members = retrying.members;
            for member in &mut members {
                member.ready_since = now;
            }
            if self.config.preserve_shard_order
                && let Some(index) = retrying
                    .shard_id
                    .as_deref()
                    .and_then(|id| self.map.position(id))
                && members
                    .iter()
                    .all(|m| self.map.lookup(m.hash_key) == Some(index))
            {
                // Ahead of anything queued after them: re-aggregated, in order, at the front.
                let rebuilt = self.rebuild_in_order(members, &retrying.shard_id, now);
                let state = &mut self.shards[index];
                for outgoing in rebuilt.into_iter().rev() {
                    state.queue.push_front(outgoing);
                }
                state.hold_until = None;
                mark_for_dispatch(state, index, &mut self.dispatch_list);
            } else {
                for member in members {
                    self.route(member, now);
                }
                self.seal_all();
            }
        }
    }

    /// Packs `members` into Kinesis records keeping their order.
    fn rebuild_in_order(
        &self,
        members: Vec<PendingRecord>,
        shard_id: &Option<Arc<str>>,
        now: Instant,
    ) -> Vec<Outgoing> {
        let mut rebuilt = Vec::new();
        let mut aggregator = Aggregator::new(self.aggregator_config);
        let mut group = Vec::new();
        for member in members {
            if self.config.aggregation {
                match aggregator.try_add(&member.record) {
                    Ok(()) => {
                        group.push(member);
                        continue;
                    }
                    Err(AddError::Full) => {
                        rebuilt.extend(finish(
                            &mut aggregator,
                            std::mem::take(&mut group),
                            shard_id,
                            now,
                        ));
                        if aggregator.try_add(&member.record).is_ok() {
                            group.push(member);
                            continue;
                        }
                    }
                    Err(_) => {}
                }
            }
            // Too large to aggregate (or aggregation off): alone, after what came before it.
            rebuilt.extend(finish(
                &mut aggregator,
                std::mem::take(&mut group),
                shard_id,
                now,
            ));
            rebuilt.push(alone(member, shard_id.clone(), now));
        }
        rebuilt.extend(finish(&mut aggregator, group, shard_id, now));
        rebuilt
    }

    fn resolve(&mut self, member: PendingRecord, result: RecordResult) {
        if let Err(failure) = &result {
            self.metrics.failed();
            if member.reply.is_none() {
                self.detached_failures.add(failure);
            }
        }
        self.retire(&member);
        // The receiver may be gone (fire and forget); the charge goes back either way.
        if let Some(reply) = member.reply {
            let _ = reply.send(result);
        }
    }

    /// Detached records have no receipt to carry their failure: say it in the log, once per
    /// pass, besides the metrics.
    fn report_detached_failures(&mut self) {
        let DetachedFailures { records, first } = std::mem::take(&mut self.detached_failures);
        if records > 0 {
            warn!(
                records,
                first = %first,
                "records sent with send_detached failed; Producer::metrics counts them by error code"
            );
        }
    }

    /// Counts a record as resolved: flushes stop waiting for it and its charge goes back.
    fn retire(&mut self, member: &PendingRecord) {
        if let Some(index) = self
            .outstanding
            .iter()
            .position(|(generation, _)| *generation == member.generation)
        {
            let count = &mut self.outstanding[index].1;
            *count -= 1;
            if *count == 0 {
                self.outstanding.remove(index);
            }
        }
        self.released.add(member.charge);
    }

    /// Answers the flushes whose records (all of an older generation) have all resolved.
    fn notify_waiters(&mut self) {
        let oldest = self.outstanding.front().map(|(generation, _)| *generation);
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flush_waiters)
            .into_iter()
            .partition(|(generation, _)| oldest.is_none_or(|o| o > *generation));
        self.flush_waiters = waiting;
        for (_, waiter) in done {
            let _ = waiter.send(());
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let linger = self.lingering.peek().map(|Reverse((t, _))| *t);
        let retry = self.retries.peek().map(|Reverse(r)| r.when);
        let ready = self.ready.iter().map(|o| o.due).min();
        let refresh = self.refresh.is_none().then_some(self.next_refresh);
        [linger, retry, ready, refresh, self.limited_until]
            .into_iter()
            .flatten()
            .min()
    }

    fn request_refresh(&mut self, now: Instant) {
        if self.refresh.is_none() && self.next_refresh > now + Duration::from_millis(100) {
            self.next_refresh = now + Duration::from_millis(100);
        }
    }

    fn start_refresh(&mut self, now: Instant) {
        let client = self.client.clone();
        let stream = self.stream.clone();
        self.next_refresh = now + self.config.shard_map_refresh_interval;
        self.refresh = Some(tokio::spawn(async move {
            ShardMap::fetch(&client, &stream).await
        }));
    }

    fn on_refresh(&mut self, refreshed: Result<ShardMap, ShardMapError>) {
        let now = Instant::now();
        match refreshed {
            Ok(map) => {
                self.refresh_backoff = Duration::from_secs(1);
                self.hold_for_refresh = false;
                let unchanged = map.shards.len() == self.map.shards.len()
                    && map
                        .shards
                        .iter()
                        .zip(&self.map.shards)
                        .all(|(a, b)| a.id == b.id);
                if unchanged {
                    self.settle(now);
                } else {
                    debug!(shards = map.shards.len(), "shard map changed");
                    self.install_map(map, now);
                }
            }
            Err(error) => {
                // Sending with a stale map beats stalling until every record expires.
                self.hold_for_refresh = false;
                warn!(%error, retry_in = ?self.refresh_backoff, "shard map refresh failed");
                self.next_refresh = now + self.refresh_backoff;
                self.refresh_backoff =
                    (self.refresh_backoff.mul_f64(1.5)).min(Duration::from_secs(30));
            }
        }
    }

    /// Settles aggregates stored on an unexpected shard: each record whose hash key that shard
    /// owns is stored; any other is sent again, to the shard that owns it (the stray copy is
    /// dropped by consumers' per-record hash-range filter, so each record is read once).
    fn settle(&mut self, now: Instant) {
        for unsettled in std::mem::take(&mut self.unsettled) {
            let owner = self
                .map
                .position(&unsettled.shard_id)
                .map(|i| self.map.shards[i].range);
            for (index, mut member) in unsettled.members.into_iter().enumerate() {
                if owner.is_some_and(|range| range.contains(member.hash_key)) {
                    let success = RecordSuccess {
                        shard_id: unsettled.shard_id.clone(),
                        sequence_number: unsettled.sequence_number.clone(),
                        sub_sequence_number: Some(index as u64),
                        attempts: std::mem::take(&mut member.attempts),
                    };
                    self.resolve(member, Ok(success));
                } else {
                    if let Some(last) = member.attempts.last_mut() {
                        last.error_code = Some("Misrouted".into());
                        last.error_message = Some(format!(
                            "stored in {} outside its hash range after a reshard; sent again",
                            unsettled.shard_id
                        ));
                    }
                    self.metrics.error("Misrouted", 1);
                    member.ready_since = now;
                    self.route(member, now);
                }
            }
        }
    }

    /// Replaces the shard map. Buffered records are re-routed against the new map (limiters
    /// and in-flight counts survive for shards that still exist).
    fn install_map(&mut self, map: ShardMap, now: Instant) {
        let mut old: Vec<ShardState> = std::mem::take(&mut self.shards);
        let mut displaced = Vec::new();
        // Not yet sent: re-routed too, giving back the in-flight slot each one held.
        for outgoing in self.ready.drain(..) {
            if let Some(state) = old
                .iter_mut()
                .find(|s| Some(&s.id) == outgoing.shard_id.as_ref())
            {
                state.in_flight = state.in_flight.saturating_sub(1);
            }
            displaced.extend(outgoing.members);
        }
        self.ready_bytes = 0;
        for state in &mut old {
            displaced.append(&mut state.members);
            state.aggregator = Aggregator::new(self.aggregator_config);
            for outgoing in state.queue.drain(..) {
                displaced.extend(outgoing.members);
            }
        }
        self.shards = map
            .shards
            .iter()
            .map(|shard| {
                let previous = old
                    .iter()
                    .position(|s| s.id == shard.id)
                    .map(|i| old.swap_remove(i));
                ShardState {
                    id: shard.id.clone(),
                    aggregator: Aggregator::new(self.aggregator_config),
                    members: Vec::new(),
                    due: None,
                    queue: VecDeque::new(),
                    limiter: previous.as_ref().map_or_else(
                        || ShardLimiter::new(self.config.rate_limit_percent, now),
                        |p| p.limiter.clone(),
                    ),
                    in_flight: previous.as_ref().map_or(0, |p| p.in_flight),
                    hold_until: previous.as_ref().and_then(|p| p.hold_until),
                    queued_for_dispatch: false,
                }
            })
            .collect();
        self.map = map;
        self.lingering.clear();
        self.dispatch_list.clear();
        // Strays were sent before anything still buffered: route them first to keep order.
        self.settle(now);
        for member in displaced {
            self.route(member, now);
        }
    }
}

impl Drop for Pipeline {
    /// Stopped (drained, or its runtime shut down): handles waiting for room must not wait
    /// forever for releases that will never come.
    fn drop(&mut self) {
        self.released.release_to(&self.budget);
        self.budget.close();
    }
}

/// How many of the records with these sizes (in queue order) go into the next PutRecords
/// call, and their total size: at most `max_records`, at most `max_bytes`, and at least one.
fn batch_len(
    sizes: impl Iterator<Item = usize>,
    max_records: usize,
    max_bytes: usize,
) -> (usize, usize) {
    let mut count = 0;
    let mut bytes = 0;
    for size in sizes {
        if count == max_records || (count > 0 && bytes + size > max_bytes) {
            break;
        }
        count += 1;
        bytes += size;
    }
    (count, bytes)
}

async fn poll_refresh(
    handle: &mut Option<tokio::task::JoinHandle<Result<ShardMap, ShardMapError>>>,
) -> Result<ShardMap, ShardMapError> {
    match handle {
        Some(handle) => match handle.await {
            Ok(result) => result,
            Err(error) => Err(ShardMapError::task(error)),
        },
        None => std::future::pending().await,
    }
}

async fn sleep_until(when: Option<Instant>) {
    match when {
        Some(when) => tokio::time::sleep_until(when.into()).await,
        None => std::future::pending().await,
    }
}

fn mark_for_dispatch(state: &mut ShardState, index: usize, list: &mut Vec<usize>) {
    if !state.queued_for_dispatch {
        state.queued_for_dispatch = true;
        list.push(index);
    }
}

/// Closes a shard's current aggregate and queues it.
fn seal(state: &mut ShardState) {
    // The next aggregate likely holds as many: size its list once instead of doubling it.
    let capacity = state.members.len();
    let members = std::mem::replace(&mut state.members, Vec::with_capacity(capacity));
    let due = state.due.take().unwrap_or_else(Instant::now);
    let id = Some(state.id.clone());
    let sealed = finish(&mut state.aggregator, members, &id, due);
    state.queue.extend(sealed);
}

/// Finishes `aggregator`, which holds exactly `members`, into an outgoing Kinesis record routed
/// by an explicit hash key inside the predicted shard. Should the two ever disagree, every
/// member goes alone rather than be lost.
fn finish(
    aggregator: &mut Aggregator,
    members: Vec<PendingRecord>,
    shard_id: &Option<Arc<str>>,
    due: Instant,
) -> Vec<Outgoing> {
    let count = aggregator.len();
    match aggregator.finish() {
        Some(mut record) if count == members.len() => {
            if let Some(first) = members.first() {
                record
                    .explicit_hash_key
                    .get_or_insert_with(|| first.hash_key.to_string());
            }
            vec![Outgoing {
                record,
                members,
                shard_id: shard_id.clone(),
                due,
            }]
        }
        _ => members
            .into_iter()
            .map(|m| alone(m, shard_id.clone(), due))
            .collect(),
    }
}

/// A user record sent as its own Kinesis record.
fn alone(pending: PendingRecord, shard_id: Option<Arc<str>>, due: Instant) -> Outgoing {
    let mut record = KinesisRecord::from(pending.record.clone());
    record
        .explicit_hash_key
        .get_or_insert_with(|| pending.hash_key.to_string());
    Outgoing {
        record,
        members: vec![pending],
        shard_id,
        due,
    }
}

#[cfg(test)]
mod tests {
    use super::batch_len;
    use crate::config::{PUT_RECORDS_MAX_BYTES, PUT_RECORDS_MAX_RECORDS};

    #[test]
    fn batches_stop_at_500_records() {
        let sizes = std::iter::repeat_n(100, 1_200);
        assert_eq!(
            batch_len(sizes, PUT_RECORDS_MAX_RECORDS, PUT_RECORDS_MAX_BYTES),
            (500, 50_000)
        );
    }

    #[test]
    fn batches_stop_before_5_mib() {
        let mib = 1024 * 1024;
        // Five 1 MiB records fill 5 MiB exactly; the sixth waits.
        let sizes = std::iter::repeat_n(mib, 8);
        assert_eq!(
            batch_len(sizes, PUT_RECORDS_MAX_RECORDS, PUT_RECORDS_MAX_BYTES),
            (5, 5 * mib)
        );
        let sizes = [51_200; 200].into_iter();
        let (count, bytes) = batch_len(sizes, PUT_RECORDS_MAX_RECORDS, PUT_RECORDS_MAX_BYTES);
        assert_eq!(count, PUT_RECORDS_MAX_BYTES / 51_200);
        assert!(bytes <= PUT_RECORDS_MAX_BYTES);
    }

    #[test]
    fn a_record_over_the_call_limit_goes_alone() {
        let ten_mib = 10 * 1024 * 1024;
        let sizes = [100, ten_mib, 100];
        let first = batch_len(sizes.into_iter(), 500, PUT_RECORDS_MAX_BYTES);
        assert_eq!(first, (1, 100));
        let second = batch_len(sizes[1..].iter().copied(), 500, PUT_RECORDS_MAX_BYTES);
        assert_eq!(second, (1, ten_mib));
    }

    #[test]
    fn a_batch_holds_at_least_one_record() {
        assert_eq!(batch_len([10, 10].into_iter(), 500, 5), (1, 10));
        assert_eq!(batch_len(std::iter::empty(), 500, 5), (0, 0));
    }
}
