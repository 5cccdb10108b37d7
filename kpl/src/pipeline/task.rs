//! The pipeline task: its state, how it is built, the loop that waits on calls, listings,
//! the inbox and the clock, the `catch_unwind` around each step, and the bookkeeping of every
//! record taken in (admit) and answered (resolve, end of pass).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use aggregation_proto::AggregatorConfig;
use kinesis_common::{Backoff, Jitter};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::calls::Calls;
use super::congestion::Congestion;
use super::ledger::{Ledger, Resolution};
use super::listings::Listings;
use super::record::Incoming;
use super::record::PendingRecord;
use super::router::RouterConfig;
use super::shard_map::ShardMap;
use super::stream::StreamState;
use crate::budget::Budget;
use crate::client::KinesisApi;
use crate::config::ProducerConfig;
use crate::error::{FailureReason, FlushReport};
use crate::health::{Health, panic_text};
use crate::inbox::{InboxReceiver, Taken};
use crate::metrics::Metrics;
use crate::streams::StreamRegistry;

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
    pub(super) config: ProducerConfig,
    pub(super) router_config: RouterConfig,
    pub(super) api: Arc<dyn KinesisApi>,
    pub(super) inbox: InboxReceiver,
    /// The last batch taken from the inbox (its buffer goes back to the senders).
    pub(super) incoming: Vec<Command>,
    pub(super) budget: Arc<Budget>,
    pub(super) ledger: Ledger,
    pub(super) streams: Vec<StreamState>,
    pub(super) registry: Arc<StreamRegistry>,
    pub(super) calls: Calls,
    pub(super) congestion: Congestion,
    pub(super) listings: Listings,
    pub(super) metrics: Arc<Metrics>,
    pub(super) health: Arc<Health>,
    pub(super) shutdown_waiters: Vec<oneshot::Sender<()>>,
    /// A shutdown was asked for, or every handle is gone: everything goes out now.
    pub(super) input_closed: bool,
    /// Every handle is gone: nothing more can arrive. (After a shutdown the inbox is still
    /// read: a flush, or a record that raced the shutdown, is answered for real.)
    pub(super) inbox_done: bool,
    /// When the expiry sweep runs next.
    pub(super) next_sweep: Option<Instant>,
    /// Dispatch starts from a different stream each pass (fairness).
    pub(super) next_stream: usize,
    pub(super) backoff: Backoff,
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
    pub(super) fn guarded(&mut self, step: impl FnOnce(&mut Self)) -> bool {
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
    pub(super) fn abandon_all(&mut self) {
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
    pub(super) fn close(&mut self) {
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

    pub(super) fn take_incoming(&mut self) {
        let now = Instant::now();
        let mut batch = std::mem::take(&mut self.incoming);
        for command in batch.drain(..) {
            self.on_command(command, now);
        }
        self.incoming = batch;
    }

    pub(super) fn on_command(&mut self, command: Command, now: Instant) {
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
    // On the pipeline: the registry and the streams.
    pub(super) fn ensure_stream(&mut self, index: usize, now: Instant) -> bool {
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

    /// Budget, metrics and logs of everything resolved in this pass, at once.
    // On the pipeline: the ledger, the budget and every stream.
    pub(super) fn end_pass(&mut self) {
        self.ledger.release_to(&self.budget);
        let now = Instant::now();
        for stream in &mut self.streams {
            stream.end_pass(&self.metrics, now);
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
    // On the pipeline: the ledger, the stream and the metrics.
    pub(super) fn admit(
        &mut self,
        index: Option<usize>,
        incoming: Incoming,
        now: Instant,
    ) -> PendingRecord {
        match index.and_then(|i| self.streams.get_mut(i)) {
            Some(stream) => stream.admitted(),
            None => self.metrics.received(None, 1),
        }
        self.ledger.admit(incoming, now)
    }

    /// Answers a record of stream `index` (see [`Ledger::resolve`]).
    // On the pipeline: the ledger, the stream (or registry share) and the metrics.
    pub(super) fn resolve(
        &mut self,
        index: Option<usize>,
        member: PendingRecord,
        resolution: Resolution,
    ) {
        let (failed, expired) = match &resolution {
            Resolution::Stored { .. } => (0, 0),
            Resolution::Failed(reason) => (1, u64::from(*reason == FailureReason::Expired)),
        };
        match index.and_then(|i| self.streams.get_mut(i)) {
            Some(stream) => stream.answered(1, member.charge as usize, failed, expired),
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
