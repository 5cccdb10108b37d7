//! Workers against kinesis-mock and DynamoDB Local with short timings: reading everything,
//! splitting shards between workers, failover, graceful hand-back, resharding, restarts inside
//! an aggregate, and no two workers delivering one shard at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_tests::{create_stream, dynamodb_client, kinesis_client, list_shards, unique_name};
use kcl::lease::{Checkpoint, LeaseTable};
use kcl::retrieval::PollingConfig;
use kcl::{
    Checkpointer, InitialPosition, ProcessRecordsInput, Scheduler, SchedulerHandle,
    ShardRecordProcessor,
};
use kpl::{MisroutedRecords, Producer, UserRecord};

/// One delivered user record.
#[derive(Debug, Clone)]
struct Delivery {
    worker: String,
    shard: String,
    key: String,
    data: String,
    sequence: String,
    sub: Option<u64>,
}

/// What every processor of a test writes to.
#[derive(Debug, Default)]
struct Log {
    deliveries: Vec<Delivery>,
    /// (worker, shard, start, end) of every process_records call.
    calls: Vec<(String, String, Instant, Instant)>,
    /// (shard, event) in order: "start", "end".
    lifecycle: Vec<(String, &'static str, Instant)>,
}

type SharedLog = Arc<Mutex<Log>>;

struct Recorder {
    worker: String,
    shard: String,
    log: SharedLog,
}

impl ShardRecordProcessor for Recorder {
    async fn initialize(&mut self, _input: kcl::InitializeInput) {
        self.log
            .lock()
            .expect("log")
            .lifecycle
            .push((self.shard.clone(), "start", Instant::now()));
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
        // Long enough that overlapping deliveries would show.
        tokio::time::sleep(Duration::from_millis(5)).await;
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
        self.log
            .lock()
            .expect("log")
            .lifecycle
            .push((self.shard.clone(), "end", Instant::now()));
    }

    async fn shutdown_requested(&mut self, checkpointer: &mut Checkpointer) {
        let _ = checkpointer.checkpoint().await;
    }
}

struct Fleet {
    application: String,
    stream: String,
    log: SharedLog,
    failover: Duration,
    max_records: i32,
}

struct Worker {
    handle: SchedulerHandle,
    task: tokio::task::JoinHandle<()>,
}

impl Fleet {
    async fn new(prefix: &str, shards: i32) -> Self {
        let stream = unique_name(prefix);
        create_stream(&kinesis_client().await, &stream, shards).await;
        Self {
            application: unique_name(&format!("{prefix}-app")),
            stream,
            log: SharedLog::default(),
            failover: Duration::from_millis(1_500),
            max_records: kcl::retrieval::MAX_RECORDS_LIMIT,
        }
    }

    async fn worker(&self, name: &str) -> Worker {
        self.worker_reading_through(name, kinesis_client().await)
            .await
    }

    async fn worker_reading_through(&self, name: &str, kinesis: aws_sdk_kinesis::Client) -> Worker {
        let log = self.log.clone();
        let worker = name.to_owned();
        let scheduler = Scheduler::builder(
            self.application.as_str(),
            self.stream.as_str(),
            move |shard: &str| Recorder {
                worker: worker.clone(),
                shard: shard.to_owned(),
                log: log.clone(),
            },
        )
        .clients(kinesis, dynamodb_client().await)
        .worker_id(name)
        .initial_position(InitialPosition::TrimHorizon)
        .failover_time(self.failover)
        .renew_interval(Duration::from_millis(400))
        .take_interval(Duration::from_millis(300))
        .polling(
            PollingConfig::default()
                .idle_time_between_reads(Duration::from_millis(100))
                .max_records(self.max_records),
        )
        .shard_sync_interval(Duration::from_millis(500))
        .parent_poll_interval(Duration::from_millis(100))
        .build()
        .expect("scheduler");
        let handle = scheduler.handle();
        let task = tokio::spawn(async move { scheduler.run().await.expect("worker runs") });
        Worker { handle, task }
    }

    async fn producer(&self) -> Producer {
        Producer::builder(self.stream.as_str())
            .client(kinesis_client().await)
            .linger(Duration::from_millis(10))
            .ordered(true)
            // Aggregates built for a parent land whole in one child after a reshard. This
            // consumer filters each sub-record by its shard's range, so only the records the
            // landing shard does not own need sending again; the default (resend all, for the
            // Java KCL and Lambda) would store the others twice and the test counts exactly.
            .misrouted_records(MisroutedRecords::ResendOutOfRange)
            .build()
            .await
            .expect("producer")
    }

    fn table(&self, client: aws_sdk_dynamodb::Client) -> LeaseTable {
        LeaseTable::new(client, self.application.as_str())
    }

