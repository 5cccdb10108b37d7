//! The fleet of whole workers that `scheduler.rs` (reading by polling) and `fan_out.rs`
//! (reading by enhanced fan-out, through a [`TcpRelay`]) run against kinesis-mock and DynamoDB
//! Local: one stream, one application, one log every processor writes to; and the ways these
//! tests (`checkpointer.rs` and `retrieval.rs` too) put records and look streams up.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::types::Shard;
use integration_tests::relay::TcpRelay;
use integration_tests::{
    KINESIS_ENDPOINT_VAR, create_stream, dynamodb_client, endpoint_url, kinesis_client,
    kinesis_client_at, list_shards, unique_name,
};
use kcl::lease::LeaseTable;
use kcl::retrieval::{FanOutConfig, PollingConfig};
use kcl::{
    Checkpointer, InitialPosition, ProcessRecordsInput, Scheduler, SchedulerHandle,
    ShardRecordProcessor,
};
use kpl::{MisroutedRecords, Producer, RecordSuccess, UserRecord};

/// One delivered user record.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub worker: String,
    pub shard: String,
    pub key: String,
    pub data: String,
    /// Sequence number and sub-sequence number: tell a record read twice from a record
    /// stored twice.
    pub sequence: String,
    pub sub: Option<u64>,
}

/// What every processor of a test writes to.
#[derive(Debug, Default)]
pub struct Log {
    pub deliveries: Vec<Delivery>,
    /// (worker, shard, start, end) of every process_records call.
    pub calls: Vec<(String, String, Instant, Instant)>,
    /// (shard, event) in order: "start", "end".
    pub lifecycle: Vec<(String, &'static str, Instant)>,
}

impl Log {
    /// When `shard` first had `event` ("start", "end").
    pub fn at(&self, shard: &str, event: &str) -> Option<Instant> {
        self.lifecycle
            .iter()
            .find(|(s, e, _)| s == shard && *e == event)
            .map(|(_, _, t)| *t)
    }
}

pub type SharedLog = Arc<Mutex<Log>>;

struct Recorder {
    worker: String,
    shard: String,
    log: SharedLog,
    /// How long each process_records call keeps its batch before checkpointing.
    hold: Duration,
}

impl Recorder {
    fn lifecycle(&self, event: &'static str) {
        self.log
            .lock()
            .expect("log")
            .lifecycle
            .push((self.shard.clone(), event, Instant::now()));
    }
}

impl ShardRecordProcessor for Recorder {
    async fn initialize(&mut self, _input: kcl::InitializeInput) {
        self.lifecycle("start");
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        let start = Instant::now();
        {
            let mut log = self.log.lock().expect("log");
            for record in &input.records {
                log.deliveries.push(Delivery {
                    worker: self.worker.clone(),
                    shard: self.shard.clone(),
                    key: record.partition_key().to_owned(),
                    data: String::from_utf8_lossy(record.data()).into_owned(),
                    sequence: record.sequence_number().unwrap_or_default().to_owned(),
                    sub: record.sub_sequence_number(),
                });
            }
        }
        if !self.hold.is_zero() {
            tokio::time::sleep(self.hold).await;
        }
        let _ = checkpointer.checkpoint().await;
        self.log.lock().expect("log").calls.push((
            self.worker.clone(),
            self.shard.clone(),
            start,
            Instant::now(),
        ));
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
        checkpointer
            .checkpoint_shard_end()
            .await
            .expect("SHARD_END checkpoint");
        self.lifecycle("end");
    }

