//! The worker: creates the lease table, keeps leases for every shard, takes its share with the
//! [`LeaseCoordinator`], and runs one [`ShardRecordProcessor`] per held shard.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::consumer::{ConsumerContext, Ended, Stop, run_consumer};
use crate::coordinator::{CoordinatorConfig, LeaseCoordinator};
use crate::lease::{Lease, LeaseError, LeaseTable};
use crate::metrics::{ConsumerMetrics, ConsumerSnapshot};
use crate::processor::ShardRecordProcessor;
use crate::retrieval::{PollingConfig, StreamId};
use crate::shard_sync::{ShardSyncError, sync_shards};

/// Where a new application starts reading shards that have no checkpoint yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialPosition {
    /// After the newest record (the reference's default).
    Latest,
    /// At the oldest record still in the stream.
    TrimHorizon,
    /// At the first record at or after this time.
    AtTimestamp(SystemTime),
}

/// Why the scheduler could not start or had to stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// Neither an SDK config nor both clients were given.
    #[error("no AWS configuration: call sdk_config() or clients() on the builder")]
    MissingClients,
    /// A timing setting cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The lease table could not be created or read.
    #[error("lease table: {0}")]
    Lease(#[from] LeaseError),
    /// The stream's shards could not be listed: check the stream name, region and credentials.
    #[error("shard sync: {0}")]
    ShardSync(#[from] ShardSyncError),
}

/// Configures a [`Scheduler`]. Timings default to the Java KCL's.
#[must_use]
pub struct SchedulerBuilder<F> {
    application_name: String,
    stream: StreamId,
    factory: F,
    kinesis: Option<aws_sdk_kinesis::Client>,
    dynamodb: Option<aws_sdk_dynamodb::Client>,
    worker_id: Option<String>,
    initial: InitialPosition,
    failover_time: Duration,
    renew_interval: Option<Duration>,
    take_interval: Option<Duration>,
    polling: PollingConfig,
    shard_sync_interval: Duration,
    parent_poll_interval: Duration,
}

impl<F> std::fmt::Debug for SchedulerBuilder<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerBuilder")
            .field("application_name", &self.application_name)
            .field("stream", &self.stream)
            .field("worker_id", &self.worker_id)
            .field("initial", &self.initial)
            .finish_non_exhaustive()
    }
}

impl<F, P> SchedulerBuilder<F>
where
    F: Fn(&str) -> P + Send + Sync + 'static,
    P: ShardRecordProcessor,
{
    /// Builds the Kinesis and DynamoDB clients from an SDK config.
    pub fn sdk_config(mut self, config: &aws_config::SdkConfig) -> Self {
        self.kinesis = Some(aws_sdk_kinesis::Client::new(config));
        self.dynamodb = Some(aws_sdk_dynamodb::Client::new(config));
        self
    }

    /// Uses these clients.
    pub fn clients(
        mut self,
        kinesis: aws_sdk_kinesis::Client,
        dynamodb: aws_sdk_dynamodb::Client,
    ) -> Self {
        self.kinesis = Some(kinesis);
        self.dynamodb = Some(dynamodb);
        self
    }

    /// This worker's id, unique in the fleet (default: host name plus a random suffix).
    pub fn worker_id(mut self, worker_id: impl Into<String>) -> Self {
        self.worker_id = Some(worker_id.into());
        self
    }

    /// Where shards without a checkpoint start (default LATEST).
    pub fn initial_position(mut self, initial: InitialPosition) -> Self {
        self.initial = initial;
        self
    }

    /// How long a lease's counter must stand still before another worker takes it (default 10 s).
    pub fn failover_time(mut self, failover_time: Duration) -> Self {
        self.failover_time = failover_time;
        self
    }

    /// How often held leases are renewed (default failover time / 3).
    pub fn renew_interval(mut self, interval: Duration) -> Self {
        self.renew_interval = Some(interval);
        self
    }

    /// How often this worker looks for leases to take (default 2 × (failover time + 25 ms)).
    pub fn take_interval(mut self, interval: Duration) -> Self {
        self.take_interval = Some(interval);
        self
    }

    /// GetRecords settings: max records per call (10,000), idle time between reads when caught
    /// up (1,500 ms), backoff.
    pub fn polling(mut self, polling: PollingConfig) -> Self {
        self.polling = polling;
        self
    }

    /// How often new shards are looked for (default 60 s).
    pub fn shard_sync_interval(mut self, interval: Duration) -> Self {
        self.shard_sync_interval = interval;
        self
    }

    /// How often a child shard checks whether its parents are finished (default 1 s).
    pub fn parent_poll_interval(mut self, interval: Duration) -> Self {
        self.parent_poll_interval = interval;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`SchedulerError::MissingClients`] or [`SchedulerError::Config`].
    pub fn build(self) -> Result<Scheduler<F>, SchedulerError> {
        let (Some(kinesis), Some(dynamodb)) = (self.kinesis, self.dynamodb) else {
            return Err(SchedulerError::MissingClients);
        };
        let mut coordinator = CoordinatorConfig::builder().failover_time(self.failover_time);
        if let Some(renew) = self.renew_interval {
            coordinator = coordinator.renew_interval(renew);
        }
        if let Some(take) = self.take_interval {
            coordinator = coordinator.take_interval(take);
        }
        let coordinator = coordinator
            .build()
            .map_err(|e| SchedulerError::Config(e.to_string()))?;
        let worker_id = self.worker_id.unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
            format!("{host}-{}", uuid::Uuid::new_v4().simple())
        });
        let metrics = Arc::new(ConsumerMetrics::default());
        let (done_tx, done_rx) = watch::channel(false);
        let shutdown = CancellationToken::new();
        Ok(Scheduler {
            table: LeaseTable::new(dynamodb, self.application_name),
            stream: self.stream,
            factory: Arc::new(self.factory),
            kinesis,
            worker_id,
            initial: self.initial,
            coordinator,
            polling: self.polling,
            shard_sync_interval: self.shard_sync_interval,
            parent_poll_interval: self.parent_poll_interval,
            handle: SchedulerHandle {
                shutdown,
                done: done_rx,
                metrics,
                held: Arc::new(std::sync::Mutex::new(0)),
            },
            done: done_tx,
        })
    }
}

