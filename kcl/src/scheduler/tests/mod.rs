//! Whole workers over the in-memory lease store and kinesis-common's `FakeKinesis`, in paused
//! tokio time: every failure the emulators cannot produce, made to happen, deterministically.

mod config;
mod failures;
mod fan_out;
mod fleet;
mod lifecycle;
mod limits;

use std::collections::{BTreeMap, HashMap};
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kinesis_common::testing::{FakeKinesis, Operation};
use kinesis_common::{ConsumerStatus, ErrorClass};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    InitialPosition, SchedulerError, SchedulerHandle, StatusBoard, WorkerConfig, WorkerParts,
    run_worker,
};
use crate::checkpointer::Checkpointer;
use crate::coordinator::CoordinatorConfig;
pub(crate) use crate::coordinator::tests::wait_for;
use crate::lease::memory::MemoryStore;
use crate::lease::{Checkpoint, Lease};
use crate::metrics::ConsumerMetrics;
use crate::processor::{InitializeInput, ProcessRecordsInput, ShardRecordProcessor};
use crate::retrieval::{PollingConfig, StreamId};

pub(crate) fn shard_id(n: u32) -> String {
    format!("shardId-{n:012}")
}

/// A fleet's stream on the shared fake, in the words the tests use (the shard written to,
/// split, merged, trimmed); every other knob (faults, expired iterators, the call log) is the
/// fake's own, through `Deref`.
#[derive(Debug, Clone)]
pub(crate) struct FleetStream {
    kinesis: FakeKinesis,
    name: String,
}

impl FleetStream {
    /// A stream of `shards` shards splitting the key space evenly, read as the old scheduler
    /// fake read: sequence numbers `100001`, `100002`..., consumers ACTIVE at once,
    /// subscriptions of 10 records an event ending (as the service's do every 5 minutes)
    /// after 20 events, an idle event every 100 ms.
    fn new(name: &str, shards: u32) -> Self {
        let kinesis = FakeKinesis::new();
        kinesis.set_sequence_format(100_000, 0);
        kinesis.set_registration_states([ConsumerStatus::Active]);
        kinesis.set_records_per_event(10);
        kinesis.set_events_per_subscription(Some(20));
        kinesis.set_idle_event_interval(Duration::from_millis(100));
        kinesis.create_stream(name, shards as usize);
        Self {
            kinesis,
            name: name.to_owned(),
        }
    }

    /// Appends `count` records named `{prefix}-{i}` (partition key `key`) to `shard`; returns
    /// their sequence numbers.
    pub(crate) fn put_n(&self, shard: &str, prefix: &str, count: usize) -> Vec<String> {
        self.kinesis.append_data(
            self.name.as_str(),
            shard,
            "key",
            (0..count).map(|i| format!("{prefix}-{i}")),
        )
    }

    /// Appends `count` records sharing `data` (no copy) to `shard`.
    pub(crate) fn put_shared(&self, shard: &str, data: &Bytes, count: usize) -> Vec<String> {
        let data = std::iter::repeat_n(data.clone(), count);
        self.kinesis
            .append_data(self.name.as_str(), shard, "key", data)
    }

    /// Splits `shard` in half; returns the children.
    pub(crate) fn split(&self, shard: &str) -> (String, String) {
        self.kinesis.split_in_half(self.name.as_str(), shard)
    }

    /// Merges two adjacent shards; returns the child.
    pub(crate) fn merge(&self, a: &str, b: &str) -> String {
        self.kinesis.merge(self.name.as_str(), a, b)
    }

    /// `operation` refused a few times first, as a worker retries: 3 transient failures,
    /// then 2 throttled.
    pub(crate) fn refuse_a_few_times(&self, operation: Operation) {
        self.kinesis.fail(operation, ErrorClass::Transient, 3);
        self.kinesis.fail(operation, ErrorClass::Throttled, 2);
    }

