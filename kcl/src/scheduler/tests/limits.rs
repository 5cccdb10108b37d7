//! Worker-wide limits: the memory budget of decoded batches, and the time a graceful shutdown
//! takes.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::{Fleet, HeldBytes, coordinator_config, hang_processors, shard_id, worker_config};
use crate::coordinator::CoordinatorConfig;
use crate::scheduler::WorkerConfig;

const MIB: usize = 1 << 20;

/// `shards` shards of `per_shard` records of `record` bytes each (one shared buffer), read by
/// polling 4 records per GetRecords call (or by fan-out, 10 records per event), every batch
/// held 1 s by its processor, under `budget` bytes; returns the most data bytes processors
/// held at once.
async fn catch_up(
    shards: u32,
    per_shard: usize,
    record: usize,
    budget: usize,
    fan_out: bool,
) -> usize {
    let fleet = Fleet::new(shards);
    let data = Bytes::from(vec![0u8; record]);
    for shard in 0..shards {
        fleet.stream.put_shared(&shard_id(shard), &data, per_shard);
    }
    let held = Arc::new(HeldBytes::default());
    *fleet.script.held_bytes.lock().unwrap() = Some(held.clone());
    *fleet.script.processing_time.lock().unwrap() = Duration::from_secs(1);
    let base = worker_config();
    let config = WorkerConfig {
        // Read ahead: each shard may hold a batch waiting and one being processed.
        polling: base.polling.clone().max_records(4).prefetch(true),
        batch_memory_budget: NonZeroUsize::new(budget).unwrap(),
        ..base
    };
    let w1 = match fan_out {
        true => fleet.fan_out_worker("w1", config),
        false => fleet.worker_with("w1", config, coordinator_config()),
    };
    let total = shards as usize * per_shard;
    // Every shard progresses: every record is delivered, once.
    let took = fleet.wait_delivered(total, Duration::from_secs(600)).await;
    assert_eq!(fleet.duplicates(), 0);
    w1.stop().await.unwrap();
    let peak = held.peak.load(Ordering::SeqCst);
    println!(
        "{} {shards} shards x {per_shard} x {} KiB, budget {} MiB: peak held {:.1} MiB, all read in {took:?}",
        if fan_out { "fan-out" } else { "polling" },
        record >> 10,
        budget / MIB,
        peak as f64 / MIB as f64
    );
    peak
}

#[tokio::test(start_paused = true)]
async fn a_worker_catching_up_on_many_shards_stays_within_its_batch_memory_budget() {
    // 16 shards of 4 MiB answers with a batch read ahead each would hold 128 MiB at once
    // (64 MiB in the processors alone).
    let budget = 24 * MIB;
    let peak = catch_up(16, 12, MIB, budget, false).await;
    assert!(peak <= budget, "{peak} bytes held at once");
    // The budget is used, not a queue of one: several batches are processed at once.
    assert!(peak >= 2 * 4 * MIB, "{peak}");
}

#[tokio::test(start_paused = true)]
async fn a_budget_smaller_than_one_answer_lets_one_batch_through_at_a_time() {
    let peak = catch_up(6, 8, MIB, MIB, false).await;
    assert_eq!(peak, 4 * MIB, "exactly one 4 MiB batch at a time");
}

#[tokio::test(start_paused = true)]
async fn enhanced_fan_out_stays_within_the_batch_memory_budget_too() {
    // Events of 10 records of 200 KiB (2 MiB): 8 shards holding one event waiting and one
    // being processed would hold 32 MiB.
    let budget = 8 * MIB;
    let peak = catch_up(8, 30, 200 << 10, budget, true).await;
    assert!(peak <= budget, "{peak} bytes held at once");
    assert!(peak >= 2 * (2_000 << 10), "{peak}");
}

#[tokio::test(start_paused = true)]
async fn a_graceful_shutdown_with_default_timeouts_hands_every_lease_back_within_30_s() {
    // 200 leases with the default failover time, renew interval and shutdown timeout; every
    // processor ignores shutdown_requested, one hangs in process_records; every DynamoDB
    // write takes 50 ms.
    const SHARDS: u32 = 200;
    let fleet = Fleet::new(SHARDS);
    for shard in 0..SHARDS {
        fleet
            .stream
            .put_n(&shard_id(shard), &format!("s{shard}"), 1);
    }
    let config = WorkerConfig {
        shutdown_timeout: WorkerConfig::DEFAULT_SHUTDOWN_TIMEOUT,
        processor_timeout: Some(WorkerConfig::DEFAULT_PROCESSOR_TIMEOUT),
        ..worker_config()
    };
    let coordinator = CoordinatorConfig::builder().build().unwrap();
    let w1 = fleet.worker_with("w1", config, coordinator);
    fleet
        .wait_delivered(SHARDS as usize, Duration::from_secs(120))
        .await;
    hang_processors(&fleet, &w1, &shard_id(0)).await;
    w1.store.faults().write_delay = Some(Duration::from_millis(50));
    let started = Instant::now();
    w1.stop().await.unwrap();
    let took = started.elapsed();
    println!("graceful shutdown of {SHARDS} leases, processors not answering: {took:?}");
    assert!(
        took <= WorkerConfig::DEFAULT_SHUTDOWN_TIMEOUT,
        "{took:?} over the shutdown timeout"
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
    let owners = fleet.owners();
    assert_eq!(owners.len(), SHARDS as usize);
    let held: Vec<_> = owners.iter().filter(|(_, owner)| owner.is_some()).collect();
    assert!(
        held.is_empty(),
        "{} leases still owned: {held:?}",
        held.len()
    );
}
