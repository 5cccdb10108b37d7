//! The worker loop: starts a shard consumer for every holding the coordinator publishes,
//! stops consumers whose holding ended or was asked for, finishes shards, completes handoffs,
//! restarts consumers whose processor failed, and shuts down gracefully with a bounded wait.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use kinesis_common::{Backoff, ConsumerApi, ErrorChain, Jitter, ListShards, ReadShard};
use tokio::sync::watch;
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::{Instant, MissedTickBehavior, interval, sleep, sleep_until, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use super::Retrieval;
use super::config::{SchedulerError, WorkerConfig};
use super::handle::SchedulerHandle;
use super::startup;
use super::state::ShardPhase;
use crate::cleanup;
use crate::consumer::FanOutPlan;
use crate::consumer::{Ended, ShardContext, Stop, run_consumer};
use crate::coordinator::{CoordinatorConfig, HeldRef, LeaseCoordinatorBuilder};
use crate::lease::store::LeaseStore;
use crate::metrics::READ_AGE_INTERVAL;
use crate::processor::ShardRecordProcessor;
use crate::retrieval::{RecordsBudget, StreamId};
use crate::shard_sync::sync_shards;

/// Everything a worker runs on (the SDK in production, fakes in the unit tests).
pub(crate) struct WorkerParts<A> {
    pub(crate) api: A,
    /// The fan-out calls, when the application reads by enhanced fan-out.
    pub(crate) fan_out: Option<Arc<dyn ConsumerApi>>,
    pub(crate) stream: StreamId,
    pub(crate) store: Arc<dyn LeaseStore>,
    pub(crate) worker_id: String,
    pub(crate) coordinator: CoordinatorConfig,
    pub(crate) config: Arc<WorkerConfig>,
    pub(crate) handle: SchedulerHandle,
    pub(crate) coordinator_tx: watch::Sender<Option<crate::coordinator::SharedState>>,
}

/// Runs a worker until its handle's graceful shutdown.
pub(crate) async fn run_worker<A, F, P>(
    parts: WorkerParts<A>,
    factory: F,
) -> Result<(), SchedulerError>
where
    A: ListShards + ReadShard + Clone,
    F: Fn(&str) -> P + Send + Sync + 'static,
    P: ShardRecordProcessor,
{
    let shutdown = parts.handle.shutdown.clone();
    if !startup::start(
        &parts.api,
        &parts.stream,
        parts.store.as_ref(),
        &parts.config,
        &shutdown,
    )
    .await?
    {
        info!("shut down before the worker started");
        return Ok(());
    }
    let fan_out = match (&parts.config.retrieval, &parts.fan_out) {
        (Retrieval::FanOut { consumer_name }, Some(api)) => {
            let registration = crate::retrieval::register(
                api.as_ref(),
                &parts.stream,
                consumer_name,
                &parts.config.fan_out,
            );
            // Before any lease is taken: a worker that cannot read holds no shard.
            let consumer = tokio::select! {
                () = shutdown.cancelled() => {
                    info!("shut down before the fan-out consumer was registered");
                    return Ok(());
                }
                consumer = registration => consumer?,
            };
            Some(FanOutPlan {
                api: api.clone(),
                consumer_arn: consumer.consumer_arn,
            })
        }
        _ => None,
    };
    let coordinator =
        LeaseCoordinatorBuilder::from_store(parts.store.clone(), parts.worker_id.clone())
            .config(parts.coordinator.clone())
            .build()?;
    if let Err(error) = coordinator.start() {
        // Only possible if started twice or outside a runtime, neither of which happens here.
        error!(%error, "the lease coordinator did not start");
        return Ok(());
    }
    parts
        .coordinator_tx
        .send_replace(Some(coordinator.shared_state()));
    info!(worker = %parts.worker_id, table = %parts.store.table_name(), "worker started");
    let context = ShardContext {
        api: parts.api.clone(),
        fan_out,
        stream: parts.stream.clone(),
        store: parts.store.clone(),
        coordinator: coordinator.clone(),
        config: parts.config.clone(),
        metrics: parts.handle.metrics.clone(),
        status: parts.handle.status.clone(),
        latest_starts: Arc::default(),
        budget: RecordsBudget::new(
            parts.config.batch_memory_budget,
            Some(parts.handle.metrics.batch_memory_gauge()),
        ),
    };
    let background = CancellationToken::new();
    let mut helpers = JoinSet::new();
    helpers
        .spawn(sync_loop(context.clone(), background.clone()).instrument(info_span!("shard_sync")));
    helpers.spawn(
        cleanup::run(context.clone(), background.clone()).instrument(info_span!("lease_cleanup")),
    );
    let mut worker = Worker {
        context,
        factory,
        running: HashMap::new(),
        tasks: JoinSet::new(),
        ids: HashMap::new(),
        restarts: BTreeMap::new(),
        failures: HashMap::new(),
        releases: BTreeMap::new(),
    };
    worker.run(&shutdown).await;
    // Every step from here on is bounded, so the whole shutdown fits in the shutdown timeout
    // (see `SchedulerBuilder::shutdown_timeout`).
    let started = Instant::now();
    let renew = coordinator.config().renew_interval();
    let processors_by = started + parts.config.processors_shutdown_time(renew);
    let done_by = started + parts.config.shutdown_timeout;
    // Shard sync and cleanup have nothing left to do for a worker that leaves.
    background.cancel();
    worker.shut_down(processors_by).await;
    let joined = timeout_at(processors_by, async {
        while helpers.join_next().await.is_some() {}
    })
    .await;
    if joined.is_err() {
        helpers.abort_all();
    }
    let released = timeout_at(done_by, async {
        worker.retry_releases().await;
        coordinator.release_all().await
    })
    .await;
    match released {
        Ok(summary) => info!(?summary, "leases handed back"),
        Err(_) => warn!(
            timeout = ?parts.config.shutdown_timeout,
            "handing the leases back did not finish within the shutdown timeout; the rest expire at other workers after the failover time"
        ),
    }
    if timeout_at(done_by, coordinator.shutdown()).await.is_err() {
        coordinator.abort();
    }
    info!(took = ?started.elapsed(), "worker stopped");
    Ok(())
}

/// A consumer running for one holding.
struct Running {
    stop: watch::Sender<Option<Stop>>,
    holding: HeldRef,
    task: Id,
    stopping: Option<Stop>,
}

/// A consumer to start again after a processor failure.
struct Restart {
    at: Instant,
    epoch: u64,
}

struct Worker<A, F> {
    context: ShardContext<A>,
    factory: F,
    running: HashMap<String, Running>,
    tasks: JoinSet<(String, Ended)>,
    ids: HashMap<Id, String>,
    restarts: BTreeMap<String, Restart>,
    /// Consecutive processor failures per lease, in one holding (epoch).
    failures: HashMap<String, (u64, Backoff)>,
    /// Handed-over leases whose release failed, to retry.
    releases: BTreeMap<String, (HeldRef, Instant)>,
}

impl<A, F, P> Worker<A, F>
where
    A: ListShards + ReadShard + Clone,
    F: Fn(&str) -> P + Send + Sync + 'static,
    P: ShardRecordProcessor,
{
    async fn run(&mut self, shutdown: &CancellationToken) {
        let coordinator = self.context.coordinator.clone();
        let mut held = coordinator.subscribe();
        let mut handoffs = coordinator.handoff_requests();
        let mut read_ages = interval(READ_AGE_INTERVAL);
        read_ages.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let current: BTreeSet<String> = held.borrow_and_update().keys().cloned().collect();
            let asked: BTreeSet<String> = handoffs.borrow_and_update().clone();
            self.reconcile(&current, &asked);
            let next_timer = self
                .restarts
                .values()
                .map(|restart| restart.at)
                .chain(self.releases.values().map(|(_, at)| *at))
                .min();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                changed = held.changed() => if changed.is_err() { break },
                _ = handoffs.changed() => {}
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.ended(joined).await;
                }
                () = sleep_until(next_timer.unwrap_or_else(Instant::now)), if next_timer.is_some() => {
                    self.retry_releases().await;
                }
                _ = read_ages.tick() => self.context.metrics.publish_read_ages(),
            }
        }
    }

    /// Starts a consumer for each holding without one, stops those whose holding ended or was
    /// asked for, forgets the state of shards no longer held.
    fn reconcile(&mut self, current: &BTreeSet<String>, asked: &BTreeSet<String>) {
        let coordinator = self.context.coordinator.clone();
        for (key, running) in &mut self.running {
            let same_holding = coordinator
                .holding(key)
                .is_some_and(|holding| holding.epoch == running.holding.epoch);
            let wanted = if !same_holding {
                Some(Stop::LeaseLost)
            } else if asked.contains(key) {
                Some(Stop::Handoff)
            } else {
                None
            };
            if let Some(stop) = wanted
                && running.stopping.is_none()
            {
                running.stopping = Some(stop);
                let _ = running.stop.send(Some(stop));
            }
        }
        let now = Instant::now();
        for key in current {
            if self.running.contains_key(key) || self.releases.contains_key(key) {
                continue;
            }
            let Some(holding) = coordinator.holding(key) else {
                continue;
            };
            match self.restarts.get(key) {
                Some(restart) if restart.epoch == holding.epoch && restart.at > now => continue,
                // Due: start over in the same holding.
                Some(restart) if restart.epoch == holding.epoch => {
                    self.restarts.remove(key);
                }
                _ => {
                    self.restarts.remove(key);
                    self.context.status.held(key);
                }
            }
            self.spawn(key, holding, asked.contains(key));
        }
        let (shown, _) = self.context.status.snapshot();
        for key in shown.keys() {
            if !current.contains(key) && !self.running.contains_key(key) {
                self.context.status.gone(key);
                self.context.metrics.forget(key);
                self.restarts.remove(key);
                self.failures.remove(key);
            }
        }
    }

    fn spawn(&mut self, key: &str, holding: HeldRef, asked: bool) {
        let (stop, stop_rx) = watch::channel(asked.then_some(Stop::Handoff));
        let processor = (self.factory)(key);
        let context = self.context.clone();
        let task_holding = holding.clone();
        let task_key = key.to_owned();
        let handle = self.tasks.spawn(async move {
            let ended = run_consumer(context, task_holding, processor, stop_rx).await;
            (task_key, ended)
        });
        self.ids.insert(handle.id(), key.to_owned());
        self.running.insert(
            key.to_owned(),
            Running {
                stop,
                holding,
                task: handle.id(),
                stopping: asked.then_some(Stop::Handoff),
            },
        );
    }

    /// A consumer task ended (or panicked).
    async fn ended(&mut self, joined: Result<(Id, (String, Ended)), JoinError>) {
        let (id, outcome) = match joined {
            Ok((id, (_, ended))) => (id, Ok(ended)),
            Err(error) => (error.id(), Err(error)),
        };
        let Some(key) = self.ids.remove(&id) else {
            return;
        };
        let Some(running) = self.running.remove(&key).filter(|r| r.task == id) else {
            return;
        };
        let coordinator = self.context.coordinator.clone();
        match outcome {
            Ok(Ended::ShardEnd) => {
                self.failures.remove(&key);
                coordinator.finish(&running.holding);
                // The children were just created: take them now rather than at the next take
                // interval.
                coordinator.take_now();
            }
            Ok(Ended::LeaseLost | Ended::Shutdown) => {
                self.failures.remove(&key);
            }
            Ok(Ended::HandedOff) => {
                self.failures.remove(&key);
                self.release(&key, running.holding).await;
            }
            Ok(Ended::ProcessorFailed) => self.schedule_restart(&key, &running.holding),
            Err(join_error) => {
                if join_error.is_panic() {
                    let panic = join_error.into_panic();
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "(no message)".to_owned());
                    error!(
                        shard = %key,
                        panic = %message,
                        "the shard's processor panicked; the shard starts over from its last checkpoint after a backoff"
                    );
                    self.context.metrics.processor_failed(&key);
                    self.schedule_restart(&key, &running.holding);
                }
            }
        }
        if coordinator.holding(&key).is_none() {
            self.context.status.gone(&key);
            self.context.metrics.forget(&key);
        }
    }

    fn schedule_restart(&mut self, key: &str, holding: &HeldRef) {
        let config = self.context.config.clone();
        let entry = self.failures.entry(key.to_owned()).or_insert_with(|| {
            (
                holding.epoch,
                Backoff::new(config.retry_min, config.retry_max, Jitter::Stretch),
            )
        });
        if entry.0 != holding.epoch {
            *entry = (
                holding.epoch,
                Backoff::new(config.retry_min, config.retry_max, Jitter::Stretch),
            );
        }
        let wait = entry.1.next_delay();
        let at = Instant::now() + wait;
        warn!(shard = %key, failures = entry.1.attempts(), retry_in = ?wait, "restarting the shard's processing after a backoff");
        self.context
            .status
            .phase(key, ShardPhase::Restarting { at });
        self.restarts.insert(
            key.to_owned(),
            Restart {
                at,
                epoch: holding.epoch,
            },
        );
    }

    /// Completes a handoff: the lease goes to the worker that asked for it.
    async fn release(&mut self, key: &str, holding: HeldRef) {
        match self.context.coordinator.release_holding(&holding).await {
            Ok(()) => {
                self.releases.remove(key);
            }
            Err(error) if error.is_lease_lost() => {
                self.releases.remove(key);
            }
            Err(error) => {
                warn!(shard = %key, error = %ErrorChain(&error), "handing the lease over failed; retrying");
                let at = Instant::now() + self.context.coordinator.config().renew_interval();
                self.releases.insert(key.to_owned(), (holding, at));
            }
        }
    }

    async fn retry_releases(&mut self) {
        let now = Instant::now();
        let due: Vec<(String, HeldRef)> = self
            .releases
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(key, (holding, _))| (key.clone(), holding.clone()))
            .collect();
        for (key, holding) in due {
            self.release(&key, holding).await;
        }
    }

    /// Stops every consumer (`shutdown_requested`) and the taking of leases, waiting until
    /// `deadline` at most; consumers still running then are abandoned (their tasks dropped),
    /// and their leases handed back with the others.
    async fn shut_down(&mut self, deadline: Instant) {
        info!(
            shards = self.running.len(),
            "graceful shutdown: stopping processors"
        );
        for running in self.running.values_mut() {
            let stop = match running.stopping {
                // Already being handed over: finish that.
                Some(Stop::Handoff) => Stop::Handoff,
                _ => Stop::Shutdown,
            };
            running.stopping = Some(stop);
            let _ = running.stop.send(Some(stop));
        }
        // While the processors finish: nothing taken from here on.
        if timeout_at(deadline, self.context.coordinator.stop_taking())
            .await
            .is_err()
        {
            warn!("the lease taker did not stop in time; it stops at its next step");
        }
        while !self.tasks.is_empty() {
            match timeout_at(deadline, self.tasks.join_next_with_id()).await {
                // A handoff completed meanwhile releases its lease here: bounded too (what is
                // not released now is by the release of every lease that follows).
                Ok(Some(joined)) => {
                    let _ = timeout_at(deadline, self.ended(joined)).await;
                }
                Ok(None) => break,
                Err(_) => {
                    warn!(
                        shards = ?self.running.keys().collect::<Vec<_>>(),
                        shutdown_timeout = ?self.context.config.shutdown_timeout,
                        "processors did not stop in their share of the shutdown timeout; abandoning them and handing their leases back: the next holders start at their last checkpoints"
                    );
                    self.tasks.abort_all();
                    while self.tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
    }
}

/// Shard sync on a timer, in its own task so a slow ListShards never holds up the worker.
async fn sync_loop<A: ListShards>(context: ShardContext<A>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            () = sleep(context.config.shard_sync_interval) => {}
        }
        let sync = sync_shards(
            &context.api,
            &context.stream,
            context.store.as_ref(),
            &context.config.initial,
        );
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            result = sync => match result {
                Ok(created) if created > 0 => context.coordinator.take_now(),
                Ok(_) => {}
                Err(error) => warn!(error = %ErrorChain(&error), "shard sync failed; retrying at the next interval"),
            },
        }
    }
}