    /// Makes `shard` disappear (trimmed past retention): NotFound from then on.
    pub(crate) fn remove(&self, shard: &str) {
        self.kinesis.remove_shard(self.name.as_str(), shard);
    }
}

impl Deref for FleetStream {
    type Target = FakeKinesis;

    fn deref(&self) -> &FakeKinesis {
        &self.kinesis
    }
}

const FAILOVER: Duration = Duration::from_secs(3);
const RENEW: Duration = Duration::from_secs(1);
const TAKE: Duration = Duration::from_millis(500);
const IDLE: Duration = Duration::from_millis(100);

/// One delivered record.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) worker: String,
    pub(crate) shard: String,
    pub(crate) data: String,
    pub(crate) at: Instant,
}

/// A lifecycle call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    Initialize(InitializeInput),
    LeaseLost,
    ShardEnded,
    ShutdownRequested,
}

#[derive(Debug, Default)]
pub(crate) struct Log {
    pub(crate) deliveries: Vec<Delivery>,
    pub(crate) events: Vec<(String, String, Event, Instant)>,
}

pub(crate) type SharedLog = Arc<Mutex<Log>>;

/// What processors do, shared by every processor of a test.
#[derive(Debug, Default)]
pub(crate) struct Script {
    /// Batches left before a processor panics (then it behaves).
    pub(crate) panic_in: Mutex<Option<usize>>,
    /// Batches left before a processor asks to be replaced (without recording the batch).
    pub(crate) restart_in: Mutex<Option<usize>>,
    /// `process_records` calls that had no records.
    pub(crate) empty_batches: AtomicUsize,
    /// Batches left before a processor hangs for good in `process_records`.
    pub(crate) hang_in: Mutex<Option<usize>>,
    /// Hang in `shutdown_requested`.
    pub(crate) hang_on_shutdown: Mutex<bool>,
    /// `shard_ended` calls that return without checkpointing.
    pub(crate) skip_shard_end: AtomicUsize,
    /// In `shard_ended`, checkpoint the last record (`checkpoint()`) instead of SHARD_END.
    pub(crate) shard_end_by_checkpoint: Mutex<bool>,
    /// Do not checkpoint in `process_records`.
    pub(crate) no_checkpoints: Mutex<bool>,
    /// Time each `process_records` call takes.
    pub(crate) processing_time: Mutex<Duration>,
    /// How the next batch with records is processed slowly (once).
    pub(crate) slow_batch: Mutex<Option<SlowBatch>>,
    /// Counts the data bytes of the batches processors hold; deliveries are logged by
    /// sequence number (the records' data may be large and shared).
    pub(crate) held_bytes: Mutex<Option<Arc<HeldBytes>>>,
}

/// Data bytes of the batches inside `process_records` calls now, and the most at once.
#[derive(Debug, Default)]
pub(crate) struct HeldBytes {
    pub(crate) now: AtomicUsize,
    pub(crate) peak: AtomicUsize,
}

impl HeldBytes {
    fn enter(&self, bytes: usize) {
        let now = self.now.fetch_add(bytes, Ordering::SeqCst) + bytes;
        self.peak.fetch_max(now, Ordering::SeqCst);
    }

    fn leave(&self, bytes: usize) {
        self.now.fetch_sub(bytes, Ordering::SeqCst);
    }
}

/// A batch processed in `steps` steps of `every`, each ending with a checkpoint at a later
/// record of the batch; then, if `then_hang`, a hang for good.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlowBatch {
    pub(crate) steps: usize,
    pub(crate) every: Duration,
    pub(crate) then_hang: bool,
}

pub(crate) struct Recorder {
    worker: String,
    shard: String,
    log: SharedLog,
    script: Arc<Script>,
}

fn take_one(counter: &Mutex<Option<usize>>) -> bool {
    let mut counter = counter.lock().unwrap();
    match *counter {
        Some(0) => {
            *counter = None;
            true
        }
        Some(n) => {
            *counter = Some(n - 1);
            false
        }
        None => false,
    }
}