/// One worker of a consumer application. Several workers with the same application name share
/// the stream's shards through the lease table named after the application.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use kcl::{Checkpointer, InitialPosition, ProcessRecordsInput, Scheduler, ShardRecordProcessor};
///
/// struct Counter(usize);
/// impl ShardRecordProcessor for Counter {
///     async fn process_records(&mut self, input: ProcessRecordsInput, checkpointer: &mut Checkpointer) {
///         self.0 += input.records.len();
///         let _ = checkpointer.checkpoint().await;
///     }
///     async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
///         let _ = checkpointer.checkpoint_shard_end().await;
///     }
/// }
///
/// let config = aws_config::load_from_env().await;
/// let scheduler = Scheduler::builder("my-app", "my-stream", |_shard: &str| Counter(0))
///     .sdk_config(&config)
///     .initial_position(InitialPosition::TrimHorizon)
///     .build()?;
/// let handle = scheduler.handle();
/// tokio::spawn(async move { tokio::signal::ctrl_c().await.ok(); handle.graceful_shutdown().await });
/// scheduler.run().await?;
/// # Ok(())
/// # }
/// ```
pub struct Scheduler<F> {
    table: LeaseTable,
    stream: StreamId,
    factory: Arc<F>,
    kinesis: aws_sdk_kinesis::Client,
    worker_id: String,
    initial: InitialPosition,
    coordinator: CoordinatorConfig,
    polling: PollingConfig,
    shard_sync_interval: Duration,
    parent_poll_interval: Duration,
    handle: SchedulerHandle,
    done: watch::Sender<bool>,
}

impl<F> std::fmt::Debug for Scheduler<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("table", &self.table.table_name())
            .field("stream", &self.stream)
            .field("worker_id", &self.worker_id)
            .finish_non_exhaustive()
    }
}

/// Controls a running [`Scheduler`] from elsewhere. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SchedulerHandle {
    shutdown: CancellationToken,
    done: watch::Receiver<bool>,
    metrics: Arc<ConsumerMetrics>,
    held: Arc<std::sync::Mutex<usize>>,
}

impl SchedulerHandle {
    /// Asks every processor to finish (`shutdown_requested`, where it may checkpoint), hands
    /// the leases back so other workers take them in their next cycle, and waits until
    /// [`Scheduler::run`] has returned.
    ///
    /// # Cancel safety
    /// The shutdown proceeds whether or not this future is polled to the end.
    pub async fn graceful_shutdown(&self) {
        self.shutdown.cancel();
        let mut done = self.done.clone();
        let _ = done.wait_for(|finished| *finished).await;
    }

    /// The worker's counters now.
    pub fn metrics(&self) -> ConsumerSnapshot {
        let held = self.held.lock().map(|h| *h).unwrap_or(0);
        self.metrics.snapshot(held)
    }
}

struct Running {
    stop: watch::Sender<Option<Stop>>,
    lease: Lease,
}