    async fn shutdown_requested(&mut self, checkpointer: &mut Checkpointer) {
        let _ = checkpointer.checkpoint().await;
    }
}

/// How a fleet's workers read.
enum Reading {
    Polling,
    /// Through `relay`, which counts the operations (so a test proves the records came by
    /// SubscribeToShard, not GetRecords) and can reset the connections of subscriptions.
    FanOut {
        relay: TcpRelay,
    },
}

pub struct Fleet {
    pub application: String,
    pub stream: String,
    pub log: SharedLog,
    pub failover: Duration,
    /// The most records a GetRecords call asks for (polling fleets).
    pub max_records: i32,
    /// The fan-out settings (fan-out fleets).
    pub fan_out: FanOutConfig,
    reading: Reading,
    /// How long each process_records call keeps its batch.
    hold: Duration,
    /// What producers do with an aggregate that landed on a shard not owning all its records.
    misrouted: MisroutedRecords,
}

pub struct Worker {
    pub handle: SchedulerHandle,
    pub task: tokio::task::JoinHandle<()>,
}

impl Fleet {
    /// A fleet reading by polling. Each process_records call lasts 5 ms, long enough that
    /// overlapping deliveries would show.
    ///
    /// Aggregates built for a parent land whole in one child after a reshard. This consumer
    /// filters each sub-record by its shard's range, so only the records the landing shard
    /// does not own need sending again; the default (resend all, for the Java KCL and Lambda)
    /// would store the others twice, and these tests count exactly.
    pub async fn polling(prefix: &str, shards: i32) -> Self {
        let mut fleet = Self::new(prefix, shards, Reading::Polling).await;
        fleet.hold = Duration::from_millis(5);
        fleet.misrouted = MisroutedRecords::ResendOutOfRange;
        fleet
    }

    /// A fleet reading by enhanced fan-out through a relay in front of kinesis-mock. Its
    /// producers resend misrouted records the default way: a payload may be stored twice
    /// (see [`assert_delivered_once`](Self::assert_delivered_once)).
    pub async fn fan_out(prefix: &str, shards: i32) -> Self {
        let relay = TcpRelay::start(&endpoint_url(KINESIS_ENDPOINT_VAR)).await;
        Self::new(prefix, shards, Reading::FanOut { relay }).await
    }

    async fn new(prefix: &str, shards: i32, reading: Reading) -> Self {
        let stream = unique_name(prefix);
        create_stream(&kinesis_client().await, &stream, shards).await;
        Self {
            application: unique_name(&format!("{prefix}-app")),
            stream,
            log: SharedLog::default(),
            failover: Duration::from_millis(1_500),
            max_records: kcl::retrieval::MAX_RECORDS_LIMIT,
            fan_out: FanOutConfig::default()
                .read_timeout(Duration::from_secs(5))
                .subscribe_backoff(Duration::from_millis(50), Duration::from_millis(500))
                .registration_poll_interval(Duration::from_millis(50))
                // kinesis-mock 0.6.2 never ends a closed shard's subscription (the service
                // does, with an event without a continuation): the listing check ends it.
                .closed_shard_check(Some(Duration::from_secs(2))),
            reading,
            hold: Duration::ZERO,
            misrouted: MisroutedRecords::default(),
        }
    }

    /// The relay a fan-out fleet's workers read through.
    pub fn relay(&self) -> &TcpRelay {
        match &self.reading {
            Reading::FanOut { relay } => relay,
            Reading::Polling => panic!("a polling fleet reads without a relay"),
        }
    }

    pub async fn worker(&self, name: &str) -> Worker {
        let kinesis = match &self.reading {
            Reading::Polling => kinesis_client().await,
            Reading::FanOut { relay } => kinesis_client_at(&relay.endpoint_url()).await,
        };
        self.worker_reading_through(name, kinesis).await
    }

    pub async fn worker_reading_through(
        &self,
        name: &str,
        kinesis: aws_sdk_kinesis::Client,
    ) -> Worker {
        let log = self.log.clone();
        let worker = name.to_owned();
        let hold = self.hold;
        let builder = Scheduler::builder(
            self.application.as_str(),
            self.stream.as_str(),
            move |shard: &str| Recorder {
                worker: worker.clone(),
                shard: shard.to_owned(),
                log: log.clone(),
                hold,
            },
        )
        .clients(kinesis, dynamodb_client().await)
        .worker_id(name)
        .initial_position(InitialPosition::TrimHorizon)
        .failover_time(self.failover)
        .renew_interval(Duration::from_millis(400))
        .take_interval(Duration::from_millis(300))
        .shard_sync_interval(Duration::from_millis(500))
        .parent_poll_interval(Duration::from_millis(100));
        let builder = match self.reading {
            Reading::Polling => builder.polling(
                PollingConfig::default()
                    .idle_time_between_reads(Duration::from_millis(100))
                    .max_records(self.max_records),
            ),
            Reading::FanOut { .. } => builder
                .fan_out(self.application.as_str())
                .fan_out_config(self.fan_out.clone()),
        };
        let scheduler = builder.build().expect("scheduler");
        let handle = scheduler.handle();
        let task = tokio::spawn(async move { scheduler.run().await.expect("worker runs") });
        Worker { handle, task }
    }