impl Recorder {
    fn event(&self, event: Event) {
        self.log.lock().unwrap().events.push((
            self.worker.clone(),
            self.shard.clone(),
            event,
            Instant::now(),
        ));
    }
}

impl Recorder {
    /// Works through `input` in `slow.steps` steps, checkpointing a later record after each
    /// (the last step checkpoints the whole batch; the caller records the batch afterwards).
    async fn slow(
        &self,
        input: &ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
        slow: SlowBatch,
    ) {
        let records = &input.records;
        for step in 1..=slow.steps {
            tokio::time::sleep(slow.every).await;
            let record = &records[(step * records.len() / slow.steps).max(1) - 1];
            let sequence = record.sequence_number().unwrap().to_owned();
            let sub = record.sub_sequence_number().unwrap_or(0);
            checkpointer.checkpoint_at(&sequence, sub).await.unwrap();
        }
        if slow.then_hang {
            std::future::pending::<()>().await;
        }
    }
}

impl ShardRecordProcessor for Recorder {
    async fn initialize(&mut self, input: InitializeInput) {
        self.event(Event::Initialize(input));
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        if take_one(&self.script.hang_in) {
            std::future::pending::<()>().await;
        }
        if take_one(&self.script.panic_in) {
            panic!("processor bug on shard {}", self.shard);
        }
        if take_one(&self.script.restart_in) {
            checkpointer.request_restart("the test asks for it");
            return;
        }
        if input.records.is_empty() {
            self.script.empty_batches.fetch_add(1, Ordering::SeqCst);
        }
        let held = self.script.held_bytes.lock().unwrap().clone();
        let held_bytes: usize = input.records.iter().map(|r| r.data().len()).sum();
        if let Some(held) = &held {
            held.enter(held_bytes);
        }
        let slow = match input.records.is_empty() {
            true => None,
            false => self.script.slow_batch.lock().unwrap().take(),
        };
        if let Some(slow) = slow {
            self.slow(&input, checkpointer, slow).await;
        }
        {
            let mut log = self.log.lock().unwrap();
            for record in &input.records {
                let data = match &held {
                    Some(_) => record.sequence_number().unwrap_or_default().to_owned(),
                    None => String::from_utf8_lossy(record.data()).into_owned(),
                };
                log.deliveries.push(Delivery {
                    worker: self.worker.clone(),
                    shard: self.shard.clone(),
                    data,
                    at: Instant::now(),
                });
            }
        }
        let took = *self.script.processing_time.lock().unwrap();
        if !took.is_zero() {
            tokio::time::sleep(took).await;
        }
        if let Some(held) = &held {
            held.leave(held_bytes);
        }
        if !*self.script.no_checkpoints.lock().unwrap() {
            let _ = checkpointer.checkpoint().await;
        }
    }

    async fn lease_lost(&mut self) {
        self.event(Event::LeaseLost);
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
        self.event(Event::ShardEnded);
        let skip = self
            .script
            .skip_shard_end
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if skip {
            return;
        }
        if *self.script.shard_end_by_checkpoint.lock().unwrap() {
            let _ = checkpointer.checkpoint().await;
        } else {
            let _ = checkpointer.checkpoint_shard_end().await;
        }
    }

    async fn shutdown_requested(&mut self, checkpointer: &mut Checkpointer) {
        self.event(Event::ShutdownRequested);
        if *self.script.hang_on_shutdown.lock().unwrap() {
            std::future::pending::<()>().await;
        }
        let _ = checkpointer.checkpoint().await;
    }
}

/// A test's fleet: one stream, one table, one log.
pub(crate) struct Fleet {
    /// The stream's name, unique per fleet so metrics of parallel tests stay apart.
    pub(crate) name: String,
    pub(crate) stream: FleetStream,
    pub(crate) store: MemoryStore,
    pub(crate) log: SharedLog,
    pub(crate) script: Arc<Script>,
}

