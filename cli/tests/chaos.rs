//! The chaos test: a producer and three consumer workers of one application through every
//! fault this project promises to survive, then a verifier over what the producer was told and
//! what the workers processed (see `integration_tests::chaos`).
//!
//! ```text
//! kpl Producer -> TcpProxy (resets) -> FaultProxy (throttling, partial failures, lost
//!   responses) -> kinesis-mock
//! kinesis-cat consume x 3 (real processes) -> per worker: TcpProxy -> kinesis-mock,
//!   TcpProxy -> DynamoDB Local (latency, hold, resets)
//! ```
//!
//! Planned points, in order, once (or in cycles for `CHAOS_SOAK_SECS` seconds): producer
//! faults; one worker killed (SIGKILL) and restarted under the same worker id; a split; one
//! worker shut down (SIGTERM) and replaced by a new one; one worker's DynamoDB held (at least
//! 1.5 x the failover time, far longer than the renew interval, and until another worker took
//! one of its leases) then every worker's DynamoDB slow; a merge; every Kinesis connection
//! (producer and workers) reset once. After each fault the test waits until every record sent
//! before its end was answered and processed: its recovery time. `CHAOS_DUMP=1` writes the
//! whole log to the temp directory (it is written on a failure anyway).
//!
//! The producer keeps order and uses `MisroutedRecords::ResendOutOfRange`: our consumer
//! filters each sub-record by its shard's hash range, so after a reshard the records the
//! landing shard owns are read there and only the others are sent again; the duplicates left
//! are the ones lost answers cause, which their receipts flag (`possibly_duplicated`), and
//! the verifier counts them apart from the consumer's.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_kinesis::types::Shard;
use fault_proxy::{FaultProxy, Faults, Upstream};
use integration_tests::chaos::tcp_proxy::{ProxyMode, TcpProxy};
use integration_tests::chaos::verify::{self, Produced, RunLog};
use integration_tests::chaos::worker::{Collected, WorkerProcess, WorkerSpec, record_data};
use integration_tests::{
    DYNAMODB_ENDPOINT_VAR, KINESIS_ENDPOINT_VAR, create_stream, dynamodb_client, endpoint_url,
    kinesis_client, kinesis_client_at, list_shards, unique_name, wait_for_stream_active,
};
use kcl::lease::{Checkpoint, LeaseTable};
use kpl::{MisroutedRecords, Producer, UserRecord};

const SHARDS: i32 = 4;
const KEYS: u64 = 48;
/// Records per producer tick (every 10 ms): 300 records/s.
const PER_TICK: u64 = 3;
const RECORD_SIZE: usize = 100;
const FAILOVER: Duration = Duration::from_secs(3);
const MAX_OUTSTANDING_RECORDS: usize = 1_000;
const MAX_OUTSTANDING_BYTES: usize = 512 * 1024;
/// How long any planned state may take to come about before the test fails.
const STATE_TIMEOUT: Duration = Duration::from_secs(60);

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// This process's peak resident memory (`VmHWM`), as Linux reports it.
fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.trim_start_matches("VmHWM:").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// Polls `condition` every 50 ms until it holds; panics after [`STATE_TIMEOUT`] naming `what`.
async fn wait_for<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + STATE_TIMEOUT;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "chaos: {what} did not happen within {STATE_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fault and when it ended (Unix microseconds), for the recovery figures.
#[derive(Debug)]
struct FaultWindow {
    name: String,
    started_us: u64,
    ended_us: u64,
    /// From the end until every record sent before it was answered and, if stored, processed.
    recovered_us: Option<u64>,
}

/// A record sent and whether its receipt answered yet.
struct Sent {
    record: Produced,
    resolved: bool,
}

