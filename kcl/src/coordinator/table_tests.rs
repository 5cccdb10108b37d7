//! The lease coordinator against DynamoDB Local (`./scripts/emulators.sh start`;
//! `scripts/test.sh` starts it). Here rather than in `kcl/tests/` because the tests seed and
//! move leases with crate-private writes. Without the emulator they fail at once saying how
//! to start it: `cargo test -p kinesis-kcl --lib -- --skip table_tests` runs the unit tests alone.
//!
//! Short timings (failover 1.5 s, renew 500 ms, take every 300 ms) keep each test to a few
//! seconds. Tests poll for the states they expect instead of sleeping fixed guesses, and work
//! in their own table, so they run in parallel. Measured times are printed (`--nocapture`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::coordinator::tests::{answer_handoffs, poll_until};
use crate::coordinator::{CoordinatorConfig, LeaseCoordinator};
use crate::lease::{Checkpoint, Lease, LeaseTable};
use aws_sdk_dynamodb::Client;

const FAILOVER: Duration = Duration::from_millis(1500);
const RENEW: Duration = Duration::from_millis(500);
const TAKE: Duration = Duration::from_millis(300);
const POLL: Duration = Duration::from_millis(25);

fn config(failover: Duration) -> CoordinatorConfig {
    CoordinatorConfig::builder()
        .failover_time(failover)
        .take_interval(TAKE)
        .build()
        .expect("valid config")
}

fn shard(i: usize) -> String {
    format!("shardId-{i:012}")
}

/// A fresh lease table with `leases` unowned leases.
async fn new_table(leases: usize) -> (Client, LeaseTable) {
    let client = integration_tests::dynamodb_client().await;
    let table = LeaseTable::new(
        client.clone(),
        integration_tests::unique_name("kcl-coordinator"),
    )
    .with_poll_interval(integration_tests::POLL_INTERVAL)
    .with_active_timeout(integration_tests::ACTIVE_TIMEOUT);
    table.create_if_missing().await.expect("create table");
    for i in 0..leases {
        table
            .create_if_absent(&Lease::new(shard(i), Checkpoint::TrimHorizon))
            .await
            .expect("create lease");
    }
    (client, table)
}

/// One worker: its coordinator and every map its subscriber saw.
struct Worker {
    id: String,
    coordinator: LeaseCoordinator,
    seen: Arc<Mutex<Vec<BTreeMap<String, Lease>>>>,
}

impl Worker {
    fn start(table: &LeaseTable, id: &str, config: CoordinatorConfig) -> Self {
        let coordinator =
            LeaseCoordinator::new(table.clone(), id, config).expect("valid coordinator");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut rx = coordinator.subscribe();
        let out = Arc::clone(&seen);
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let value = rx.borrow_and_update().clone();
                out.lock().expect("recorder lock").push(value);
            }
        });
        coordinator.start().expect("start");
        // Answer handoffs as a scheduler does (stop processing, checkpoint, let go): here
        // nothing is processed, so let go at once.
        answer_handoffs(&coordinator, None);
        Self {
            id: id.to_owned(),
            coordinator,
            seen,
        }
    }

    fn held(&self) -> usize {
        self.coordinator.held_leases().len()
    }

    fn ever_published(&self, key: &str) -> bool {
        self.seen
            .lock()
            .expect("recorder lock")
            .iter()
            .any(|map| map.contains_key(key))
    }
}

/// Lease key → owner, from the table.
async fn owners(table: &LeaseTable) -> BTreeMap<String, Option<String>> {
    table
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|lease| (lease.lease_key, lease.lease_owner))
        .collect()
}

/// Whether every worker's held set is exactly what the table says it owns.
async fn consistent(table: &LeaseTable, workers: &[&Worker]) -> bool {
    let owners = owners(table).await;
    workers.iter().all(|worker| {
        let in_table: Vec<&String> = owners
            .iter()
            .filter(|(_, owner)| owner.as_deref() == Some(worker.id.as_str()))
            .map(|(key, _)| key)
            .collect();
        let held = worker.coordinator.held_leases();
        in_table.len() == held.len() && in_table.iter().all(|key| held.contains_key(*key))
    })
}

/// Sorted counts of leases owned by each worker, from the table.
async fn table_split(table: &LeaseTable, workers: &[&Worker]) -> Vec<usize> {
    let owners = owners(table).await;
    let mut counts: Vec<usize> = workers
        .iter()
        .map(|w| {
            owners
                .values()
                .filter(|owner| owner.as_deref() == Some(w.id.as_str()))
                .count()
        })
        .collect();
    counts.sort_unstable();
    counts
}

/// The most taking cycles any of `workers` has run.
fn max_cycles(workers: &[&Worker]) -> u64 {
    workers
        .iter()
        .map(|w| w.coordinator.stats().take_cycles)
        .max()
        .unwrap_or(0)
}

/// Sorted held counts.
fn split(workers: &[&Worker]) -> Vec<usize> {
    let mut counts: Vec<usize> = workers.iter().map(|w| w.held()).collect();
    counts.sort_unstable();
    counts
}