pub(crate) struct TestWorker {
    pub(crate) handle: SchedulerHandle,
    pub(crate) task: JoinHandle<Result<(), SchedulerError>>,
    /// This worker's view of the table (its own faults).
    pub(crate) store: MemoryStore,
}

pub(crate) fn worker_config() -> WorkerConfig {
    WorkerConfig {
        polling: PollingConfig::default()
            .idle_time_between_reads(IDLE)
            .min_time_between_calls(Duration::ZERO)
            .throttle_backoff(Duration::from_millis(50), Duration::from_millis(500))
            .prefetch(false),
        shard_sync_interval: Duration::from_secs(1),
        parent_poll_interval: Duration::from_millis(100),
        cleanup_interval: Duration::from_secs(1),
        shutdown_timeout: Duration::from_secs(5),
        processor_timeout: Some(Duration::from_secs(10)),
        retry_min: Duration::from_millis(100),
        retry_max: Duration::from_secs(1),
        ..WorkerConfig::new(InitialPosition::TrimHorizon)
    }
}

pub(crate) fn coordinator_config() -> CoordinatorConfig {
    CoordinatorConfig::builder()
        .failover_time(FAILOVER)
        .renew_interval(RENEW)
        .take_interval(TAKE)
        .handoff_timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

impl Fleet {
    pub(crate) fn new(shards: u32) -> Self {
        static FLEETS: AtomicUsize = AtomicUsize::new(0);
        let name = format!("stream-{}", FLEETS.fetch_add(1, Ordering::Relaxed));
        Self {
            stream: FleetStream::new(&name, shards),
            name,
            store: MemoryStore::default(),
            log: SharedLog::default(),
            script: Arc::default(),
        }
    }

    pub(crate) fn worker(&self, name: &str) -> TestWorker {
        self.worker_with(name, worker_config(), coordinator_config())
    }

    /// A worker reading by enhanced fan-out over the same fake stream.
    pub(crate) fn fan_out_worker(&self, name: &str, config: WorkerConfig) -> TestWorker {
        let config = WorkerConfig {
            retrieval: super::Retrieval::FanOut {
                consumer_name: "app".into(),
            },
            fan_out: crate::retrieval::FanOutConfig::default()
                .read_timeout(Duration::from_secs(5))
                .subscribe_backoff(Duration::from_millis(50), Duration::from_millis(500)),
            ..config
        };
        self.start_worker(name, config, coordinator_config(), true)
    }

    pub(crate) fn worker_with(
        &self,
        name: &str,
        config: WorkerConfig,
        coordinator: CoordinatorConfig,
    ) -> TestWorker {
        self.start_worker(name, config, coordinator, false)
    }

    fn start_worker(
        &self,
        name: &str,
        config: WorkerConfig,
        coordinator: CoordinatorConfig,
        fan_out: bool,
    ) -> TestWorker {
        config.validate().unwrap();
        let store = self.store.view();
        let (done_tx, done) = watch::channel(false);
        let (coordinator_tx, coordinator_rx) = watch::channel(None);
        let handle = SchedulerHandle {
            shutdown: CancellationToken::new(),
            done,
            metrics: Arc::new(ConsumerMetrics::new(self.name.clone())),
            status: Arc::new(StatusBoard::default()),
            coordinator: coordinator_rx,
        };
        let parts = WorkerParts {
            api: self.stream.kinesis.clone(),
            fan_out: fan_out.then(|| {
                let api: Arc<dyn kinesis_common::ConsumerApi> =
                    Arc::new(self.stream.kinesis.clone());
                api
            }),
            stream: StreamId::from(self.name.clone()),
            store: Arc::new(store.clone()),
            worker_id: name.to_owned(),
            coordinator,
            config: Arc::new(config),
            handle: handle.clone(),
            coordinator_tx,
        };
        let (worker, log, script) = (name.to_owned(), self.log.clone(), self.script.clone());
        let task = tokio::spawn(async move {
            let result = run_worker(parts, move |shard: &str| Recorder {
                worker: worker.clone(),
                shard: shard.to_owned(),
                log: log.clone(),
                script: script.clone(),
            })
            .await;
            let _ = done_tx.send(true);
            result
        });
        TestWorker {
            handle,
            task,
            store,
        }
    }

    pub(crate) fn deliveries(&self) -> Vec<Delivery> {
        self.log.lock().unwrap().deliveries.clone()
    }

    /// How often each payload was delivered.
    pub(crate) fn counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for delivery in self.deliveries() {
            *counts.entry(delivery.data).or_default() += 1;
        }
        counts
    }

    /// Payloads delivered more than once, and how many extra deliveries there were.
    pub(crate) fn duplicates(&self) -> usize {
        self.counts().values().map(|n| n.saturating_sub(1)).sum()
    }

    pub(crate) fn events(&self, shard: &str) -> Vec<Event> {
        self.log
            .lock()
            .unwrap()
            .events
            .iter()
            .filter(|(_, s, _, _)| s == shard)
            .map(|(_, _, e, _)| e.clone())
            .collect()
    }

    /// Waits until `count` distinct payloads were delivered; panics after `limit`.
    pub(crate) async fn wait_delivered(&self, count: usize, limit: Duration) -> Duration {
        let counts = || self.counts().len();
        wait_for(&format!("{count} records"), limit, || counts() >= count).await
    }

    pub(crate) fn lease(&self, key: &str) -> Option<Lease> {
        self.store.get_now(key)
    }

    pub(crate) fn owners(&self) -> BTreeMap<String, Option<String>> {
        self.store.owners()
    }

    /// First and last delivery instants of `shard`; `None` before its first delivery.
    pub(crate) fn delivery_span(&self, shard: &str) -> Option<(Instant, Instant)> {
        let times: Vec<Instant> = self
            .deliveries()
            .iter()
            .filter(|d| d.shard == shard)
            .map(|d| d.at)
            .collect();
        Some((*times.iter().min()?, *times.iter().max()?))
    }
}

