//! The same worker scenarios read by enhanced fan-out (the fake stream's subscriptions, which
//! end every 20 events): reshards, rebalancing by handoff, a partition, graceful shutdown and
//! subscription failures behave exactly as with polling, and nothing is polled.

use std::time::Duration;

use super::*;
use kinesis_common::testing::Operation;

fn assert_no_polling(fleet: &Fleet) {
    assert!(fleet.stream.call_count(Operation::SubscribeToShard) > 0);
    assert_eq!(fleet.stream.call_count(Operation::GetRecords), 0);
    assert_eq!(fleet.stream.call_count(Operation::GetShardIterator), 0);
}

#[tokio::test(start_paused = true)]
async fn a_split_and_a_merge_read_by_fan_out_parents_first_once() {
    let fleet = Fleet::new(2);
    let (w1, [s0, c2, c3]) =
        split_and_merge(&fleet, || fleet.fan_out_worker("w1", worker_config())).await;
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
    let partition =
        Partition::run(&fleet, |name| fleet.fan_out_worker(name, worker_config())).await;
    partition.end().await;
    assert_no_polling(&fleet);
}

#[tokio::test(start_paused = true)]
async fn graceful_shutdown_of_a_fan_out_worker_checkpoints_and_hands_back() {
    let fleet = Fleet::new(2);
    fleet.stream.put_n(&shard_id(0), "a", 30);
    fleet.stream.put_n(&shard_id(1), "b", 30);
    // Subscriptions are refused a few times first (ResourceInUse, throttling): retried.
    fleet.stream.refuse_a_few_times(Operation::SubscribeToShard);
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
