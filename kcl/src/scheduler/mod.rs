//! The worker: creates the lease table, keeps leases for every shard, takes its share with the
//! [`LeaseCoordinator`](crate::LeaseCoordinator), and runs one [`ShardRecordProcessor`] per
//! held shard.
//!
//! - `config.rs`: the validated settings, [`SchedulerError`];
//! - `handle.rs`: [`SchedulerHandle`] (shutdown, counters, [`WorkerState`]);
//! - `state.rs`: what each held shard is doing;
//! - `startup.rs`: table creation and the first shard sync, retried;
//! - `worker.rs`: the loop that starts, stops and restarts shard consumers.

mod config;
mod handle;
mod startup;
mod state;
#[cfg(test)]
mod tests;
mod worker;

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use kinesis_common::{ConsumerApi, SdkKinesis};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use config::{Retrieval, SchedulerError};
pub use handle::SchedulerHandle;
pub use state::{ShardPhase, ShardState, WorkerState};

pub(crate) use config::WorkerConfig;
pub(crate) use state::StatusBoard;
pub(crate) use worker::{WorkerParts, run_worker};

use crate::InitialPosition;
use crate::coordinator::{CoordinatorConfig, CoordinatorConfigBuilder};
use crate::lease::{LeaseTable, TableOptions};
use crate::metrics::ConsumerMetrics;
use crate::processor::ShardRecordProcessor;
use crate::retrieval::{FanOutConfig, PollingConfig, StreamId};

/// Configures a [`Scheduler`]. Timings default to the Java KCL's.
#[must_use]
pub struct SchedulerBuilder<F> {
    application_name: String,
    table_name: Option<String>,
    table_options: TableOptions,
    stream: StreamId,
    factory: F,
    kinesis: Option<aws_sdk_kinesis::Client>,
    dynamodb: Option<aws_sdk_dynamodb::Client>,
    worker_id: Option<String>,
    /// The lease settings, validated by the coordinator's own builder.
    coordinator: CoordinatorConfigBuilder,
    worker: WorkerConfig,
}

impl<F> std::fmt::Debug for SchedulerBuilder<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerBuilder")
            .field("application_name", &self.application_name)
            .field("table_name", &self.table_name)
            .field("stream", &self.stream)
            .field("worker_id", &self.worker_id)
            .field("initial", &self.worker.initial)
            .finish_non_exhaustive()
    }
}

