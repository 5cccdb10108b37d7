//! Several workers on one table: rebalancing by graceful handoff, DynamoDB outages and
//! partitions, metrics.

use std::sync::OnceLock;
use std::time::Duration;

use super::*;
use crate::metrics::recorder::TestRecorder;

/// Two workers started together on a 4-shard stream with records already in it: the second
/// takes half the leases while the first is reading them from TRIM_HORIZON. Returns the
/// records delivered twice.
async fn rebalance_duplicates(graceful: bool) -> usize {
    let fleet = Fleet::new(4);
    for shard in 0..4 {
        fleet
            .stream
            .put_n(&shard_id(shard), &format!("s{shard}"), 200);
    }
    *fleet.script.processing_time.lock().unwrap() = Duration::from_millis(100);
    let config = WorkerConfig {
        polling: worker_config().polling.max_records(10),
        ..worker_config()
    };
    let coordinator = CoordinatorConfig::builder()
        .failover_time(FAILOVER)
        .renew_interval(RENEW)
        .take_interval(TAKE)
        .graceful_handoff(graceful)
        .build()
        .unwrap();
    let w1 = fleet.worker_with("w1", config.clone(), coordinator.clone());
    tokio::time::sleep(Duration::from_millis(700)).await;
    let w2 = fleet.worker_with("w2", config, coordinator);
    fleet.wait_delivered(800, Duration::from_secs(120)).await;
    let mut owners: Vec<Option<String>> = fleet.owners().into_values().collect();
    owners.sort();
    assert_eq!(
        owners,
        [
            Some("w1".into()),
            Some("w1".into()),
            Some("w2".into()),
            Some("w2".into())
        ]
    );
    let duplicates = fleet.duplicates();
    w1.stop().await.unwrap();
    w2.stop().await.unwrap();
    duplicates
}

#[tokio::test(start_paused = true)]
async fn rebalancing_by_graceful_handoff_delivers_nothing_twice() {
    let stolen = rebalance_duplicates(false).await;
    let handed_over = rebalance_duplicates(true).await;
    println!(
        "records delivered twice by one rebalance: {stolen} with 2.x steals, {handed_over} with handoffs"
    );
    assert!(
        stolen > 0,
        "the 2.x steal repeats what the old holder had not checkpointed"
    );
    assert_eq!(handed_over, 0);
}

#[tokio::test(start_paused = true)]
async fn a_worker_cut_off_from_dynamodb_stops_delivering_before_another_takes_over() {
    let fleet = Fleet::new(2);
    let partition = Partition::run(&fleet, |name| fleet.worker(name)).await;
    let duplicates = partition.duplicates;
    println!(
        "partition: w1 stopped delivering {:?} after the cut, w2 took over {:?} after it; {duplicates} records delivered twice ({} delivered in all)",
        partition.stopped_after, partition.taken_after, partition.delivered
    );
    // What w1 delivered after its last checkpoint write got through is read again by w2: at
    // most what arrives in one validity period.
    assert!(duplicates <= 30, "{duplicates}");
    partition.end().await;
}