/// On a 2-shard fleet read by the worker `start` starts (50 records a shard): shard 0 split,
/// 20 records on each child, the children merged, 10 records on the merge. Checks parents
/// were read before children and nothing twice; returns the worker and the three parents
/// (shard 0 and its children).
pub(crate) async fn split_and_merge(
    fleet: &Fleet,
    start: impl FnOnce() -> TestWorker,
) -> (TestWorker, [String; 3]) {
    let (s0, s1) = (shard_id(0), shard_id(1));
    fleet.stream.put_n(&s0, "s0", 50);
    fleet.stream.put_n(&s1, "s1", 50);
    let w1 = start();
    fleet.wait_delivered(100, Duration::from_secs(30)).await;

    let (c2, c3) = fleet.stream.split(&s0);
    fleet.stream.put_n(&c2, "c2", 20);
    fleet.stream.put_n(&c3, "c3", 20);
    fleet.wait_delivered(140, Duration::from_secs(30)).await;
    let m4 = fleet.stream.merge(&c2, &c3);
    fleet.stream.put_n(&m4, "m4", 10);
    fleet.wait_delivered(150, Duration::from_secs(30)).await;

    // Parents before children.
    let (_, s0_last) = fleet.delivery_span(&s0).unwrap();
    for child in [&c2, &c3] {
        let (first, last) = fleet.delivery_span(child).unwrap();
        assert!(first > s0_last, "{child} started before {s0} ended");
        let (m4_first, _) = fleet.delivery_span(&m4).unwrap();
        assert!(m4_first > last, "{m4} started before {child} ended");
    }
    assert_eq!(fleet.duplicates(), 0);
    (w1, [s0, c2, c3])
}

/// Two workers (`start` starts them by name) on a 2-shard fleet fed a steady trickle of
/// records, one shard each; then `w1` is cut off from DynamoDB until `w2` holds its lease.
pub(crate) struct Partition {
    w1: TestWorker,
    w2: TestWorker,
    producer: JoinHandle<()>,
    /// From the cut: `w1`'s last delivery from its lease, and `w2`'s take of it.
    stopped_after: Duration,
    taken_after: Duration,
    /// From the cut to 3 s past the take: records delivered, and delivered twice.
    delivered: usize,
    duplicates: usize,
}