    pub async fn producer(&self) -> Producer {
        Producer::builder(self.stream.as_str())
            .client(kinesis_client().await)
            .linger(Duration::from_millis(10))
            .ordered(true)
            .misrouted_records(self.misrouted)
            .build()
            .await
            .expect("producer")
    }

    /// A producer of plain records (no aggregation).
    pub async fn plain_producer(&self) -> Producer {
        Producer::builder(self.stream.as_str())
            .client(kinesis_client().await)
            .aggregation(false)
            .build()
            .await
            .expect("producer")
    }

    pub fn table(&self, client: aws_sdk_dynamodb::Client) -> LeaseTable {
        LeaseTable::new(client, self.application.as_str())
    }

    /// Waits until `count` distinct payloads were delivered.
    pub async fn wait_delivered(&self, count: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let distinct = self.distinct_payloads().len();
            if distinct >= count {
                return;
            }
            if Instant::now() >= deadline {
                let subscribes = match &self.reading {
                    Reading::FanOut { relay } => relay.requests("SubscribeToShard"),
                    Reading::Polling => 0,
                };
                let leases = self
                    .table(dynamodb_client().await)
                    .list()
                    .await
                    .expect("leases");
                let summary: Vec<String> = leases
                    .iter()
                    .map(|l| {
                        format!(
                            "{} owner={:?} cp={} parents={:?}",
                            l.lease_key, l.lease_owner, l.checkpoint, l.parent_shard_ids
                        )
                    })
                    .collect();
                panic!(
                    "only {distinct} of {count} records delivered (SubscribeToShard calls: {subscribes}); leases: {summary:#?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn distinct_payloads(&self) -> HashSet<String> {
        self.log
            .lock()
            .expect("log")
            .deliveries
            .iter()
            .map(|d| d.data.clone())
            .collect()
    }

    /// Leases per owner, from the table (waiting for the workers to have created it).
    pub async fn owners(&self) -> BTreeMap<String, usize> {
        let table = self.table(dynamodb_client().await);
        let deadline = Instant::now() + Duration::from_secs(30);
        let leases = loop {
            match table.list().await {
                Ok(leases) => break leases,
                Err(error) if Instant::now() < deadline => {
                    tracing::debug!(%error, "lease table not readable yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("leases: {error:?}"),
            }
        };
        let mut owners = BTreeMap::new();
        for lease in leases {
            *owners
                .entry(lease.lease_owner.unwrap_or_else(|| "-".into()))
                .or_default() += 1;
        }
        owners
    }

    /// One worker reads while the first shard is split and its children merged back, 300
    /// records (60 keys) put before, between and after; it stops gracefully once all 900
    /// were delivered (within `within`). Returns every shard of the stream.
    pub async fn split_and_merge(&self, within: Duration) -> Vec<Shard> {
        let kinesis = kinesis_client().await;
        let producer = self.producer().await;
        let worker = self.worker("w1").await;
        produce(&producer, 0..300, 60).await;
        let shards = list_shards(&kinesis, &self.stream).await;
        let parent = &shards[0];
        integration_tests::split_in_half(&kinesis, &self.stream, parent).await;
        produce(&producer, 300..600, 60).await;
        // Merge the two children back.
        let open = integration_tests::children_of(&kinesis, &self.stream, parent.shard_id()).await;
        integration_tests::merge_shards(
            &kinesis,
            &self.stream,
            open[0].shard_id(),
            open[1].shard_id(),
        )
        .await;
        produce(&producer, 600..900, 60).await;
        self.wait_delivered(900, within).await;
        worker.handle.graceful_shutdown().await;
        list_shards(&kinesis, &self.stream).await
    }

    /// Every stored user record delivered exactly once (by its position in the shard), all
    /// `count` payloads among them, per-key order kept; the records came by fan-out only.
    ///
    /// A payload may be stored twice: after a reshard the producer sends the user records of
    /// an aggregate that landed on another shard than it predicted to their owners again. Those
    /// copies have their own positions and are delivered like any record; they are counted and
    /// shown, not hidden.
    pub fn assert_exactly_once(&self, count: usize) {
        self.assert_delivered_once(count);
        assert!(self.relay().requests("SubscribeToShard") > 0);
        assert_eq!(
            self.relay().requests("GetRecords"),
            0,
            "fan-out workers never poll"
        );
    }

    /// [`assert_exactly_once`](Self::assert_exactly_once) without the relay's counts.
    pub fn assert_delivered_once(&self, count: usize) {
        let log = self.log.lock().expect("log");
        let mut positions: HashMap<(&str, &str, Option<u64>), usize> = HashMap::new();
        for d in &log.deliveries {
            *positions
                .entry((d.shard.as_str(), d.sequence.as_str(), d.sub))
                .or_default() += 1;
        }
        let twice: Vec<_> = positions.iter().filter(|(_, n)| **n > 1).take(5).collect();
        assert!(twice.is_empty(), "read more than once: {twice:?}");
        let mut copies: HashMap<&str, usize> = HashMap::new();
        for d in &log.deliveries {
            *copies.entry(d.data.as_str()).or_default() += 1;
        }
        assert_eq!(copies.len(), count, "nothing lost");
        let stored_twice = copies.values().filter(|n| **n > 1).count();
        if stored_twice > 0 {
            println!("{stored_twice} payloads were stored twice by the producer (a reshard)");
        }
        // Per-key order over each payload's first delivery.
        let mut first = HashSet::new();
        assert_per_key_order(
            log.deliveries
                .iter()
                .filter(|d| first.insert(d.data.as_str())),
            |_| (),
        );
    }
}

/// The ARN of `stream` (DescribeStreamSummary).
pub async fn stream_arn(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> String {
    let summary = kinesis.describe_stream_summary().stream_name(stream).send();
    let summary = summary.await.expect("DescribeStreamSummary");
    summary
        .stream_description_summary
        .expect("summary")
        .stream_arn
}

/// Puts `record-{i}` for each `i` of `range`, over `keys` partition keys, and waits until
/// all are stored.
pub async fn produce(producer: &Producer, range: std::ops::Range<usize>, keys: usize) {
    let mut receipts = Vec::new();
    for i in range {
        let record = UserRecord::new(format!("key-{}", i % keys), format!("record-{i}"));
        receipts.push(producer.send(record).await.expect("accepted"));
    }
    for receipt in receipts {
        receipt.await.expect("stored");
    }
}

/// Sends `records`, flushes (the producer's linger does not hold them back) and waits until
/// all are stored; returns where each was stored, in order.
pub async fn put_flushed(
    producer: &Producer,
    records: impl IntoIterator<Item = UserRecord>,
) -> Vec<RecordSuccess> {
    let mut receipts = Vec::new();
    for record in records {
        receipts.push(producer.send(record).await.expect("accepted"));
    }
    producer.flush().await.expect("flushed");
    let mut stored = Vec::new();
    for receipt in receipts {
        stored.push(receipt.await.expect("stored"));
    }
    stored
}

/// Per-key order: each key's payload numbers (`record-N`) never go backwards along
/// `deliveries`, within each `scope` (a delivery run: a worker, say).
pub fn assert_per_key_order<'a, S: Eq + Hash>(
    deliveries: impl IntoIterator<Item = &'a Delivery>,
    scope: impl Fn(&'a Delivery) -> S,
) {
    let mut last: HashMap<(S, &str), usize> = HashMap::new();
    for d in deliveries {
        let n: usize = d
            .data
            .trim_start_matches("record-")
            .parse()
            .expect("number");
        if let Some(previous) = last.insert((scope(d), d.key.as_str()), n) {
            assert!(
                previous < n,
                "{}: record-{n} after record-{previous} ({})",
                d.key,
                d.shard
            );
        }
    }
}

/// (child, parent) for every parent of every shard in `shards`.
pub fn parent_links(shards: &[Shard]) -> Vec<(&str, &str)> {
    shards
        .iter()
        .flat_map(|shard| {
            shard
                .parent_shard_id()
                .into_iter()
                .chain(shard.adjacent_parent_shard_id())
                .map(|parent| (shard.shard_id(), parent))
        })
        .collect()
}