    /// Waits until `count` distinct payloads were delivered.
    async fn wait_delivered(&self, count: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let distinct = self.distinct_payloads().len();
            if distinct >= count {
                return;
            }
            if Instant::now() >= deadline {
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
                panic!("only {distinct} of {count} records delivered; leases: {summary:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn distinct_payloads(&self) -> HashSet<String> {
        self.log
            .lock()
            .expect("log")
            .deliveries
            .iter()
            .map(|d| d.data.clone())
            .collect()
    }

    /// Leases per owner, from the table (waiting for the workers to have created it).
    async fn owners(&self) -> BTreeMap<String, usize> {
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
}

async fn produce(producer: &Producer, range: std::ops::Range<usize>, keys: usize) {
    let mut receipts = Vec::new();
    for i in range {
        receipts.push(
            producer
                .send(UserRecord::new(
                    format!("key-{}", i % keys),
                    format!("record-{i}"),
                ))
                .await
                .expect("accepted"),
        );
    }
    for receipt in receipts {
        receipt.await.expect("stored");
    }
}

/// Per-key order: each key's payload numbers never go backwards within one delivery run.
fn assert_per_key_order(deliveries: &[Delivery]) {
    let mut last: HashMap<(&str, &str), usize> = HashMap::new();
    for d in deliveries {
        let n: usize = d
            .data
            .trim_start_matches("record-")
            .parse()
            .expect("number");
        if let Some(previous) = last.insert((d.worker.as_str(), d.key.as_str()), n) {
            assert!(
                previous < n,
                "{}: record-{n} after record-{previous} ({})",
                d.key,
                d.shard
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_reads_everything_aggregated_and_plain() {
    let fleet = Fleet::new("kcl-one", 2).await;
    let aggregated = fleet.producer().await;
    produce(&aggregated, 0..600, 50).await;
    let plain = Producer::builder(fleet.stream.as_str())
        .client(kinesis_client().await)
        .aggregation(false)
        .build()
        .await
        .expect("producer");
    produce(&plain, 600..700, 50).await;
    let worker = fleet.worker("w1").await;
    fleet.wait_delivered(700, Duration::from_secs(30)).await;
    worker.handle.graceful_shutdown().await;
    worker.task.await.expect("ended");
    let log = fleet.log.lock().expect("log");
    assert_eq!(log.deliveries.len(), 700, "exactly once");
    assert!(
        log.deliveries.iter().any(|d| d.sub.is_some())
            && log.deliveries.iter().any(|d| d.sub.is_none())
    );
    assert_per_key_order(&log.deliveries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_split_eight_shards_and_survive_a_death() {
    let fleet = Fleet::new("kcl-three", 8).await;
    let producer = fleet.producer().await;
    let workers = [
        fleet.worker("w1").await,
        fleet.worker("w2").await,
        fleet.worker("w3").await,
    ];
    // Even split: 3/3/2.
    // Even split, 3/3/2, in the table and in what each worker believes it holds (a worker
    // whose lease was stolen notices at its next renewal).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let owners = fleet.owners().await;
        let mut counts: Vec<usize> = owners.values().copied().collect();
        counts.sort();
        let mut held: Vec<usize> = workers
            .iter()
            .map(|w| w.handle.metrics().leases_held)
            .collect();
        held.sort();
        if counts == vec![2, 3, 3] && !owners.contains_key("-") && held == vec![2, 3, 3] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no even split: {owners:?}, held {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    produce(&producer, 0..800, 200).await;
    fleet.wait_delivered(800, Duration::from_secs(30)).await;

    // w3 dies: its task is aborted, its leases are neither renewed nor released.
    let died = Instant::now();
    workers[2].task.abort();
    produce(&producer, 800..1_200, 200).await;
    fleet.wait_delivered(1_200, Duration::from_secs(30)).await;
    let taken_after = died.elapsed();
    let owners = fleet.owners().await;
    assert!(!owners.contains_key("w3"), "{owners:?}");
    assert!(
        taken_after >= fleet.failover - Duration::from_millis(500),
        "taken before failover: {taken_after:?}"
    );
    println!(
        "w3's shards resumed {taken_after:?} after it died (failover {:?}): {owners:?}",
        fleet.failover
    );
    for worker in &workers[..2] {
        worker.handle.graceful_shutdown().await;
    }
    // Processing resumed from the checkpoints: the only records delivered twice are ones w3
    // delivered before it died without checkpointing them.
    let log = fleet.log.lock().expect("log");
    let mut deliveries: HashMap<&str, Vec<&str>> = HashMap::new();
    for d in &log.deliveries {
        deliveries
            .entry(d.data.as_str())
            .or_default()
            .push(d.worker.as_str());
    }
    assert_eq!(deliveries.len(), 1_200, "nothing lost");
    for (payload, workers) in &deliveries {
        if workers.len() > 1 {
            assert_eq!(workers.len(), 2, "{payload} delivered {workers:?}");
            assert_eq!(
                workers[0], "w3",
                "{payload}: only the dead worker's unfinished batch is repeated"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_hands_shards_over_fast_and_without_duplicates() {
    let mut fleet = Fleet::new("kcl-graceful", 4).await;
    fleet.failover = Duration::from_secs(10);
    let producer = fleet.producer().await;
    produce(&producer, 0..400, 100).await;
    // w1 reads (and checkpoints) everything first, so w2 taking its share re-reads nothing.
    let w1 = fleet.worker("w1").await;
    fleet.wait_delivered(400, Duration::from_secs(30)).await;
    let w2 = fleet.worker("w2").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while fleet.owners().await.len() < 2 {
        assert!(Instant::now() < deadline, "{:?}", fleet.owners().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    w2.handle.graceful_shutdown().await;
    w2.task.await.expect("ended");
    loop {
        if fleet.owners().await == BTreeMap::from([("w1".to_owned(), 4)]) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "slower than the 10 s failover would be: {:?}",
            fleet.owners().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("shards moved in {:?} (failover 10 s)", started.elapsed());
    produce(&producer, 400..600, 100).await;
    fleet.wait_delivered(600, Duration::from_secs(30)).await;
    w1.handle.graceful_shutdown().await;
    let log = fleet.log.lock().expect("log");
    assert_eq!(
        log.deliveries.len(),
        600,
        "no duplicates after a graceful hand-back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_and_merge_while_producing_keeps_order_and_loses_nothing() {
    let fleet = Fleet::new("kcl-reshard", 2).await;
    let kinesis = kinesis_client().await;
    let producer = fleet.producer().await;
    let worker = fleet.worker("w1").await;
    produce(&producer, 0..300, 60).await;
    let shards = list_shards(&kinesis, &fleet.stream).await;
    let parent = &shards[0];
    integration_tests::split_in_half(&kinesis, &fleet.stream, parent).await;
    produce(&producer, 300..600, 60).await;
    // Merge the two children back.
    let open = integration_tests::children_of(&kinesis, &fleet.stream, parent.shard_id()).await;
    integration_tests::merge_shards(
        &kinesis,
        &fleet.stream,
        open[0].shard_id(),
        open[1].shard_id(),
    )
    .await;
    produce(&producer, 600..900, 60).await;
    fleet.wait_delivered(900, Duration::from_secs(60)).await;
    worker.handle.graceful_shutdown().await;
    let all = list_shards(&kinesis, &fleet.stream).await;
    let log = fleet.log.lock().expect("log");
    assert_eq!(log.deliveries.len(), 900, "nothing lost, nothing twice");
    assert_per_key_order(&log.deliveries);
    // Children start only after their parents ended.
    let at = |shard: &str, event: &str| {
        log.lifecycle
            .iter()
            .find(|(s, e, _)| s == shard && *e == event)
            .map(|(_, _, t)| *t)
    };
    for shard in &all {
        for parent in shard
            .parent_shard_id()
            .into_iter()
            .chain(shard.adjacent_parent_shard_id())
        {
            if let (Some(child_start), Some(parent_end)) =
                (at(shard.shard_id(), "start"), at(parent, "end"))
            {
                assert!(
                    child_start >= parent_end,
                    "{} started before {parent} ended",
                    shard.shard_id()
                );
            } else if at(shard.shard_id(), "start").is_some() {
                panic!("{} started but {parent} never ended", shard.shard_id());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_inside_an_aggregate() {
    let fleet = Fleet::new("kcl-restart", 1).await;
    // One aggregate of 50 records.
    let producer = Producer::builder(fleet.stream.as_str())
        .client(kinesis_client().await)
        .linger(Duration::from_secs(5))
        .build()
        .await
        .expect("producer");
    let receipts: Vec<_> = {
        let mut receipts = Vec::new();
        for i in 0..50 {
            receipts.push(
                producer
                    .send(UserRecord::new("k", format!("record-{i}")))
                    .await
                    .expect("accepted"),
            );
        }
        producer.flush().await.expect("flushed");
        receipts
    };
    let mut sequence = String::new();
    for receipt in receipts {
        sequence = receipt.await.expect("stored").sequence_number.to_string();
    }
    // A checkpoint left by an earlier run at sub-record 19 of that aggregate.
    let table = fleet.table(dynamodb_client().await);
    table.create_if_missing().await.expect("table");
    let shard = list_shards(&kinesis_client().await, &fleet.stream).await[0]
        .shard_id()
        .to_owned();
    let mut lease =
        kcl::lease::Lease::new(shard.clone(), Checkpoint::sequence(sequence.clone(), 19));
    lease.hash_key_range = Some(("0".into(), u128::MAX.to_string()));
    table.create_lease(&lease).await.expect("lease");
    let worker = fleet.worker("w1").await;
    fleet.wait_delivered(30, Duration::from_secs(30)).await;
    worker.handle.graceful_shutdown().await;
    let stored = table.get(&shard).await.expect("get").expect("lease");
    let log = fleet.log.lock().expect("log");
    let got: Vec<Option<u64>> = log.deliveries.iter().map(|d| d.sub).collect();
    assert_eq!(
        got,
        (20..50).map(Some).collect::<Vec<_>>(),
        "resumes after sub-record 19, exactly once"
    );
    assert!(log.deliveries.iter().all(|d| d.sequence == sequence));
    assert_eq!(stored.checkpoint, Checkpoint::sequence(sequence, 49));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_workers_never_deliver_one_shard_at_once() {
    let fleet = Fleet::new("kcl-race", 1).await;
    let producer = fleet.producer().await;
    let w1 = fleet.worker("w1").await;
    let w2 = fleet.worker("w2").await;
    for round in 0..4 {
        produce(&producer, round * 100..(round + 1) * 100, 10).await;
    }
    fleet.wait_delivered(400, Duration::from_secs(30)).await;
    w1.handle.graceful_shutdown().await;
    w2.handle.graceful_shutdown().await;
    let log = fleet.log.lock().expect("log");
    for (i, a) in log.calls.iter().enumerate() {
        for b in &log.calls[i + 1..] {
            if a.0 != b.0 && a.1 == b.1 {
                assert!(
                    a.3 <= b.2 || b.3 <= a.2,
                    "{} and {} processed {} at once",
                    a.0,
                    b.0,
                    a.1
                );
            }
        }
    }
    let workers: HashSet<&str> = log.deliveries.iter().map(|d| d.worker.as_str()).collect();
    assert_eq!(
        workers.len(),
        1,
        "one shard, one lease, one worker: {workers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_connection_faults_never_redeliver_what_was_delivered() {
    use fault_proxy::{FaultProxy, Faults, Upstream};
    let mut fleet = Fleet::new("kcl-faults", 2).await;
    // Plain records, small reads: many calls, many faults.
    fleet.max_records = 20;
    let producer = Producer::builder(fleet.stream.as_str())
        .client(kinesis_client().await)
        .aggregation(false)
        .build()
        .await
        .expect("producer");
    let upstream = integration_tests::endpoint_url(integration_tests::KINESIS_ENDPOINT_VAR);
    // Connections dropped before the request reaches kinesis-mock, and answers lost after it
    // did, on every read call.
    let proxy = FaultProxy::start(
        Upstream::Forward(upstream),
        Faults {
            drop_connection_rate: 0.3,
            lose_response_rate: 0.3,
            seed: 11,
            fail_operations: vec![
                "GetRecords".into(),
                "GetShardIterator".into(),
                "ListShards".into(),
            ],
            ..Faults::default()
        },
    )
    .await
    .expect("fault proxy");
    let endpoint = proxy.endpoint_url();
    let w1 = fleet
        .worker_reading_through("w1", integration_tests::kinesis_client_at(&endpoint).await)
        .await;
    let w2 = fleet
        .worker_reading_through("w2", integration_tests::kinesis_client_at(&endpoint).await)
        .await;
    for round in 0..4 {
        produce(&producer, round * 250..(round + 1) * 250, 40).await;
    }
    fleet.wait_delivered(1_000, Duration::from_secs(90)).await;
    w1.handle.graceful_shutdown().await;
    w2.handle.graceful_shutdown().await;
    let faults = proxy.stats().faults;
    assert!(
        faults.dropped_connections + faults.lost_responses > 10,
        "{faults:?}"
    );
    proxy.shutdown().await;
    let log = fleet.log.lock().expect("log");
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for delivery in &log.deliveries {
        *counts.entry(delivery.data.as_str()).or_default() += 1;
    }
    let twice: Vec<&&str> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| k)
        .take(5)
        .collect();
    println!(
        "{} deliveries through {} dropped connections and {} lost answers",
        log.deliveries.len(),
        faults.dropped_connections,
        faults.lost_responses
    );
    // Rebalancing between the two workers is by handoff: nothing may repeat, faults or not.
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    assert_eq!(counts.len(), 1_000);
    assert_per_key_order(&log.deliveries);
}