impl Partition {
    /// Runs the partition and checks `w1` stopped delivering before `w2` took over, within
    /// the failover time.
    pub(crate) async fn run(fleet: &Fleet, start: impl Fn(&str) -> TestWorker) -> Self {
        let (s0, s1) = (shard_id(0), shard_id(1));
        let w1 = start("w1");
        // A steady trickle of records: 10 per shard per second.
        let producer = {
            let stream = fleet.stream.clone();
            tokio::spawn(async move {
                for tick in 0.. {
                    stream.put_n(&s0, &format!("a{tick}"), 1);
                    stream.put_n(&s1, &format!("b{tick}"), 1);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        fleet.wait_delivered(40, Duration::from_secs(30)).await;
        let w2 = start("w2");
        // 2 shards over 2 workers: w2 asks for one by handoff.
        wait_for("1/1", Duration::from_secs(30), || {
            let owners: Vec<Option<String>> = fleet.owners().into_values().collect();
            owners.contains(&Some("w1".into())) && owners.contains(&Some("w2".into()))
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let w1_shard = fleet
            .owners()
            .into_iter()
            .find(|(_, owner)| owner.as_deref() == Some("w1"))
            .map(|(key, _)| key)
            .unwrap();
        let before = fleet.deliveries().len();
        let duplicates_before = fleet.duplicates();
        // w1 cannot reach DynamoDB any more; w2 can.
        w1.store.faults().unreachable = true;
        let cut_off = Instant::now();
        wait_for("w2 took over", Duration::from_secs(30), || {
            fleet.lease(&w1_shard).unwrap().lease_owner.as_deref() == Some("w2")
        })
        .await;
        let taken = Instant::now();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let deliveries = fleet.deliveries();
        let last_w1 = deliveries
            .iter()
            .filter(|d| d.worker == "w1" && d.shard == w1_shard)
            .map(|d| d.at)
            .max()
            .unwrap();
        assert!(last_w1 < taken, "w1 delivered after w2 took the lease");
        assert!(last_w1 - cut_off < FAILOVER, "{:?}", last_w1 - cut_off);
        Self {
            w1,
            w2,
            producer,
            stopped_after: last_w1 - cut_off,
            taken_after: taken - cut_off,
            delivered: deliveries.len() - before,
            duplicates: fleet.duplicates() - duplicates_before,
        }
    }

    /// Stops the records, heals the partition and stops both workers.
    pub(crate) async fn end(self) {
        self.producer.abort();
        self.w1.store.faults().unreachable = false;
        self.w2.stop().await.unwrap();
        self.w1.stop().await.unwrap();
    }
}

impl TestWorker {
    pub(crate) async fn stop(self) -> Result<(), SchedulerError> {
        self.handle.graceful_shutdown().await;
        self.task.await.unwrap()
    }
}

/// Makes every processor of `fleet` hang in `shutdown_requested`, and the next one given a
/// record (a record put on `shard`) hang in `process_records`; returns once it hangs.
pub(crate) async fn hang_processors(fleet: &Fleet, worker: &TestWorker, shard: &str) {
    *fleet.script.hang_in.lock().unwrap() = Some(0);
    *fleet.script.hang_on_shutdown.lock().unwrap() = true;
    fleet.stream.put_n(shard, "hung", 1);
    wait_for("a hung process_records", Duration::from_secs(10), || {
        worker
            .handle
            .state()
            .shards
            .values()
            .any(|s| s.processing_since.is_some())
    })
    .await;
}

/// The checkpoint of `key` in the store.
pub(crate) fn checkpoint(fleet: &Fleet, key: &str) -> Option<Checkpoint> {
    fleet.lease(key).map(|lease| lease.checkpoint)
}
