//! Workers against kinesis-mock and DynamoDB Local with short timings: reading everything,
//! splitting shards between workers, failover, graceful hand-back, resharding, restarts inside
//! an aggregate, and no two workers delivering one shard at once.

// Each test file uses part of the shared fleet.
#[allow(dead_code)]
mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use integration_tests::{dynamodb_client, kinesis_client, list_shards};
use kcl::lease::Checkpoint;
use kpl::{Producer, UserRecord};
use support::{Fleet, assert_per_key_order, parent_links, produce, put_flushed};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_reads_everything_aggregated_and_plain() {
    let fleet = Fleet::polling("kcl-one", 2).await;
    let aggregated = fleet.producer().await;
    produce(&aggregated, 0..600, 50).await;
    produce(&fleet.plain_producer().await, 600..700, 50).await;
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
    assert_per_key_order(&log.deliveries, |d| d.worker.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_split_eight_shards_and_survive_a_death() {
    let fleet = Fleet::polling("kcl-three", 8).await;
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
    let mut fleet = Fleet::polling("kcl-graceful", 4).await;
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
    let fleet = Fleet::polling("kcl-reshard", 2).await;
    let all = fleet.split_and_merge(Duration::from_secs(60)).await;
    let log = fleet.log.lock().expect("log");
    assert_eq!(log.deliveries.len(), 900, "nothing lost, nothing twice");
    assert_per_key_order(&log.deliveries, |d| d.worker.as_str());
    // Children start only after their parents ended.
    for (child, parent) in parent_links(&all) {
        if let (Some(child_start), Some(parent_end)) =
            (log.at(child, "start"), log.at(parent, "end"))
        {
            assert!(
                child_start >= parent_end,
                "{child} started before {parent} ended"
            );
        } else if log.at(child, "start").is_some() {
            panic!("{child} started but {parent} never ended");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_inside_an_aggregate() {
    let fleet = Fleet::polling("kcl-restart", 1).await;
    // One aggregate of 50 records.
    let producer = Producer::builder(fleet.stream.as_str())
        .client(kinesis_client().await)
        .linger(Duration::from_secs(5))
        .build()
        .await
        .expect("producer");
    let stored = put_flushed(
        &producer,
        (0..50).map(|i| UserRecord::new("k", format!("record-{i}"))),
    )
    .await;
    let sequence = stored.last().expect("stored").sequence_number.to_string();
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
    let fleet = Fleet::polling("kcl-race", 1).await;
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
    let mut fleet = Fleet::polling("kcl-faults", 2).await;
    // Plain records, small reads: many calls, many faults.
    fleet.max_records = 20;
    let producer = fleet.plain_producer().await;
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
    assert_per_key_order(&log.deliveries, |d| d.worker.as_str());
}