#[tokio::test(start_paused = true)]
async fn a_dynamodb_outage_pauses_every_worker_and_nothing_moves_or_repeats_after_it() {
    let fleet = Fleet::new(4);
    let w1 = fleet.worker("w1");
    let w2 = fleet.worker("w2");
    let producer = {
        let stream = fleet.stream.clone();
        tokio::spawn(async move {
            for tick in 0.. {
                for shard in 0..4 {
                    stream.put_n(&shard_id(shard), &format!("{shard}-{tick}"), 1);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    wait_for("2/2", Duration::from_secs(30), || {
        let owners: Vec<Option<String>> = fleet.owners().into_values().collect();
        owners.iter().filter(|o| o.as_deref() == Some("w1")).count() == 2
            && owners.iter().filter(|o| o.as_deref() == Some("w2")).count() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let owners = fleet.owners();
    let takes = fleet.store.writes_of("take").len();
    let duplicates_before = fleet.duplicates();
    w1.store.faults().unreachable = true;
    w2.store.faults().unreachable = true;
    tokio::time::sleep(FAILOVER * 5).await;
    // Nothing is delivered while nobody can renew.
    let during = fleet.deliveries().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fleet.deliveries().len(), during, "delivered while paused");
    w1.store.faults().unreachable = false;
    w2.store.faults().unreachable = false;
    tokio::time::sleep(Duration::from_secs(10)).await;
    producer.abort();
    let produced = {
        let counts = fleet.counts();
        counts.len()
    };
    assert_eq!(fleet.owners(), owners, "no lease changed hands");
    assert_eq!(
        fleet.store.writes_of("take").len(),
        takes,
        "nothing was taken"
    );
    let duplicates = fleet.duplicates() - duplicates_before;
    println!(
        "global outage of 5 failover times: {duplicates} records delivered twice, {produced} distinct"
    );
    assert_eq!(duplicates, 0);
    w1.stop().await.unwrap();
    w2.stop().await.unwrap();
}

fn recorder() -> &'static TestRecorder {
    static RECORDER: OnceLock<TestRecorder> = OnceLock::new();
    RECORDER.get_or_init(|| {
        let recorder = TestRecorder::default();
        metrics::set_global_recorder(recorder.clone()).expect("the only recorder");
        recorder
    })
}

#[tokio::test(start_paused = true)]
async fn a_leaving_shards_gauges_stop_being_reported_never_zeroed() {
    // A zero would say "caught up" for a shard nobody here reads any more (and a maximum over
    // the fleet would hide the worker that took it over and is behind): the series is left
    // alone, and exporters drop it once it stops being updated.
    let recorder = recorder();
    let metrics = ConsumerMetrics::new("gauges");
    metrics.reading("shard-a", Arc::default());
    metrics.behind("shard-a", 5_000);
    metrics.behind("shard-b", 7);
    let key = |name: &str, shard: &str| format!("{name}{{shard={shard},stream=gauges}}");
    let behind = |shard: &str| recorder.gauge(&key("MillisBehindLatest", shard));
    let age = || recorder.gauge(&key("SecondsSinceLastSuccessfulRead", "shard-a"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    metrics.publish_read_ages();
    assert_eq!(behind("shard-a"), Some(5_000.0));
    assert_eq!(age(), Some(2.0));
    metrics.forget("shard-a");
    tokio::time::sleep(Duration::from_secs(2)).await;
    metrics.publish_read_ages();
    assert_eq!(behind("shard-a"), Some(5_000.0), "not zeroed");
    assert_eq!(age(), Some(2.0), "no longer updated");
    assert_eq!(behind("shard-b"), Some(7.0));
    let snapshot = metrics.snapshot(1);
    assert!(!snapshot.millis_behind_latest.contains_key("shard-a"));
    assert!(!snapshot.time_since_last_read.contains_key("shard-a"));
    assert_eq!(snapshot.millis_behind_latest["shard-b"], 7);
}

#[tokio::test(start_paused = true)]
async fn each_shard_reports_the_time_since_its_last_successful_read() {
    let recorder = recorder();
    let fleet = Fleet::new(1);
    let s0 = shard_id(0);
    fleet.stream.put_n(&s0, "a", 5);
    let w1 = fleet.worker("w1");
    fleet.wait_delivered(5, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let key = format!(
        "SecondsSinceLastSuccessfulRead{{shard={s0},stream={}}}",
        fleet.name
    );
    let age = || recorder.gauge(&key);
    // At the tip a read every 100 ms (the idle time of these tests), published every second.
    assert!(age().is_some_and(|s| s < 0.5), "{:?}", age());
    assert!(w1.handle.metrics().time_since_last_read[&s0] < Duration::from_millis(500));
    // Reads fail for a while (retried with backoff inside the source): the age grows.
    fleet.stream.fail(
        kinesis_common::testing::Operation::GetRecords,
        kinesis_common::ErrorClass::Transient,
        30,
    );
    wait_for("an age of 5 s", Duration::from_secs(30), || {
        age().is_some_and(|s| s >= 5.0)
    })
    .await;
    assert!(w1.handle.metrics().time_since_last_read[&s0] >= Duration::from_secs(5));
    // They succeed again: back near 0.
    wait_for("a fresh read", Duration::from_secs(60), || {
        age().is_some_and(|s| s < 1.5)
    })
    .await;
    w1.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn metrics_have_the_java_kcl_names() {
    let recorder = recorder();
    let fleet = Fleet::new(2);
    let (s0, s1) = (shard_id(0), shard_id(1));
    fleet.stream.put_n(&s0, "a", 30);
    fleet.stream.put_n(&s1, "b", 20);
    let w1 = fleet.worker("w1");
    fleet.wait_delivered(50, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stream = fleet.name.clone();
    let key = |name: &str, shard: &str| format!("{name}{{shard={shard},stream={stream}}}");
    assert!(recorder.counter(&key("RecordsProcessed", &s0)).unwrap() >= 30);
    assert!(recorder.counter(&key("DataBytesProcessed", &s1)).unwrap() >= 20 * 3);
    assert!(
        !recorder
            .histogram(&key("RecordProcessor.processRecords.Time", &s0))
            .is_empty()
    );
    assert_eq!(recorder.gauge(&key("MillisBehindLatest", &s0)), Some(0.0));
    // Throttled reads and expired iterators are counted per shard.
    fleet.stream.fail(
        kinesis_common::testing::Operation::GetRecords,
        kinesis_common::ErrorClass::Throttled,
        2,
    );
    fleet.stream.expire_iterators();
    fleet.stream.put_n(&s0, "c", 5);
    fleet.wait_delivered(55, Duration::from_secs(30)).await;
    let sum = |name: &str| {
        recorder.counter(&key(name, &s0)).unwrap_or(0)
            + recorder.counter(&key(name, &s1)).unwrap_or(0)
    };
    // Counted when each shard's next read returns (after its backoff).
    wait_for("throttles counted", Duration::from_secs(10), || {
        sum("GetRecords.Throttled") >= 2
    })
    .await;
    wait_for("expired iterators counted", Duration::from_secs(10), || {
        sum("GetRecords.ExpiredIterator") >= 1
    })
    .await;
    assert!(recorder.gauge("CurrentLeases{table=memory}").is_some());
    assert!(
        recorder
            .gauge("TargetLeases{table=memory}")
            .is_some_and(|target| target >= 1.0)
    );
    assert!(recorder.counter("TakenLeases{table=memory}").unwrap() >= 2);
    w1.stop().await.unwrap();
}
