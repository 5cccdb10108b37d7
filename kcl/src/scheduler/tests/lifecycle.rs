//! The lease lifecycle through resharding: parents before children, shard ends retried (until
//! durable on service failures, `max_shard_end_attempts` calls for a processor that does not
//! store SHARD_END), merges, shards Kinesis no longer has, cleanup exactly once, no lease
//! re-created.

use std::time::Duration;

use super::*;
use crate::scheduler::ShardPhase;
use kinesis_common::testing::Operation;

#[tokio::test(start_paused = true)]
async fn a_split_and_a_merge_read_parents_first_clean_up_once_and_never_recreate_a_lease() {
    let fleet = Fleet::new(2);
    let (w1, [s0, c2, c3]) = split_and_merge(&fleet, || fleet.worker("w1")).await;

    // Finished parents are cleaned up (children past TRIM_HORIZON, parents first), once.
    wait_for("parents deleted", Duration::from_secs(30), || {
        [&s0, &c2, &c3].iter().all(|key| fleet.lease(key).is_none())
    })
    .await;
    let deletes = fleet.store.writes_of("delete");
    for key in [&s0, &c2, &c3] {
        assert_eq!(
            deletes.iter().filter(|k| *k == key).count(),
            1,
            "{key}: {deletes:?}"
        );
    }
    // childShardIds was written on each parent, as the Java KCL does.
    let recorded = fleet.store.writes_of("update_child_shards");
    for key in [&s0, &c2, &c3] {
        assert!(recorded.contains(key), "{key}: {recorded:?}");
    }
    // A finished lease is never renewed.
    let renewals_of_s0 = fleet
        .store
        .writes_of("renew")
        .iter()
        .filter(|k| **k == s0)
        .count();
    // Shard sync runs every second: ten more syncs never bring the deleted leases back.
    tokio::time::sleep(Duration::from_secs(10)).await;
    for key in [&s0, &c2, &c3] {
        assert!(fleet.lease(key).is_none(), "{key} was leased again");
    }
    assert_eq!(
        fleet
            .store
            .writes_of("renew")
            .iter()
            .filter(|k| **k == s0)
            .count(),
        renewals_of_s0
    );
    assert_eq!(
        fleet
            .store
            .writes_of("create")
            .iter()
            .filter(|k| **k == s0)
            .count(),
        1
    );
    assert_eq!(fleet.counts().len(), 150);
    w1.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_shard_end_is_retried_until_shard_end_is_stored_and_only_then_do_children_start() {
    let fleet = Fleet::new(1);
    let s0 = shard_id(0);
    fleet.stream.put_n(&s0, "s0", 10);
    let (c1, _) = fleet.stream.split(&s0);
    fleet.stream.put_n(&c1, "c1", 5);
    // The processor returns from shard_ended twice without checkpointing.
    fleet
        .script
        .skip_shard_end
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let w1 = fleet.worker("w1");
    fleet.wait_delivered(15, Duration::from_secs(30)).await;
    let ended = fleet
        .events(&s0)
        .iter()
        .filter(|e| **e == Event::ShardEnded)
        .count();
    assert_eq!(ended, 3, "called again until SHARD_END was stored");
    assert_eq!(checkpoint(&fleet, &s0), Some(Checkpoint::ShardEnd));
    assert_eq!(fleet.lease(&s0).unwrap().child_shard_ids.len(), 2);
    let (_, s0_last) = fleet.delivery_span(&s0).unwrap();
    let (c1_first, _) = fleet.delivery_span(&c1).unwrap();
    assert!(c1_first > s0_last);
    assert_eq!(fleet.duplicates(), 0);
    w1.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_processor_that_never_stores_shard_end_is_given_up_on_after_a_bounded_number_of_tries() {
    let fleet = Fleet::new(1);
    let s0 = shard_id(0);
    fleet.stream.put_n(&s0, "s0", 10);
    let (c1, _) = fleet.stream.split(&s0);
    fleet.stream.put_n(&c1, "c1", 5);
    // shard_ended always returns without checkpointing.
    fleet
        .script
        .skip_shard_end
        .store(usize::MAX, std::sync::atomic::Ordering::SeqCst);
    let config = WorkerConfig {
        shard_end_attempts: std::num::NonZeroU32::new(3).unwrap(),
        ..worker_config()
    };
    let w1 = fleet.worker_with("w1", config, coordinator_config());
    fleet.wait_delivered(10, Duration::from_secs(30)).await;
    let ended = || {
        fleet
            .events(&s0)
            .iter()
            .filter(|e| **e == Event::ShardEnded)
            .count()
    };
    wait_for("three shard_ended calls", Duration::from_secs(30), || {
        ended() >= 3
    })
    .await;
    // Then no more, however long the worker runs (backoff at most 1 s here).
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(ended(), 3, "tried a bounded number of times");
    let state = w1.handle.state();
    assert_eq!(state.shards[&s0].phase, ShardPhase::ShardEndFailed);
    let metrics = w1.handle.metrics();
    assert_eq!(metrics.shard_ends_abandoned, 1);
    // The shard stays unfinished and held (its children wait), visibly.
    assert_ne!(checkpoint(&fleet, &s0), Some(Checkpoint::ShardEnd));
    assert_eq!(fleet.owners()[&s0].as_deref(), Some("w1"));
    assert!(
        fleet.delivery_span(&c1).is_none(),
        "children wait for SHARD_END"
    );
    // A graceful shutdown still hands the lease back: the next worker tries again.
    w1.stop().await.unwrap();
    assert_eq!(fleet.owners()[&s0], None);
}

#[tokio::test(start_paused = true)]
async fn a_shard_end_whose_checkpoint_write_keeps_failing_is_not_given_up_on() {
    // The processor does checkpoint SHARD_END; the table refuses the write for longer than
    // the attempts allowed to a processor: not the processor's fault, retried until stored.
    let fleet = Fleet::new(1);
    let s0 = shard_id(0);
    fleet.stream.put_n(&s0, "s0", 10);
    let config = WorkerConfig {
        shard_end_attempts: std::num::NonZeroU32::new(2).unwrap(),
        ..worker_config()
    };
    let w1 = fleet.worker_with("w1", config, coordinator_config());
    fleet.wait_delivered(10, Duration::from_secs(30)).await;
    w1.store.faults().fail_next.insert("checkpoint", 5);
    let (c1, _) = fleet.stream.split(&s0);
    fleet.stream.put_n(&c1, "c1", 3);
    fleet.wait_delivered(13, Duration::from_secs(60)).await;
    assert_eq!(checkpoint(&fleet, &s0), Some(Checkpoint::ShardEnd));
    assert_eq!(w1.handle.metrics().shard_ends_abandoned, 0);
    w1.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_checkpoint_at_the_last_record_in_shard_ended_counts_as_shard_end() {
    let fleet = Fleet::new(1);
    let s0 = shard_id(0);
    fleet.stream.put_n(&s0, "s0", 10);
    let (c1, c2) = fleet.stream.split(&s0);
    fleet.stream.put_n(&c1, "c1", 5);
    fleet.stream.put_n(&c2, "c2", 5);
    *fleet.script.shard_end_by_checkpoint.lock().unwrap() = true;
    let w1 = fleet.worker("w1");
    fleet.wait_delivered(20, Duration::from_secs(30)).await;
    assert_eq!(checkpoint(&fleet, &s0), Some(Checkpoint::ShardEnd));
    let ended = fleet
        .events(&s0)
        .iter()
        .filter(|e| **e == Event::ShardEnded)
        .count();
    assert_eq!(ended, 1);
    w1.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_children_start_at_once_on_the_worker_that_finished_their_parent() {
    let fleet = Fleet::new(1);
    let s0 = shard_id(0);
    fleet.stream.put_n(&s0, "s0", 10);
    let (c1, c2) = fleet.stream.split(&s0);
    fleet.stream.put_n(&c1, "c1", 1);
    fleet.stream.put_n(&c2, "c2", 1);
    // Take cycles far apart: only the wake-up at the shard end can take the children fast.
    let coordinator = CoordinatorConfig::builder()
        .failover_time(FAILOVER)
        .renew_interval(RENEW)
        .take_interval(Duration::from_secs(60))
        .build()
        .unwrap();
    let w1 = fleet.worker_with("w1", worker_config(), coordinator);
    fleet.wait_delivered(12, Duration::from_secs(30)).await;
    let (_, parent_last) = fleet.delivery_span(&s0).unwrap();
    let (child_first, _) = fleet.delivery_span(&c1).unwrap();
    let latency = child_first - parent_last;
    println!("parent's last record to child's first record: {latency:?}");
    assert!(latency < Duration::from_secs(1), "{latency:?}");
    w1.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_shard_kinesis_says_does_not_exist_is_ended_and_its_children_proceed() {
    let fleet = Fleet::new(1);
    let s0 = shard_id(0);
    fleet.stream.put_n(&s0, "s0", 10);
    let (c1, c2) = fleet.stream.split(&s0);
    fleet.stream.put_n(&c1, "c1", 5);
    fleet.stream.put_n(&c2, "c2", 5);
    // The application was behind: s0 has a lease, but Kinesis trimmed it.
    fleet
        .store
        .insert([Lease::new(s0.clone(), Checkpoint::sequence("100003", 0))]);
    fleet.stream.remove(&s0);
    let w1 = fleet.worker("w1");
    fleet.wait_delivered(10, Duration::from_secs(30)).await;
    assert!(fleet.counts().keys().all(|k| !k.starts_with("s0")));
    wait_for("s0 cleaned up", Duration::from_secs(30), || {
        fleet.lease(&s0).is_none()
    })
    .await;
    // s0 was taken once, ended, deleted: no ping-pong.
    assert_eq!(
        fleet
            .store
            .writes_of("take")
            .iter()
            .filter(|k| **k == s0)
            .count(),
        1
    );
    assert!(fleet.events(&s0).contains(&Event::ShardEnded));
    w1.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_merge_child_is_created_only_once_its_other_parent_has_a_lease() {
    // s0 splits into c2, c3; c3 merges with s1 into m4. s1 is short and ends first; m4 must
    // wait until c3 (created when s0 ends) has a lease, or it would start before c3 is read.
    let fleet = Fleet::new(2);
    let (s0, s1) = (shard_id(0), shard_id(1));
    fleet.stream.put_n(&s0, "s0", 40);
    fleet.stream.put_n(&s1, "s1", 1);
    let (c2, c3) = fleet.stream.split(&s0);
    fleet.stream.put_n(&c2, "c2", 3);
    fleet.stream.put_n(&c3, "c3", 3);
    let m4 = fleet.stream.merge(&c3, &s1);
    fleet.stream.put_n(&m4, "m4", 3);
    *fleet.script.processing_time.lock().unwrap() = Duration::from_millis(200);
    let config = WorkerConfig {
        polling: worker_config().polling.max_records(2),
        ..worker_config()
    };
    let w1 = fleet.worker_with("w1", config, coordinator_config());
    // s1 ends long before s0: its shard end waits.
    wait_for("s1 waiting on c3's lease", Duration::from_secs(30), || {
        w1.handle
            .state()
            .shards
            .get(&s1)
            .is_some_and(|s| s.phase == ShardPhase::ShardEnding)
    })
    .await;
    assert!(fleet.lease(&m4).is_none());
    fleet.wait_delivered(50, Duration::from_secs(60)).await;
    let (_, c3_last) = fleet.delivery_span(&c3).unwrap();
    let (m4_first, _) = fleet.delivery_span(&m4).unwrap();
    assert!(m4_first > c3_last, "m4 before c3 ended");
    assert_eq!(fleet.duplicates(), 0);
    w1.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_worker_state_tells_waiting_children_tip_and_takeable_leases_apart() {
    let fleet = Fleet::new(1);
    let s0 = shard_id(0);
    fleet.stream.put_n(&s0, "s0", 5);
    let (c1, _c2) = fleet.stream.split(&s0);
    // s0 is held by a worker that is not running (it died): c1 has a lease and waits.
    let mut parent = Lease::new(s0.clone(), Checkpoint::TrimHorizon);
    parent.lease_owner = Some("dead".into());
    let mut child = Lease::new(c1.clone(), Checkpoint::TrimHorizon);
    child.parent_shard_ids = vec![s0.clone()];
    fleet.store.insert([parent, child]);
    let w1 = fleet.worker("w1");
    wait_for("c1 held", Duration::from_secs(10), || {
        w1.handle.state().shards.contains_key(&c1)
    })
    .await;
    wait_for("c1 waiting", Duration::from_secs(10), || {
        matches!(
            w1.handle.state().shards[&c1].phase,
            ShardPhase::WaitingOnParents { .. }
        )
    })
    .await;
    let state = w1.handle.state();
    assert_eq!(
        state.idle_since(),
        None,
        "a child waiting on its parent is not idle"
    );
    // Once the dead worker's lease expires it is takeable, then taken and read.
    fleet.wait_delivered(5, Duration::from_secs(30)).await;
    // Everything read: idle, and stays idle.
    wait_for("idle", Duration::from_secs(30), || {
        w1.handle.state().idle_since().is_some()
    })
    .await;
    let state = w1.handle.refreshed_state(Duration::from_secs(5)).await;
    assert_eq!(state.takeable_leases, 0);
    assert!(state.shards.values().all(|s| s.at_tip_since.is_some()));
    assert!(fleet.stream.call_count(Operation::GetRecords) > 0);
    w1.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn failed_writes_at_a_shard_end_are_retried_until_shard_end_is_stored() {
    let fleet = Fleet::new(1);
    let s0 = shard_id(0);
    fleet.stream.put_n(&s0, "s0", 10);
    let w1 = fleet.worker("w1");
    fleet.wait_delivered(10, Duration::from_secs(30)).await;
    // The table fails the next SHARD_END checkpoint twice and the childShardIds write once.
    w1.store.faults().fail_next.insert("checkpoint", 2);
    w1.store.faults().fail_next.insert("UpdateItem", 1);
    let (c1, c2) = fleet.stream.split(&s0);
    fleet.stream.put_n(&c1, "c1", 3);
    fleet.stream.put_n(&c2, "c2", 3);
    fleet.wait_delivered(16, Duration::from_secs(30)).await;
    assert_eq!(checkpoint(&fleet, &s0), Some(Checkpoint::ShardEnd));
    let ended = fleet
        .events(&s0)
        .iter()
        .filter(|e| **e == Event::ShardEnded)
        .count();
    assert!(
        ended >= 3,
        "shard_ended called again after each failed write: {ended}"
    );
    let (_, s0_last) = fleet.delivery_span(&s0).unwrap();
    assert!(fleet.delivery_span(&c1).unwrap().0 > s0_last);
    assert_eq!(fleet.duplicates(), 0);
    w1.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn initialize_receives_the_pending_checkpoint_and_its_state() {
    let fleet = Fleet::new(1);
    let s0 = shard_id(0);
    let sequences = fleet.stream.put_n(&s0, "r", 10);
    let mut lease = Lease::new(s0.clone(), Checkpoint::sequence(sequences[2].clone(), 0));
    lease.pending_checkpoint = Some(Checkpoint::sequence(sequences[6].clone(), 0));
    lease.pending_checkpoint_state = Some(b"app state".to_vec());
    fleet.store.insert([lease]);
    let w1 = fleet.worker("w1");
    fleet.wait_delivered(7, Duration::from_secs(30)).await;
    let init = fleet
        .events(&s0)
        .into_iter()
        .find_map(|e| match e {
            Event::Initialize(input) => Some(input),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        init.checkpoint,
        Checkpoint::sequence(sequences[2].clone(), 0)
    );
    assert_eq!(
        init.pending_checkpoint,
        Some(Checkpoint::sequence(sequences[6].clone(), 0))
    );
    assert_eq!(
        init.pending_checkpoint_state.as_deref(),
        Some(&b"app state"[..])
    );
    // Records after the checkpoint are delivered again, the pending one included.
    assert!(fleet.counts().contains_key("r-3"));
    assert!(!fleet.counts().contains_key("r-2"));
    w1.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_took_every_lease_is_idle_before_its_next_take_cycle() {
    // The scan that found the leases takeable is the one the worker took them in: what it
    // holds must not count as left to take until a later scan (a take interval away) says so.
    let fleet = Fleet::new(2);
    fleet.stream.put_n(&shard_id(0), "s0", 3);
    fleet.stream.put_n(&shard_id(1), "s1", 3);
    let take_interval = Duration::from_secs(60);
    let coordinator = CoordinatorConfig::builder()
        .failover_time(FAILOVER)
        .renew_interval(RENEW)
        .take_interval(take_interval)
        .build()
        .unwrap();
    let w1 = fleet.worker_with("w1", worker_config(), coordinator);
    fleet.wait_delivered(6, Duration::from_secs(30)).await;
    let started = Instant::now();
    let idle = Duration::from_secs(1);
    wait_for("idle", take_interval / 2, || {
        w1.handle.state().is_idle_for(idle, Instant::now())
    })
    .await;
    assert!(started.elapsed() < take_interval / 2);
    assert_eq!(w1.handle.state().takeable_leases, 0);
    w1.stop().await.unwrap();
}