/// Polls `condition` until it holds; returns the time it took. Panics after `limit`.
async fn wait_until(what: &str, limit: Duration, condition: impl AsyncFnMut() -> bool) -> Duration {
    poll_until(what, limit, POLL, condition).await
}

async fn stop(workers: &[&Worker]) {
    for worker in workers {
        worker.coordinator.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_split_eight_leases_evenly_and_stay_there() {
    let (client, table) = new_table(8).await;
    let started = Instant::now();
    let a = Worker::start(&table, "worker-a", config(FAILOVER));
    let b = Worker::start(&table, "worker-b", config(FAILOVER));
    let c = Worker::start(&table, "worker-c", config(FAILOVER));
    let all = [&a, &b, &c];

    // The table reaches the split first; the held sets agree once every victim of a steal
    // has noticed (at its next renewal).
    let mut in_table = None;
    let mut cycles_in_table = 0;
    wait_until("a 3/3/2 split", Duration::from_secs(10), async || {
        if in_table.is_none() && table_split(&table, &all).await == [2, 3, 3] {
            in_table = Some(started.elapsed());
            cycles_in_table = max_cycles(&all);
        }
        split(&all) == [2, 3, 3] && consistent(&table, &all).await
    })
    .await;
    let converged = started.elapsed();
    let stolen: u64 = all.iter().map(|w| w.coordinator.stats().stolen).sum();
    eprintln!(
        "3 workers x 8 leases, started together: 3/3/2 in the table after {:?} (by take \
         cycle {cycles_in_table} of the busiest worker), in every held set after \
         {converged:?}; {stolen} steals",
        in_table.unwrap_or(converged)
    );

    // Stable: over several take intervals and more than a failover time, nothing moves.
    let before: Vec<_> = all.iter().map(|w| w.coordinator.held_leases()).collect();
    let stats_before: Vec<_> = all.iter().map(|w| w.coordinator.stats()).collect();
    tokio::time::sleep(FAILOVER + TAKE * 4).await;
    for (worker, (before, old)) in all.iter().zip(before.iter().zip(&stats_before)) {
        let stats = worker.coordinator.stats();
        assert_eq!(stats.taken, old.taken, "{} took more: {stats:?}", worker.id);
        assert_eq!(stats.lost, old.lost, "{} lost leases: {stats:?}", worker.id);
        assert!(stats.take_cycles >= old.take_cycles + 4);
        let now = worker.coordinator.held_leases();
        assert_eq!(
            now.keys().collect::<Vec<_>>(),
            before.keys().collect::<Vec<_>>(),
            "{}",
            worker.id
        );
        assert!(stats.renewals > old.renewals);
    }
    assert!(consistent(&table, &all).await);
    stop(&all).await;
    integration_tests::delete_table(&client, table.table_name()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_leases_move_after_the_failover_time() {
    let (client, table) = new_table(8).await;
    let a = Worker::start(&table, "worker-a", config(FAILOVER));
    let b = Worker::start(&table, "worker-b", config(FAILOVER));
    let c = Worker::start(&table, "worker-c", config(FAILOVER));
    let all = [&a, &b, &c];
    wait_until("a 3/3/2 split", Duration::from_secs(10), async || {
        split(&all) == [2, 3, 3] && consistent(&table, &all).await
    })
    .await;

    // The most loaded worker dies: its tasks are aborted, its leases stay in the table.
    let (dead, survivors) = if a.held() == 3 {
        (&a, [&b, &c])
    } else {
        (&b, [&a, &c])
    };
    let orphans: Vec<String> = dead.coordinator.held_leases().into_keys().collect();
    let lost_before: Vec<u64> = survivors
        .iter()
        .map(|w| w.coordinator.stats().lost)
        .collect();
    dead.coordinator.abort();
    let died = Instant::now();

    let mut first_move = None;
    let all_moved = wait_until("survivors at 4/4", FAILOVER * 4, async || {
        let owners = owners(&table).await;
        let moved = orphans
            .iter()
            .filter(|key| owners[*key].as_deref() != Some(dead.id.as_str()))
            .count();
        if moved > 0 && first_move.is_none() {
            first_move = Some(died.elapsed());
        }
        moved == orphans.len()
            && split(&survivors) == [4, 4]
            && consistent(&table, &survivors).await
    })
    .await;
    let first_move = first_move.unwrap_or(all_moved);
    eprintln!(
        "dead worker: first lease moved after {first_move:?}, all at 4/4 after {all_moved:?} \
         (failover {FAILOVER:?}, take interval {TAKE:?})"
    );
    // Not before the failover time (less one renew interval: the dead worker's last renewal
    // may predate its death by that much)...
    assert!(first_move >= FAILOVER - RENEW, "moved after {first_move:?}");
    // ...and within a few take intervals after it.
    assert!(
        all_moved <= FAILOVER + TAKE * 5,
        "all moved after {all_moved:?}"
    );
    for (survivor, lost) in survivors.iter().zip(lost_before) {
        assert_eq!(survivor.coordinator.stats().lost, lost, "{}", survivor.id);
    }
    stop(&survivors).await;
    integration_tests::delete_table(&client, table.table_name()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_worker_s_leases_move_within_a_take_interval() {
    // A long failover time, to show that released leases do not wait for it.
    let failover = Duration::from_secs(5);
    let (client, table) = new_table(8).await;
    let a = Worker::start(&table, "worker-a", config(failover));
    let b = Worker::start(&table, "worker-b", config(failover));
    wait_until("a 4/4 split", Duration::from_secs(10), async || {
        split(&[&a, &b]) == [4, 4] && consistent(&table, &[&a, &b]).await
    })
    .await;

    let summary = b.coordinator.release_all().await;
    let released = Instant::now();
    assert_eq!(summary.released.len(), 4, "{summary:?}");
    assert!(summary.failed.is_empty(), "{summary:?}");
    b.coordinator.shutdown().await;
    assert_eq!(b.held(), 0);

    wait_until("a holds all 8", failover, async || {
        a.held() == 8 && consistent(&table, &[&a]).await
    })
    .await;
    let moved = released.elapsed();
    eprintln!(
        "graceful release: leases moved after {moved:?} (take interval {TAKE:?}, failover \
         {failover:?})"
    );
    assert!(moved <= TAKE * 3, "moved after {moved:?}");
    stop(&[&a]).await;
    integration_tests::delete_table(&client, table.table_name()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_racing_for_one_lease_exactly_one_holds_it() {
    let (client, table) = new_table(0).await;
    let key = shard(0);
    let rounds = 5;
    let mut real_races = 0;
    for round in 0..rounds {
        table
            .create_if_absent(&Lease::new(key.as_str(), Checkpoint::TrimHorizon))
            .await
            .expect("create lease");
        // Both start together: their first scans both see the lease unowned.
        let a = Worker::start(&table, &format!("a-{round}"), config(FAILOVER));
        let b = Worker::start(&table, &format!("b-{round}"), config(FAILOVER));
        wait_until("one holder", Duration::from_secs(5), async || {
            a.held() + b.held() == 1 && consistent(&table, &[&a, &b]).await
        })
        .await;
        // A few more cycles: still exactly one holder, the same one.
        tokio::time::sleep(TAKE * 4).await;
        let owner = owners(&table).await[&key].clone().expect("owned");
        let (winner, loser) = if owner == a.id { (&a, &b) } else { (&b, &a) };
        assert_eq!(winner.held(), 1);
        assert_eq!(loser.held(), 0);
        assert!(!loser.ever_published(&key), "the loser published the lease");
        assert_eq!(loser.coordinator.stats().taken, 0);
        assert_eq!(winner.coordinator.stats().taken, 1);
        if loser.coordinator.stats().take_failures > 0 {
            real_races += 1;
        }
        stop(&[&a, &b]).await;
        table.delete(&key).await.expect("delete lease");
    }
    eprintln!("racing workers: {real_races} of {rounds} rounds had both workers try the take");
    integration_tests::delete_table(&client, table.table_name()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_whose_counter_keeps_moving_is_never_taken() {
    let (client, table) = new_table(0).await;
    let live_key = shard(0);
    let ghost_key = shard(1);
    for (key, owner) in [(&live_key, "live-owner"), (&ghost_key, "ghost")] {
        let lease = Lease::new(key.as_str(), Checkpoint::TrimHorizon);
        table.create_if_absent(&lease).await.expect("create lease");
        table.take(&lease, owner).await.expect("take");
    }
    // A fake owner renews its lease every 400 ms (under the 1.5 s failover time); any failed
    // renewal means someone took it.
    let fake_owner = {
        let table = table.clone();
        let key = live_key.clone();
        tokio::spawn(async move {
            let mut lease = table.get(&key).await.expect("get").expect("exists");
            loop {
                tokio::time::sleep(Duration::from_millis(400)).await;
                lease = table
                    .renew(&lease)
                    .await
                    .expect("the fake owner's lease was taken");
            }
        })
    };

    let started = Instant::now();
    let worker = Worker::start(&table, "worker", config(FAILOVER));
    // The ghost's lease, never renewed, is taken once its counter stood still a failover time.
    let took = wait_until("the ghost's lease taken", FAILOVER * 4, async || {
        worker.coordinator.held(&ghost_key).is_some()
    })
    .await;
    assert!(took >= FAILOVER, "taken after {took:?}");
    // Watch for three failover times more: the renewed lease stays with its owner.
    tokio::time::sleep(FAILOVER * 3).await;
    assert!(
        !fake_owner.is_finished(),
        "the fake owner stopped: {fake_owner:?}"
    );
    assert_eq!(
        owners(&table).await[&live_key].as_deref(),
        Some("live-owner")
    );
    assert!(!worker.ever_published(&live_key));
    let stats = worker.coordinator.stats();
    assert_eq!((stats.taken, stats.held), (1, 1), "{stats:?}");
    eprintln!(
        "moving counter: ghost lease taken after {took:?}; live lease untouched for {:?}",
        started.elapsed()
    );
    fake_owner.abort();
    stop(&[&worker]).await;
    integration_tests::delete_table(&client, table.table_name()).await;
}