/// Waits until every record sent before `ended_us` was answered and, if stored, processed;
/// returns how long after `ended_us` that was (`None` if not within [`STATE_TIMEOUT`]: the
/// verifier names what is missing).
async fn caught_up(
    produced: &Mutex<Vec<Sent>>,
    collected: &Mutex<Collected>,
    ended_us: u64,
) -> Option<u64> {
    let deadline = Instant::now() + STATE_TIMEOUT;
    loop {
        let done = {
            let processed: HashSet<(String, u64)> = collected
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .processed
                .iter()
                .map(|p| (p.key.clone(), p.n))
                .collect();
            let produced = produced.lock().unwrap_or_else(|e| e.into_inner());
            produced
                .iter()
                .take_while(|sent| sent.record.sent_us < ended_us)
                .all(|sent| {
                    sent.resolved
                        && (!sent.record.stored
                            || processed.contains(&(sent.record.key.clone(), sent.record.n)))
                })
        };
        if done {
            return Some(now_us().saturating_sub(ended_us));
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the run caught up after `window` and keeps it with its recovery time.
async fn record_window(
    windows: &mut Vec<FaultWindow>,
    mut window: FaultWindow,
    produced: &Mutex<Vec<Sent>>,
    collected: &Mutex<Collected>,
) {
    window.recovered_us = caught_up(produced, collected, window.ended_us).await;
    windows.push(window);
}

/// One worker position: its proxies stay, its process changes.
struct Slot {
    worker_id: String,
    dynamodb: TcpProxy,
    kinesis: TcpProxy,
    process: Option<WorkerProcess>,
    generation: u32,
}

struct Fleet {
    stream: String,
    application: String,
    slots: Vec<Slot>,
    collected: Arc<Mutex<Collected>>,
    /// Exit status and stderr of every process that ended.
    exits: Vec<(String, std::process::ExitStatus, String, bool)>,
    table: LeaseTable,
}

impl Fleet {
    fn spec(&self, slot: usize) -> WorkerSpec {
        let s = &self.slots[slot];
        WorkerSpec {
            binary: env!("CARGO_BIN_EXE_kinesis-cat").into(),
            stream: self.stream.clone(),
            application: self.application.clone(),
            worker_id: s.worker_id.clone(),
            kinesis_url: s.kinesis.url(),
            dynamodb_url: s.dynamodb.url(),
            failover: FAILOVER,
            idle_millis: 200,
        }
    }

    fn start(&mut self, slot: usize) {
        let spec = self.spec(slot);
        let s = &mut self.slots[slot];
        s.generation += 1;
        let label = format!("{}#{}", s.worker_id, s.generation);
        s.process = Some(WorkerProcess::spawn(&spec, &label, self.collected.clone()));
    }

    fn label(&self, slot: usize) -> String {
        let s = &self.slots[slot];
        format!("{}#{}", s.worker_id, s.generation)
    }

    async fn reap(&mut self, slot: usize, killed: bool) {
        let process = self.slots[slot].process.take().expect("a running worker");
        let label = process.label.clone();
        let (status, stderr) =
            tokio::task::spawn_blocking(move || process.wait(Duration::from_secs(30)))
                .await
                .expect("wait");
        self.exits.push((label, status, stderr, killed));
    }

    /// Lease key -> owner, for leases not finished.
    async fn owners(&self) -> HashMap<String, Option<String>> {
        self.table
            .list()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|l| l.checkpoint != Checkpoint::ShardEnd)
            .map(|l| (l.lease_key, l.lease_owner))
            .collect()
    }

    /// The first time a worker other than `label` processed `shard` at or after `since_us`.
    fn processed_by_other(&self, shard: &str, label: &str, since_us: u64) -> Option<u64> {
        let collected = self.collected.lock().unwrap_or_else(|e| e.into_inner());
        collected
            .processed
            .iter()
            .filter(|p| p.shard == shard && p.worker != label && p.at_us >= since_us)
            .map(|p| p.at_us)
            .min()
    }

    fn processed_on(&self, shard: &str) -> bool {
        let collected = self.collected.lock().unwrap_or_else(|e| e.into_inner());
        collected.processed.iter().any(|p| p.shard == shard)
    }

    fn processed_count(&self) -> usize {
        self.collected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .processed
            .len()
    }
}

fn open_shards(shards: &[Shard]) -> Vec<Shard> {
    let mut open: Vec<Shard> = shards
        .iter()
        .filter(|s| {
            s.sequence_number_range()
                .is_some_and(|r| r.ending_sequence_number().is_none())
        })
        .cloned()
        .collect();
    open.sort_by_key(|s| {
        s.hash_key_range()
            .map(|r| r.starting_hash_key().parse::<u128>().unwrap_or(0))
            .unwrap_or(0)
    });
    open
}

fn range(shard: &Shard) -> (u128, u128) {
    let r = shard.hash_key_range().expect("hash range");
    (
        r.starting_hash_key().parse().expect("start"),
        r.ending_hash_key().parse().expect("end"),
    )
}

/// Splits the widest open shard in the middle; returns the two children's ids.
async fn split(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> Vec<String> {
    let before = list_shards(kinesis, stream).await;
    let known: HashSet<String> = before.iter().map(|s| s.shard_id().to_owned()).collect();
    let widest = open_shards(&before)
        .into_iter()
        .max_by_key(|s| {
            let (a, b) = range(s);
            b - a
        })
        .expect("an open shard");
    let (a, b) = range(&widest);
    kinesis
        .split_shard()
        .stream_name(stream)
        .shard_to_split(widest.shard_id())
        .new_starting_hash_key((a + (b - a) / 2 + 1).to_string())
        .send()
        .await
        .expect("SplitShard");
    wait_for_stream_active(kinesis, stream).await;
    list_shards(kinesis, stream)
        .await
        .into_iter()
        .map(|s| s.shard_id().to_owned())
        .filter(|id| !known.contains(id))
        .collect()
}

/// Merges the narrowest adjacent pair of open shards; returns the child's id.
async fn merge(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> Vec<String> {
    let before = list_shards(kinesis, stream).await;
    let known: HashSet<String> = before.iter().map(|s| s.shard_id().to_owned()).collect();
    let open = open_shards(&before);
    let pair = open
        .windows(2)
        .filter(|w| range(&w[0]).1 + 1 == range(&w[1]).0)
        .min_by_key(|w| range(&w[1]).1 - range(&w[0]).0)
        .expect("two adjacent open shards");
    kinesis
        .merge_shards()
        .stream_name(stream)
        .shard_to_merge(pair[0].shard_id())
        .adjacent_shard_to_merge(pair[1].shard_id())
        .send()
        .await
        .expect("MergeShards");
    wait_for_stream_active(kinesis, stream).await;
    list_shards(kinesis, stream)
        .await
        .into_iter()
        .map(|s| s.shard_id().to_owned())
        .filter(|id| !known.contains(id))
        .collect()
}

/// Waits until each new shard has a lease and a record processed on it.
async fn wait_children(fleet: &Fleet, children: &[String], what: &str) {
    wait_for(what, || async {
        let owners = fleet.owners().await;
        children
            .iter()
            .all(|c| owners.get(c).is_some_and(Option::is_some) && fleet.processed_on(c))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos() {
    let soak = std::env::var("CHAOS_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs);
    let run_started = Instant::now();
    let kinesis = kinesis_client().await;
    let dynamodb = dynamodb_client().await;
    let stream = unique_name("chaos");
    let application = unique_name("chaos-app");
    create_stream(&kinesis, &stream, SHARDS).await;

    // The producer's path: reset proxy -> fault proxy -> kinesis-mock.
    let kinesis_url = endpoint_url(KINESIS_ENDPOINT_VAR);
    let dynamodb_url = endpoint_url(DYNAMODB_ENDPOINT_VAR);
    let faults = FaultProxy::start(Upstream::Forward(kinesis_url.clone()), Faults::none())
        .await
        .expect("fault proxy");
    let producer_link = TcpProxy::start(&host_port(&faults.endpoint_url())).await;
    let producer = Producer::builder(stream.as_str())
        .client(kinesis_client_at(&producer_link.url()).await)
        .ordered(true)
        .misrouted_records(MisroutedRecords::ResendOutOfRange)
        .max_outstanding_records(MAX_OUTSTANDING_RECORDS)
        .max_record_size(64 * 1024)
        .max_outstanding_bytes(MAX_OUTSTANDING_BYTES)
        .request_timeout(Duration::from_secs(2))
        .record_ttl(Duration::from_secs(60))
        .jitter_seed(12)
        .build()
        .await
        .expect("producer");

    let collected = Arc::new(Mutex::new(Collected::default()));
    let mut slots = Vec::new();
    for i in 1..=3 {
        slots.push(Slot {
            worker_id: format!("w{i}"),
            dynamodb: TcpProxy::start(&host_port(&dynamodb_url)).await,
            kinesis: TcpProxy::start(&host_port(&kinesis_url)).await,
            process: None,
            generation: 0,
        });
    }
    let mut fleet = Fleet {
        stream: stream.clone(),
        application: application.clone(),
        slots,
        collected: collected.clone(),
        exits: Vec::new(),
        table: LeaseTable::new(dynamodb.clone(), application.as_str()),
    };
    for slot in 0..3 {
        fleet.start(slot);
    }
    wait_for("every worker holding a lease", || async {
        let owners = fleet.owners().await;
        let distinct: HashSet<&String> = owners.values().flatten().collect();
        owners.len() == SHARDS as usize
            && owners.values().all(Option::is_some)
            && distinct.len() == 3
    })
    .await;

    // Produce in the background; every receipt's answer is written into `produced`.
    let produced: Arc<Mutex<Vec<Sent>>> = Arc::new(Mutex::new(Vec::new()));
    // Why records failed, for the verdict (a `Stopped` pipeline is a producer panic).
    let failures: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let peak_outstanding = Arc::new(AtomicUsize::new(0));
    let producing = tokio::spawn({
        let producer = producer.clone();
        let produced = produced.clone();
        let failures = failures.clone();
        let stop = stop.clone();
        async move {
            let mut next_n = vec![0u64; KEYS as usize];
            let mut answers = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut i = 0u64;
            while !stop.load(Relaxed) {
                tick.tick().await;
                for _ in 0..PER_TICK {
                    let key = i % KEYS;
                    i += 1;
                    let n = next_n[key as usize];
                    next_n[key as usize] += 1;
                    let sent_us = now_us();
                    let key_name = format!("key-{key:02}");
                    let receipt = producer
                        .send(UserRecord::new(
                            key_name.clone(),
                            record_data(n, sent_us, RECORD_SIZE),
                        ))
                        .await
                        .expect("the producer accepts");
                    let index = {
                        let mut produced = produced.lock().expect("produced");
                        produced.push(Sent {
                            record: Produced {
                                key: key_name,
                                n,
                                sent_us,
                                stored: false,
                                possibly_duplicated: false,
                            },
                            resolved: false,
                        });
                        produced.len() - 1
                    };
                    let produced = produced.clone();
                    let failures = failures.clone();
                    answers.push(tokio::spawn(async move {
                        let result = receipt.await;
                        let mut produced = produced.lock().expect("produced");
                        produced[index].resolved = true;
                        match result {
                            Ok(success) => {
                                produced[index].record.stored = true;
                                produced[index].record.possibly_duplicated =
                                    success.possibly_duplicated;
                            }
                            Err(failure) => failures
                                .lock()
                                .expect("failures")
                                .push(format!("{:?}", failure.reason())),
                        }
                    }));
                }
            }
            answers
        }
    });
    let sampling = tokio::spawn({
        let producer = producer.clone();
        let peak = peak_outstanding.clone();
        let stop = stop.clone();
        async move {
            while !stop.load(Relaxed) {
                peak.fetch_max(producer.outstanding_records(), Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });

    let mut windows: Vec<FaultWindow> = Vec::new();
    let mut failover_us: Vec<u64> = Vec::new();
    let mut cycle = 0usize;
    loop {
        let base = fleet.processed_count();
        wait_for("records flowing", || async {
            fleet.processed_count() >= base + 300
        })
        .await;

        // Producer faults: throttling, partial failures, lost responses.
        let started_us = now_us();
        faults
            .set_faults(Faults {
                seed: 7 + cycle as u64,
                throttle_rate: 0.1,
                partial_failure_rate: 0.2,
                lose_response_rate: 0.05,
                ..Faults::default()
            })
            .expect("faults");
        tokio::time::sleep(Duration::from_secs(5)).await;
        faults.set_faults(Faults::none()).expect("no faults");
        let window = FaultWindow {
            name: "producer throttling, partial failures, lost responses".into(),
            started_us,
            ended_us: now_us(),
            recovered_us: None,
        };
        record_window(&mut windows, window, &produced, &collected).await;

        // A worker killed without warning, then restarted under the same id.
        let victim = cycle % 3;
        let label = fleet.label(victim);
        let id = fleet.slots[victim].worker_id.clone();
        let held: Vec<String> = fleet
            .owners()
            .await
            .into_iter()
            .filter(|(_, owner)| owner.as_deref() == Some(id.as_str()))
            .map(|(key, _)| key)
            .collect();
        let killed_us = now_us();
        fleet.slots[victim]
            .process
            .as_mut()
            .expect("running")
            .kill();
        fleet.reap(victim, true).await;
        wait_for("the killed worker's shards processed by others", || async {
            held.iter()
                .all(|shard| fleet.processed_by_other(shard, &label, killed_us).is_some())
        })
        .await;
        let failover = held
            .iter()
            .filter_map(|shard| fleet.processed_by_other(shard, &label, killed_us))
            .max()
            .map_or(0, |at| at.saturating_sub(killed_us));
        failover_us.push(failover);
        let window = FaultWindow {
            name: format!("SIGKILL of {label} ({} shards)", held.len()),
            started_us: killed_us,
            ended_us: killed_us,
            recovered_us: None,
        };
        record_window(&mut windows, window, &produced, &collected).await;
        fleet.start(victim);

        // A split.
        let started_us = now_us();
        let children = split(&kinesis, &stream).await;
        assert_eq!(children.len(), 2, "a split makes two children");
        wait_children(&fleet, &children, "the split's children leased and read").await;
        let window = FaultWindow {
            name: "split".into(),
            started_us,
            ended_us: started_us,
            recovered_us: None,
        };
        record_window(&mut windows, window, &produced, &collected).await;

        // A worker shut down gracefully and replaced by a new one.
        let leaving = (cycle + 1) % 3;
        let started_us = now_us();
        fleet.slots[leaving]
            .process
            .as_ref()
            .expect("running")
            .terminate();
        fleet.reap(leaving, false).await;
        let ended_us = now_us();
        fleet.slots[leaving].worker_id = format!("w{}-r{}", leaving + 1, cycle + 1);
        fleet.start(leaving);
        let newcomer = fleet.slots[leaving].worker_id.clone();
        wait_for("the replacement holding a lease", || async {
            fleet
                .owners()
                .await
                .values()
                .any(|o| o.as_deref() == Some(newcomer.as_str()))
        })
        .await;
        let window = FaultWindow {
            name: format!(
                "graceful shutdown of {} and replacement",
                fleet.label(leaving)
            ),
            started_us,
            ended_us,
            recovered_us: None,
        };
        record_window(&mut windows, window, &produced, &collected).await;

        // DynamoDB unreachable for one worker: at least 1.5 x the failover time (4.5 renew
        // intervals) and until another worker took one of its leases, so its holdings pause,
        // its leases move, and it must notice when it is back; then slow for every worker.
        let cut = (cycle + 2) % 3;
        let cut_id = fleet.slots[cut].worker_id.clone();
        let cut_held: Vec<String> = fleet
            .owners()
            .await
            .into_iter()
            .filter(|(_, owner)| owner.as_deref() == Some(cut_id.as_str()))
            .map(|(key, _)| key)
            .collect();
        let started_us = now_us();
        fleet.slots[cut].dynamodb.set_mode(ProxyMode::Hold);
        tokio::time::sleep(FAILOVER * 3 / 2).await;
        wait_for("a lease of the cut-off worker taken", || async {
            let owners = fleet.owners().await;
            cut_held.is_empty()
                || cut_held.iter().any(|shard| {
                    owners
                        .get(shard)
                        .is_none_or(|owner| owner.as_deref() != Some(cut_id.as_str()))
                })
        })
        .await;
        fleet.slots[cut].dynamodb.set_mode(ProxyMode::Pass);
        let ended_us = now_us();
        let window = FaultWindow {
            name: format!("DynamoDB unreachable for {}", fleet.label(cut)),
            started_us,
            ended_us,
            recovered_us: None,
        };
        record_window(&mut windows, window, &produced, &collected).await;
        let started_us = now_us();
        for slot in &fleet.slots {
            slot.dynamodb
                .set_mode(ProxyMode::Latency(Duration::from_millis(150)));
        }
        tokio::time::sleep(Duration::from_secs(4)).await;
        for slot in &fleet.slots {
            slot.dynamodb.set_mode(ProxyMode::Pass);
        }
        let window = FaultWindow {
            name: "DynamoDB slow for every worker (150 ms per chunk each way)".into(),
            started_us,
            ended_us: now_us(),
            recovered_us: None,
        };
        record_window(&mut windows, window, &produced, &collected).await;

        // A merge.
        let started_us = now_us();
        let child = merge(&kinesis, &stream).await;
        assert_eq!(child.len(), 1, "a merge makes one child");
        wait_children(&fleet, &child, "the merge's child leased and read").await;
        let window = FaultWindow {
            name: "merge".into(),
            started_us,
            ended_us: started_us,
            recovered_us: None,
        };
        record_window(&mut windows, window, &produced, &collected).await;

        // Every Kinesis connection reset once.
        let started_us = now_us();
        producer_link.reset_all();
        for slot in &fleet.slots {
            slot.kinesis.reset_all();
        }
        let window = FaultWindow {
            name: "every Kinesis connection reset".into(),
            started_us,
            ended_us: started_us,
            recovered_us: None,
        };
        record_window(&mut windows, window, &produced, &collected).await;

        cycle += 1;
        if soak.is_none_or(|soak| run_started.elapsed() >= soak) {
            break;
        }
    }

    // A little more after the last fault, then drain.
    let base = fleet.processed_count();
    wait_for("records flowing after the faults", || async {
        fleet.processed_count() >= base + 300
    })
    .await;
    stop.store(true, Relaxed);
    let answers = producing.await.expect("producer task");
    sampling.await.expect("sampler");
    let report = producer.flush_timeout(STATE_TIMEOUT).await.expect("flush");
    for answer in answers {
        answer.await.expect("receipt task");
    }
    let producer_metrics = producer.metrics();
    producer.shutdown().await;
    let produced: Vec<Produced> = produced
        .lock()
        .expect("produced")
        .iter()
        .map(|sent| sent.record.clone())
        .collect();
    let stored: HashSet<(String, u64)> = produced
        .iter()
        .filter(|p| p.stored)
        .map(|p| (p.key.clone(), p.n))
        .collect();
    let drain_deadline = Instant::now() + STATE_TIMEOUT;
    loop {
        let missing = {
            let collected = collected.lock().expect("collected");
            let seen: HashSet<(&str, u64)> = collected
                .processed
                .iter()
                .map(|p| (p.key.as_str(), p.n))
                .collect();
            stored
                .iter()
                .filter(|(k, n)| !seen.contains(&(k.as_str(), *n)))
                .count()
        };
        if missing == 0 {
            break;
        }
        if Instant::now() >= drain_deadline {
            // The verifier names them.
            eprintln!("chaos: {missing} stored records not processed after the drain timeout");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for slot in 0..3 {
        fleet.slots[slot]
            .process
            .as_ref()
            .expect("running")
            .terminate();
    }
    for slot in 0..3 {
        fleet.reap(slot, false).await;
    }

    // The verdict.
    let shards = list_shards(&kinesis, &stream).await;
    let parents: HashMap<String, Vec<String>> = shards
        .iter()
        .map(|s| {
            let ps: Vec<String> = s
                .parent_shard_id()
                .into_iter()
                .chain(s.adjacent_parent_shard_id())
                .map(str::to_owned)
                .collect();
            (s.shard_id().to_owned(), ps)
        })
        .filter(|(_, ps)| !ps.is_empty())
        .collect();
    let collected = std::mem::take(&mut *collected.lock().expect("collected"));
    let log = RunLog {
        produced,
        processed: collected.processed,
        events: collected.events,
        parents,
    };
    let verdict = verify::verify(&log);
    let mut problems = verdict.violations.clone();
    problems.extend(
        collected
            .malformed
            .iter()
            .map(|m| format!("malformed line: {m}")),
    );
    for (label, status, stderr, killed) in &fleet.exits {
        if stderr.contains("panicked") {
            problems.push(format!("{label} panicked: {stderr}"));
        }
        if !killed && !status.success() {
            problems.push(format!("{label} exited with {status}: {stderr}"));
        }
    }
    let failures = failures.lock().expect("failures").clone();
    if let Some(stopped) = failures.iter().find(|f| f.starts_with("Stopped")) {
        problems.push(format!(
            "the producer's pipeline failed (panicked?): {stopped}"
        ));
    }
    let peak = peak_outstanding.load(Relaxed);
    // Every record is the same size. `send` takes its record place before waiting for bytes,
    // so the one sending task may hold a place without its bytes: charged records are at
    // most the peak minus that one.
    let charge = kpl::record_charge(RECORD_SIZE + "key-00".len());
    let charged = peak.saturating_sub(1) * charge;
    if peak > MAX_OUTSTANDING_RECORDS || charged > MAX_OUTSTANDING_BYTES {
        problems.push(format!(
            "producer memory: {peak} records outstanding ({charged} bytes charged) above the bound of {MAX_OUTSTANDING_RECORDS} records / {MAX_OUTSTANDING_BYTES} bytes"
        ));
    }
    let fault_stats = faults.stats();

    println!(
        "chaos: {cycle} cycle(s) in {:.1} s",
        run_started.elapsed().as_secs_f64()
    );
    println!(
        "chaos: records: {} sent, {} stored (receipts), {} stored without a stored receipt, {} failed {:?} (flush: {} failed, {} expired), {} processings",
        log.produced.len(),
        verdict.stored,
        verdict.stored_without_receipt,
        failures.len(),
        failures.iter().take(3).collect::<Vec<_>>(),
        report.failed,
        report.expired,
        verdict.processings
    );
    println!(
        "chaos: duplicates: {} by the consumer (after a moved lease's last checkpoint), {} records stored twice by the producer ({} receipts flagged possibly_duplicated)",
        verdict.consumer_duplicates,
        verdict.producer_duplicates,
        log.produced
            .iter()
            .filter(|p| p.possibly_duplicated)
            .count()
    );
    println!(
        "chaos: failovers (a shard's holding moved to another worker): {}; time to the killed worker's shards being processed again: {}",
        verdict.failovers,
        failover_us
            .iter()
            .map(|us| format!("{:.2} s", *us as f64 / 1e6))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "chaos: worst lag (send to first processing): {:.2} s",
        verify::worst_lag_us(&log) as f64 / 1e6
    );
    for window in &windows {
        let lasted = window.ended_us.saturating_sub(window.started_us);
        println!(
            "chaos: {}{}: every record sent before its end processed {} after it",
            window.name,
            if lasted > 0 {
                format!(" for {:.1} s", lasted as f64 / 1e6)
            } else {
                String::new()
            },
            window
                .recovered_us
                .map_or("not within 60 s".to_owned(), |us| format!(
                    "{:.2} s",
                    us as f64 / 1e6
                ))
        );
    }
    println!(
        "chaos: producer: peak {peak} records outstanding (bound {MAX_OUTSTANDING_RECORDS}, {charged} of {MAX_OUTSTANDING_BYTES} bytes charged; test process peak RSS {}), {} PutRecords calls, errors {:?}, {} timed out; fault proxy: {:?}",
        peak_rss(),
        producer_metrics.put_records_calls,
        producer_metrics.errors_by_code,
        producer_metrics.put_records_timed_out,
        fault_stats
    );
    println!(
        "chaos: connections reset: producer {}, workers' Kinesis {}, workers' DynamoDB {}",
        producer_link.resets(),
        fleet.slots.iter().map(|s| s.kinesis.resets()).sum::<u64>(),
        fleet.slots.iter().map(|s| s.dynamodb.resets()).sum::<u64>()
    );
    // The whole log on a failure, or always with CHAOS_DUMP set.
    if !problems.is_empty() || std::env::var_os("CHAOS_DUMP").is_some() {
        let path = std::env::temp_dir().join(format!("{stream}.log"));
        let mut dump = String::new();
        for window in &windows {
            dump.push_str(&format!("{window:?}\n"));
        }
        for p in &log.produced {
            dump.push_str(&format!("{p:?}\n"));
        }
        for p in &log.processed {
            dump.push_str(&format!("{p:?}\n"));
        }
        for e in &log.events {
            dump.push_str(&format!("{e:?}\n"));
        }
        for (label, status, stderr, _) in &fleet.exits {
            dump.push_str(&format!("exit {label} {status}\n{stderr}\n"));
        }
        let _ = std::fs::write(&path, dump);
        println!("chaos: the whole log is in {}", path.display());
    }
    for problem in problems.iter().take(30) {
        println!("chaos: VIOLATION {problem}");
    }
    assert!(
        problems.is_empty(),
        "chaos: {} violations (first ones printed above)",
        problems.len()
    );
    assert!(verdict.stored > 0);
    faults.shutdown().await;
    integration_tests::delete_stream(&kinesis, &stream).await;
    integration_tests::delete_table(&dynamodb, &application).await;
}
