//! The same worker scenarios read by enhanced fan-out (the fake stream's subscriptions, which
//! end every 20 events): reshards, rebalancing by handoff, a partition, graceful shutdown and
//! subscription failures behave exactly as with polling, and nothing is polled.

use std::time::Duration;

use super::*;
use kinesis_common::ErrorClass as Class;
use kinesis_common::testing::Operation;

fn assert_no_polling(fleet: &Fleet) {
    assert!(fleet.stream.call_count(Operation::SubscribeToShard) > 0);
    assert_eq!(fleet.stream.call_count(Operation::GetRecords), 0);
    assert_eq!(fleet.stream.call_count(Operation::GetShardIterator), 0);
}

/// First and last delivery instants of `shard`.
fn span_of(fleet: &Fleet, shard: &str) -> (Instant, Instant) {
    let times: Vec<Instant> = fleet
        .deliveries()
        .iter()
        .filter(|d| d.shard == shard)
        .map(|d| d.at)
        .collect();
    (
        *times.iter().min().expect("delivered"),
        *times.iter().max().expect("delivered"),
    )
}

#[tokio::test(start_paused = true)]
async fn a_split_and_a_merge_read_by_fan_out_parents_first_once() {
    let fleet = Fleet::new(2);
    let (s0, s1) = (shard_id(0), shard_id(1));
    fleet.stream.put_n(&s0, "s0", 50);
    fleet.stream.put_n(&s1, "s1", 50);
    let w1 = fleet.fan_out_worker("w1", worker_config());
    fleet.wait_delivered(100, Duration::from_secs(30)).await;
    let (c2, c3) = fleet.stream.split(&s0);
    fleet.stream.put_n(&c2, "c2", 20);
    fleet.stream.put_n(&c3, "c3", 20);
    fleet.wait_delivered(140, Duration::from_secs(30)).await;
    let m4 = fleet.stream.merge(&c2, &c3);
    fleet.stream.put_n(&m4, "m4", 10);
    fleet.wait_delivered(150, Duration::from_secs(30)).await;
    let (_, s0_last) = span_of(&fleet, &s0);
    for child in [&c2, &c3] {
        let (first, last) = span_of(&fleet, child);
        assert!(first > s0_last, "{child} started before {s0} ended");
        assert!(
            span_of(&fleet, &m4).0 > last,
            "{m4} started before {child} ended"
        );
    }
    assert_eq!(fleet.duplicates(), 0);
    assert_eq!(fleet.counts().len(), 150);
    for parent in [&s0, &c2, &c3] {
        assert!(
            fleet.events(parent).contains(&Event::ShardEnded),
            "{parent}"
        );
    }
    assert_no_polling(&fleet);
    w1.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn fan_out_workers_rebalance_by_handoff_without_duplicates() {
    let fleet = Fleet::new(4);
    for shard in 0..4 {
        fleet
            .stream
            .put_n(&shard_id(shard), &format!("s{shard}"), 200);
    }
    *fleet.script.processing_time.lock().unwrap() = Duration::from_millis(100);
    let w1 = fleet.fan_out_worker("w1", worker_config());
    tokio::time::sleep(Duration::from_millis(700)).await;
    let w2 = fleet.fan_out_worker("w2", worker_config());
    fleet.wait_delivered(800, Duration::from_secs(120)).await;
    let owners: Vec<Option<String>> = fleet.owners().into_values().collect();
    assert_eq!(
        owners.iter().filter(|o| o.as_deref() == Some("w2")).count(),
        2
    );
    assert_eq!(fleet.duplicates(), 0);
    assert_no_polling(&fleet);
    w1.stop().await.unwrap();
    w2.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_fan_out_worker_cut_off_from_dynamodb_stops_before_another_takes_over() {
    let fleet = Fleet::new(2);
    let w1 = fleet.fan_out_worker("w1", worker_config());
    let producer = {
        let stream = fleet.stream.clone();
        tokio::spawn(async move {
            for tick in 0.. {
                stream.put_n(&shard_id(0), &format!("a{tick}"), 1);
                stream.put_n(&shard_id(1), &format!("b{tick}"), 1);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    fleet.wait_delivered(40, Duration::from_secs(30)).await;
    let w2 = fleet.fan_out_worker("w2", worker_config());
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
    w1.store.faults().unreachable = true;
    let cut_off = Instant::now();
    wait_for("w2 took over", Duration::from_secs(30), || {
        fleet.lease(&w1_shard).unwrap().lease_owner.as_deref() == Some("w2")
    })
    .await;
    let taken = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let last_w1 = fleet
        .deliveries()
        .iter()
        .filter(|d| d.worker == "w1" && d.shard == w1_shard)
        .map(|d| d.at)
        .max()
        .unwrap();
    assert!(last_w1 < taken, "w1 delivered after w2 took the lease");
    assert!(last_w1 - cut_off < FAILOVER, "{:?}", last_w1 - cut_off);
    producer.abort();
    w1.store.faults().unreachable = false;
    w2.stop().await.unwrap();
    w1.stop().await.unwrap();
    assert_no_polling(&fleet);
}

#[tokio::test(start_paused = true)]
async fn graceful_shutdown_of_a_fan_out_worker_checkpoints_and_hands_back() {
    let fleet = Fleet::new(2);
    fleet.stream.put_n(&shard_id(0), "a", 30);
    fleet.stream.put_n(&shard_id(1), "b", 30);
    // Subscriptions are refused a few times first (ResourceInUse, throttling): retried.
    fleet
        .stream
        .fail(Operation::SubscribeToShard, Class::Transient, 3);
    fleet
        .stream
        .fail(Operation::SubscribeToShard, Class::Throttled, 2);
    let w1 = fleet.fan_out_worker("w1", worker_config());
    fleet.wait_delivered(60, Duration::from_secs(30)).await;
    w1.stop().await.unwrap();
    for shard in [shard_id(0), shard_id(1)] {
        assert!(fleet.events(&shard).contains(&Event::ShutdownRequested));
        assert_eq!(
            fleet.lease(&shard).unwrap().lease_owner,
            None,
            "handed back"
        );
    }
    assert_eq!(fleet.duplicates(), 0);
    // A new worker resumes after the checkpoints: nothing again.
    fleet.stream.put_n(&shard_id(0), "c", 5);
    let w2 = fleet.fan_out_worker("w2", worker_config());
    fleet.wait_delivered(65, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fleet.duplicates(), 0);
    w2.stop().await.unwrap();
    assert_no_polling(&fleet);
}