impl<F, P> SchedulerBuilder<F>
where
    F: Fn(&str) -> P + Send + Sync + 'static,
    P: ShardRecordProcessor,
{
    /// Builds the Kinesis and DynamoDB clients from an SDK config.
    ///
    /// The config must carry a behavior version, as
    /// `aws_config::load_defaults(BehaviorVersion::latest())` sets: this crate does not choose one
    /// for its users, and the SDK's clients panic without one.
    pub fn sdk_config(mut self, config: &aws_types::SdkConfig) -> Self {
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

    /// The lease table's name (default: the application name, as the Java KCL).
    pub fn table_name(mut self, table_name: impl Into<String>) -> Self {
        self.table_name = Some(table_name.into());
        self
    }

    /// How the lease table is created if it does not exist (billing mode, tags, deletion
    /// protection, point-in-time recovery; default on-demand, nothing else).
    pub fn table_options(mut self, options: TableOptions) -> Self {
        self.table_options = options;
        self
    }

    /// Where shards without a checkpoint start (default LATEST).
    pub fn initial_position(mut self, initial: InitialPosition) -> Self {
        self.worker.initial = initial;
        self
    }

    /// How long a lease's counter must stand still before another worker takes it (default
    /// 10 s). This worker stops delivering a shard whose lease it could not renew a tenth of
    /// it (at most 1 s) before that.
    pub fn failover_time(mut self, failover_time: Duration) -> Self {
        self.coordinator = self.coordinator.failover_time(failover_time);
        self
    }

    /// How often held leases are renewed (default failover time / 3).
    pub fn renew_interval(mut self, interval: Duration) -> Self {
        self.coordinator = self.coordinator.renew_interval(interval);
        self
    }

    /// How often this worker looks for leases to take (default 2 × (failover time + 25 ms)).
    pub fn take_interval(mut self, interval: Duration) -> Self {
        self.coordinator = self.coordinator.take_interval(interval);
        self
    }

    /// The most leases this worker holds (default: no limit; the Java KCL's
    /// `maxLeasesForWorker`).
    pub fn max_leases_for_worker(mut self, max: NonZeroUsize) -> Self {
        self.coordinator = self.coordinator.max_leases_for_worker(max);
        self
    }

    /// Whether leases taken from live workers to balance the fleet are handed over
    /// gracefully (default on; see [`CoordinatorConfig::graceful_handoff`]).
    pub fn graceful_handoff(mut self, enabled: bool) -> Self {
        self.coordinator = self.coordinator.graceful_handoff(enabled);
        self
    }

    /// How long to wait for a holder to let go of a lease this worker asked for (default
    /// 30 s; see [`CoordinatorConfig::handoff_timeout`]).
    pub fn handoff_timeout(mut self, timeout: Duration) -> Self {
        self.coordinator = self.coordinator.handoff_timeout(timeout);
        self
    }

    /// GetRecords settings: max records per call (10,000), idle time between reads when caught
    /// up (1,500 ms), how close to the tip counts as caught up (1 s), backoff.
    pub fn polling(mut self, polling: PollingConfig) -> Self {
        self.worker.polling = polling;
        self
    }

    /// How the shards are read: [`Retrieval::Polling`] (the default) or
    /// [`Retrieval::FanOut`]. Every worker of an application should use the same.
    pub fn retrieval(mut self, retrieval: Retrieval) -> Self {
        self.worker.retrieval = retrieval;
        self
    }

    /// Reads through the enhanced fan-out consumer `consumer_name` (registered at start if
    /// missing, and waited on until ACTIVE): the same as
    /// `.retrieval(Retrieval::FanOut { consumer_name })`.
    pub fn fan_out(self, consumer_name: impl Into<String>) -> Self {
        self.retrieval(Retrieval::FanOut {
            consumer_name: consumer_name.into(),
        })
    }

    /// Enhanced fan-out settings: read timeout (35 s), subscription backoff (500 ms to 10 s),
    /// registration wait (5 minutes); used only with [`Retrieval::FanOut`].
    pub fn fan_out_config(mut self, config: FanOutConfig) -> Self {
        self.worker.fan_out = config;
        self
    }

    /// How often new shards are looked for (default 60 s).
    pub fn shard_sync_interval(mut self, interval: Duration) -> Self {
        self.worker.shard_sync_interval = interval;
        self
    }

    /// How often a child shard checks whether its parents are finished (default 1 s).
    pub fn parent_poll_interval(mut self, interval: Duration) -> Self {
        self.worker.parent_poll_interval = interval;
        self
    }

    /// How often finished leases are checked for deletion (default 60 s; the Java KCL's
    /// `leaseCleanupIntervalMillis`). A finished lease is deleted once every child has a lease
    /// whose checkpoint moved past TRIM_HORIZON and its own parents' leases are gone.
    pub fn cleanup_interval(mut self, interval: Duration) -> Self {
        self.worker.cleanup_interval = interval;
        self
    }

    /// How long a whole graceful shutdown ([`SchedulerHandle::graceful_shutdown`]) may take,
    /// leases handed back included (default 25 s: under the 30 s termination grace of
    /// Kubernetes' `terminationGracePeriodSeconds` and ECS' `stopTimeout`, with time left for
    /// the rest of the process to exit).
    ///
    /// The shutdown runs in two bounded parts:
    ///
    /// 1. **Processors**: each gets `shutdown_requested` (where it may checkpoint) once its
    ///    current call returns; lease taking stops meanwhile. This part gets the timeout less
    ///    the release reserve: two [renew intervals](Self::renew_interval), at most half the
    ///    timeout (25 s - 2 x 3.3 s = 18.3 s with the defaults).
    /// 2. **Releases**: every lease is handed back (owner cleared, conditionally), up to 20 at
    ///    a time, so other workers take them at their next take cycle instead of after the
    ///    failover time; then the renewals stop.
    ///
    /// A processor that has not returned when its part is over (it ignores
    /// `shutdown_requested`, or hangs in `process_records`) is abandoned: its future is
    /// dropped at its current `.await` (a thread blocked inside it is not stopped), it gets
    /// no further call, and its lease is handed back with the others. What it processed after
    /// its last checkpoint is delivered again to the lease's next holder. Leases whose release
    /// has not gone through when the timeout is up (DynamoDB unreachable) are left: other
    /// workers take them after the failover time.
    ///
    /// The same bound applies to `shutdown_requested` when a lease is handed over to another
    /// worker, and to `lease_lost`. The MultiLangDaemon's `shutdownGraceMillis` sets it.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.worker.shutdown_timeout = timeout;
        self
    }

    /// How long one processor call (`initialize`, `process_records`, `shard_ended`) may go
    /// without a sign of progress before it is abandoned and the shard starts over from its
    /// last checkpoint with a new processor (default 5 minutes; `None`: no limit, a hung
    /// processor then holds its shard until the worker shuts down).
    ///
    /// A watchdog, not a budget: every checkpoint call through the [`Checkpointer`]
    /// (`checkpoint`, `checkpoint_at`, `prepare_checkpoint`, `commit_prepared`, whether it
    /// writes or fails) starts the timeout again, so a batch that takes longer than the
    /// timeout but checkpoints as it goes is never restarted. `initialize` has no
    /// checkpointer: it gets the timeout once.
    ///
    /// [`Checkpointer`]: crate::Checkpointer
    pub fn processor_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.worker.processor_timeout = timeout;
        self
    }

    /// Whether [`ShardRecordProcessor::process_records`] is also called, with no records,
    /// after each read that returned none (default false; the Java KCL's
    /// `callProcessRecordsEvenForEmptyRecordList`). Never at the shard's end, which goes to
    /// `shard_ended`.
    pub fn call_process_records_even_if_empty(mut self, enabled: bool) -> Self {
        self.worker.process_empty_batches = enabled;
        self
    }

    /// The backoff between attempts of the worker's retried steps: startup, a shard end that
    /// did not become durable, a restart after a processor failure (default 500 ms doubling up
    /// to 30 s).
    pub fn retry_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.worker.retry_min = min;
        self.worker.retry_max = max;
        self
    }

    /// How many times `shard_ended` is called (each after a backoff, see
    /// [`retry_backoff`](Self::retry_backoff)) for a processor that returns without storing
    /// SHARD_END, or stalls past the processor timeout, before the worker gives up on it
    /// (default 10, about two minutes). A shard end given up on is logged as an error,
    /// counted (`ShardEnd.Abandoned`, [`ConsumerSnapshot::shard_ends_abandoned`]) and shown as
    /// [`ShardPhase::ShardEndFailed`]: the shard stays held and unfinished, its children wait,
    /// until the lease is lost, handed over or released at shutdown, and the next holder
    /// tries again. Attempts where the processor did checkpoint but the write failed (a
    /// DynamoDB error) do not count: those are retried until the write goes through. The
    /// Java KCL retries forever.
    ///
    /// [`ConsumerSnapshot::shard_ends_abandoned`]: crate::ConsumerSnapshot::shard_ends_abandoned
    pub fn max_shard_end_attempts(mut self, attempts: NonZeroU32) -> Self {
        self.worker.shard_end_attempts = attempts;
        self
    }

    /// The most bytes of decoded batches the whole worker holds at once, over all its shards
    /// (default [`DEFAULT_BATCH_MEMORY_BUDGET`], 256 MiB): batches read ahead, waiting, and
    /// being processed, until their `process_records` call returns.
    ///
    /// Each shard reads one batch ahead while its processor works on another, and a
    /// GetRecords answer may decode to more than 10 MiB, so without a bound a worker
    /// catching up on 1,000 shards could need 20 GiB. A shard that is behind (or has not
    /// read yet) reserves the most an answer may decode to (about 14 MiB with the default
    /// [`PollingConfig::max_records`]; 3 MiB per subscription event with enhanced fan-out)
    /// before it reads, waiting its turn while the budget has no room, and keeps only what
    /// the batch decoded to once it is known. A shard at the tip (its last answer was caught
    /// up, see [`PollingConfig::caught_up_threshold`]) reads without waiting; its batches,
    /// small by then, are charged all the same. A budget smaller than one answer still lets
    /// one batch through at a time, so every shard progresses. A batch the processor keeps
    /// (moves its records elsewhere) after `process_records` returned is no longer counted.
    ///
    /// The Java KCL bounds each shard on its own instead (`maxByteSize`, 8 MiB read ahead per
    /// shard); there is no worker-wide setting there. The bytes charged now are published as
    /// the `BatchMemory.Bytes` gauge.
    ///
    /// [`DEFAULT_BATCH_MEMORY_BUDGET`]: crate::retrieval::DEFAULT_BATCH_MEMORY_BUDGET
    /// [`PollingConfig::max_records`]: crate::retrieval::PollingConfig::max_records
    /// [`PollingConfig::caught_up_threshold`]: crate::retrieval::PollingConfig::caught_up_threshold
    pub fn batch_memory_budget(mut self, bytes: NonZeroUsize) -> Self {
        self.worker.batch_memory_budget = bytes;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`SchedulerError::MissingClients`], or [`SchedulerError::Config`] naming the first
    /// setting that cannot work (zero, longer than a day, a renew interval not shorter than
    /// the failover time, an empty worker id).
    pub fn build(self) -> Result<Scheduler<F>, SchedulerError> {
        let (Some(kinesis), Some(dynamodb)) = (self.kinesis, self.dynamodb) else {
            return Err(SchedulerError::MissingClients);
        };
        let coordinator = self.coordinator.build()?;
        self.worker.validate()?;
        let worker_id = match self.worker_id {
            Some(id) if id.is_empty() => {
                return Err(crate::coordinator::CoordinatorConfigError::EmptyWorkerId.into());
            }
            Some(id) => id,
            None => {
                let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
                format!("{host}-{}", uuid::Uuid::new_v4().simple())
            }
        };
        let table_name = self
            .table_name
            .unwrap_or_else(|| self.application_name.clone());
        let metrics = Arc::new(ConsumerMetrics::new(self.stream.as_str()));
        let (done_tx, done_rx) = watch::channel(false);
        let (coordinator_tx, coordinator_rx) = watch::channel(None);
        let status = Arc::new(StatusBoard::default());
        Ok(Scheduler {
            table: LeaseTable::new(dynamodb, table_name).with_options(self.table_options),
            stream: self.stream,
            factory: Arc::new(self.factory),
            kinesis,
            worker_id,
            coordinator,
            worker: Arc::new(self.worker),
            handle: SchedulerHandle {
                shutdown: CancellationToken::new(),
                done: done_rx,
                metrics,
                status,
                coordinator: coordinator_rx,
            },
            done: done_tx,
            coordinator_tx,
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
    coordinator: CoordinatorConfig,
    worker: Arc<WorkerConfig>,
    handle: SchedulerHandle,
    done: watch::Sender<bool>,
    coordinator_tx: watch::Sender<Option<crate::coordinator::SharedState>>,
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

impl<F, P> Scheduler<F>
where
    F: Fn(&str) -> P + Send + Sync + 'static,
    P: ShardRecordProcessor,
{
    /// A builder for worker `application_name` (also the lease table's name unless
    /// [`table_name`](SchedulerBuilder::table_name) says otherwise) over `stream` (a name, or
    /// an ARN starting with `arn:`), creating one processor per shard with `factory`.
    pub fn builder(
        application_name: impl Into<String>,
        stream: impl Into<StreamId>,
        factory: F,
    ) -> SchedulerBuilder<F> {
        SchedulerBuilder {
            application_name: application_name.into(),
            table_name: None,
            table_options: TableOptions::default(),
            stream: stream.into(),
            factory,
            kinesis: None,
            dynamodb: None,
            worker_id: None,
            coordinator: CoordinatorConfig::builder(),
            worker: WorkerConfig::new(InitialPosition::Latest),
        }
    }

    /// A handle for shutting this worker down and reading its counters and state.
    pub fn handle(&self) -> SchedulerHandle {
        self.handle.clone()
    }

    /// This worker's id.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// The lease table's name.
    pub fn table_name(&self) -> &str {
        self.table.table_name()
    }

    /// Runs the worker until [`SchedulerHandle::graceful_shutdown`]. Transient DynamoDB and
    /// Kinesis failures while starting (creating the table, the first shard sync) are retried
    /// with backoff.
    ///
    /// # Errors
    /// [`SchedulerError`] when the lease table or the stream cannot be used at start for a
    /// reason retrying cannot fix (access denied, no such stream, an invalid request).
    pub async fn run(self) -> Result<(), SchedulerError> {
        // One client for every call of the worker: polling, shard sync, cleanup and enhanced
        // fan-out; the registration calls are bounded by the fan-out read timeout, and
        // SubscribeToShard by the subscriber (its read timeout).
        let mut timeouts = self.worker.polling.timeouts();
        timeouts.control = self.worker.fan_out.timeouts().control;
        let api = Arc::new(SdkKinesis::new(&self.kinesis).with_timeouts(timeouts));
        let fan_out: Option<Arc<dyn ConsumerApi>> = match self.worker.retrieval {
            Retrieval::FanOut { .. } => Some(api.clone()),
            Retrieval::Polling => None,
        };
        let parts = WorkerParts {
            api,
            fan_out,
            stream: self.stream.clone(),
            store: Arc::new(self.table.clone()),
            worker_id: self.worker_id.clone(),
            coordinator: self.coordinator.clone(),
            config: self.worker.clone(),
            handle: self.handle.clone(),
            coordinator_tx: self.coordinator_tx.clone(),
        };
        let factory = self.factory.clone();
        let result = run_worker(parts, move |shard: &str| factory(shard)).await;
        let _ = self.done.send(true);
        result
    }
}