impl<F, P> Scheduler<F>
where
    F: Fn(&str) -> P + Send + Sync + 'static,
    P: ShardRecordProcessor,
{
    /// A builder for worker `application_name` (also the lease table's name) over `stream` (a
    /// name, or an ARN starting with `arn:`), creating one processor per shard with `factory`.
    pub fn builder(
        application_name: impl Into<String>,
        stream: impl Into<StreamId>,
        factory: F,
    ) -> SchedulerBuilder<F> {
        let failover_time = Duration::from_secs(10);
        SchedulerBuilder {
            application_name: application_name.into(),
            stream: stream.into(),
            factory,
            kinesis: None,
            dynamodb: None,
            worker_id: None,
            initial: InitialPosition::Latest,
            failover_time,
            renew_interval: None,
            take_interval: None,
            polling: PollingConfig::default(),
            shard_sync_interval: Duration::from_secs(60),
            parent_poll_interval: Duration::from_secs(1),
        }
    }

    /// A handle for shutting this worker down and reading its counters.
    pub fn handle(&self) -> SchedulerHandle {
        self.handle.clone()
    }

    /// This worker's id.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Runs the worker until [`SchedulerHandle::graceful_shutdown`].
    ///
    /// # Errors
    /// [`SchedulerError`] when the lease table or the stream cannot be reached at start.
    pub async fn run(self) -> Result<(), SchedulerError> {
        let result = self.run_inner().await;
        let _ = self.done.send(true);
        result
    }

    async fn run_inner(&self) -> Result<(), SchedulerError> {
        self.table.create_if_missing().await?;
        sync_shards(&self.kinesis, &self.stream, &self.table, &self.initial).await?;
        let coordinator = LeaseCoordinator::new(
            self.table.clone(),
            self.worker_id.clone(),
            self.coordinator.clone(),
        )
        .map_err(|e| SchedulerError::Config(e.to_string()))?;
        coordinator
            .start()
            .map_err(|e| SchedulerError::Config(e.to_string()))?;
        info!(worker = %self.worker_id, table = %self.table.table_name(), "worker started");
        let context = ConsumerContext {
            kinesis: self.kinesis.clone(),
            stream: self.stream.clone(),
            table: self.table.clone(),
            coordinator: coordinator.clone(),
            polling: self.polling.clone(),
            initial: self.initial,
            parent_poll_interval: self.parent_poll_interval,
            metrics: self.handle.metrics.clone(),
        };
        let mut held = coordinator.subscribe();
        let mut running: HashMap<String, Running> = HashMap::new();
        let mut finished: HashSet<String> = HashSet::new();
        let mut tasks: JoinSet<(String, Ended)> = JoinSet::new();
        let mut sync = tokio::time::interval(self.shard_sync_interval);
        sync.tick().await;
        loop {
            let current = held.borrow_and_update().clone();
            if let Ok(mut count) = self.handle.held.lock() {
                *count = current.len();
            }
            self.reconcile(&current, &context, &mut running, &finished, &mut tasks);
            tokio::select! {
                () = self.handle.shutdown.cancelled() => break,
                changed = held.changed() => if changed.is_err() { break },
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok((key, ended)) = done {
                        running.remove(&key);
                        self.handle.metrics.forget(&key);
                        match ended {
                            Ended::ShardEnd | Ended::AlreadyFinished => { finished.insert(key); }
                            Ended::LeaseLost => {}
                            Ended::Shutdown => {
                                // It stopped on its own (a read error): let another worker try.
                                if coordinator.held(&key).is_some() && let Err(error) = coordinator.release(&key).await {
                                    warn!(%error, %key, "releasing a failed shard's lease failed");
                                }
                            }
                        }
                    }
                }
                _ = sync.tick() => {
                    if let Err(error) = sync_shards(&self.kinesis, &self.stream, &self.table, &self.initial).await {
                        warn!(%error, "shard sync failed; retrying at the next interval");
                    }
                }
            }
        }
        info!(
            shards = running.len(),
            "graceful shutdown: stopping processors"
        );
        for consumer in running.values() {
            let _ = consumer.stop.send(Some(Stop::Shutdown));
        }
        while tasks.join_next().await.is_some() {}
        let summary = coordinator.release_all().await;
        coordinator.shutdown().await;
        info!(?summary, "worker stopped");
        Ok(())
    }

    /// Starts a processor for each held shard without one, and stops those whose lease went.
    fn reconcile(
        &self,
        current: &BTreeMap<String, Lease>,
        context: &ConsumerContext,
        running: &mut HashMap<String, Running>,
        finished: &HashSet<String>,
        tasks: &mut JoinSet<(String, Ended)>,
    ) {
        for (key, consumer) in running.iter() {
            // Gone, or lost and taken back in between (a new acquisition): stop this one.
            if current.get(key) != Some(&consumer.lease) {
                let _ = consumer.stop.send(Some(Stop::LeaseLost));
            }
        }
        for (key, lease) in current {
            if running.contains_key(key) || finished.contains(key) {
                continue;
            }
            let (stop, stop_rx) = watch::channel(None);
            let processor = (self.factory)(key);
            let context = context.clone();
            let lease_for_task = lease.clone();
            let key_for_task = key.clone();
            tasks.spawn(async move {
                let ended = run_consumer(context, lease_for_task, processor, stop_rx).await;
                (key_for_task, ended)
            });
            running.insert(
                key.clone(),
                Running {
                    stop,
                    lease: lease.clone(),
                },
            );
        }
    }
}
