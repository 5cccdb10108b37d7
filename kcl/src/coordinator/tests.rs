//! The coordinator's loops over an in-memory lease store, in paused tokio time: every timing
//! below is exact and the tests take milliseconds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Barrier;
use tokio::time::Instant;

use super::*;
use crate::lease::memory::MemoryStore;
use crate::lease::{Checkpoint, Lease};

const FAILOVER: Duration = Duration::from_secs(3);
const RENEW: Duration = Duration::from_secs(1);
const TAKE: Duration = Duration::from_millis(500);
/// [`wait_for`] notices a condition up to one poll late.
const POLL: Duration = Duration::from_millis(10);

fn config() -> CoordinatorConfig {
    CoordinatorConfig::builder()
        .failover_time(FAILOVER)
        .renew_interval(RENEW)
        .take_interval(TAKE)
        .build()
        .unwrap()
}

fn lease(key: &str, owner: Option<&str>, counter: u64) -> Lease {
    let mut lease = Lease::new(key, Checkpoint::TrimHorizon);
    lease.lease_owner = owner.map(str::to_owned);
    lease.lease_counter = counter;
    lease
}

fn unowned(n: usize) -> Vec<Lease> {
    (0..n).map(|i| lease(&format!("l{i}"), None, 0)).collect()
}

fn coordinator(store: &MemoryStore, worker: &str) -> LeaseCoordinator {
    coordinator_with(store, worker, config())
}

fn coordinator_with(
    store: &MemoryStore,
    worker: &str,
    config: CoordinatorConfig,
) -> LeaseCoordinator {
    LeaseCoordinatorBuilder::from_store(Arc::new(store.clone()), worker)
        .config(config)
        .build()
        .unwrap()
}

/// The 2.x behaviour: steals take the lease at once.
fn steal_config() -> CoordinatorConfig {
    CoordinatorConfig::builder()
        .failover_time(FAILOVER)
        .renew_interval(RENEW)
        .take_interval(TAKE)
        .graceful_handoff(false)
        .build()
        .unwrap()
}

/// Polls `condition` every `every`; returns how long it took. Panics after `limit`. (Tokio's
/// clock: paused time in the unit tests, real time against DynamoDB Local.)
pub(crate) async fn poll_until(
    what: &str,
    limit: Duration,
    every: Duration,
    mut condition: impl AsyncFnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if condition().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(every).await;
    }
}

/// Polls `condition` every 10 ms; returns how long it took. Panics after `limit`.
pub(crate) async fn wait_for(
    what: &str,
    limit: Duration,
    mut condition: impl FnMut() -> bool,
) -> Duration {
    // Not through `poll_until`: an async closure over `condition` would keep the tasks that
    // wait from being `Send`.
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
    start.elapsed()
}

/// Records every value a subscriber sees.
fn record(coordinator: &LeaseCoordinator) -> Arc<Mutex<Vec<BTreeMap<String, Lease>>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut rx = coordinator.subscribe();
    let out = seen.clone();
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let value = rx.borrow_and_update().clone();
            out.lock().unwrap().push(value);
        }
    });
    seen
}

fn held_keys(coordinator: &LeaseCoordinator) -> Vec<String> {
    coordinator.held_leases().into_keys().collect()
}

#[tokio::test(start_paused = true)]
async fn takes_unowned_leases_publishes_and_renews_them() {
    let store = MemoryStore::with_leases(unowned(3));
    let coordinator = coordinator(&store, "w1");
    let mut rx = coordinator.subscribe();
    coordinator.start().unwrap();
    wait_for("3 held", TAKE, || coordinator.held_leases().len() == 3).await;
    rx.changed().await.unwrap();
    assert_eq!(rx.borrow().len(), 3);
    assert!(rx.borrow().values().all(|l| l.is_owned_by("w1")));

    let taken_at = store.get_now("l0").unwrap().lease_counter;
    tokio::time::sleep(RENEW * 3 + Duration::from_millis(100)).await;
    let counter = store.get_now("l0").unwrap().lease_counter;
    assert!(counter >= taken_at + 3, "{taken_at} -> {counter}");
    assert_eq!(coordinator.held("l0").unwrap().lease_counter, counter);
    // The published map holds the leases as acquired: renewals do not change it.
    assert_eq!(rx.borrow()["l0"].lease_counter, taken_at);
    let stats = coordinator.stats();
    assert_eq!(
        (stats.held, stats.taken, stats.stolen, stats.lost),
        (3, 3, 0, 0)
    );
    assert!(stats.renewals >= 9);
    let last = stats.last_take.unwrap();
    assert_eq!((last.leases, last.live_workers, last.target), (3, 1, 3));
    coordinator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_lease_taken_by_another_worker_is_dropped_at_its_next_renewal() {
    let store = MemoryStore::with_leases(unowned(2));
    let coordinator = coordinator(&store, "w1");
    coordinator.start().unwrap();
    wait_for("2 held", TAKE, || coordinator.held_leases().len() == 2).await;
    let seen = record(&coordinator);

    {
        let mut leases = store.lock();
        let stolen = leases.get_mut("l0").unwrap();
        stolen.lease_owner = Some("thief".into());
        stolen.lease_counter += 1;
    }
    let took = wait_for("l0 dropped", RENEW * 2, || coordinator.held("l0").is_none()).await;
    assert!(took <= RENEW + POLL, "{took:?}");
    assert_eq!(coordinator.stats().lost, 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.last().unwrap().keys().collect::<Vec<_>>(), ["l1"]);
    coordinator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_unrenewable_lease_is_paused_before_the_failover_time_and_resumes_or_is_lost() {
    let store = MemoryStore::with_leases(unowned(1));
    let coordinator = coordinator(&store, "w1");
    coordinator.start().unwrap();
    wait_for("held", TAKE, || coordinator.held("l0").is_some()).await;
    let holding = coordinator.holding("l0").unwrap();
    // Let one renewal happen, then fail every renewal from here on.
    let renewals = coordinator.stats().renewals;
    wait_for("a renewal", RENEW * 2, || {
        coordinator.stats().renewals > renewals
    })
    .await;
    let last_renewal = Instant::now();
    store.faults().renew_transient = true;
    wait_for("paused", FAILOVER * 3, || !coordinator.is_valid(&holding)).await;
    // Paused a tenth of the failover time before another worker could take it, counted from
    // the last renewal that got through (sent at most one poll before it was seen).
    let paused_after = last_renewal.elapsed();
    let validity = FAILOVER - FAILOVER / 10;
    assert!(paused_after <= validity + POLL, "{paused_after:?}");
    assert!(paused_after >= validity - POLL, "{paused_after:?}");
    // Still held (nobody took it), and still renewing in the background.
    tokio::time::sleep(FAILOVER * 2).await;
    assert!(coordinator.held("l0").is_some());
    assert_eq!(coordinator.stats().lost, 0);
    // The table answers again: the next renewal makes the holding valid again.
    store.faults().renew_transient = false;
    wait_for("valid again", RENEW * 2, || coordinator.is_valid(&holding)).await;
    assert_eq!(coordinator.holding("l0").unwrap().epoch, holding.epoch);

    // Cut off again, and this time another worker takes the lease meanwhile: the first
    // renewal that gets through finds it taken, and only then is it dropped.
    store.faults().renew_transient = true;
    wait_for("paused again", FAILOVER * 2, || {
        !coordinator.is_valid(&holding)
    })
    .await;
    {
        let mut leases = store.lock();
        let taken = leases.get_mut("l0").unwrap();
        taken.lease_owner = Some("other".into());
        taken.lease_counter += 1;
    }
    tokio::time::sleep(RENEW * 3).await;
    assert!(
        coordinator.held("l0").is_some(),
        "not dropped while unreachable"
    );
    store.faults().renew_transient = false;
    wait_for("lost", RENEW * 2, || coordinator.held("l0").is_none()).await;
    let stats = coordinator.stats();
    assert!(stats.renew_failures >= 3, "{stats:?}");
    assert_eq!(stats.lost, 1);
    coordinator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_renewal_whose_answer_was_lost_keeps_the_lease() {
    let store = MemoryStore::with_leases(unowned(1));
    let coordinator = coordinator(&store, "w1");
    coordinator.start().unwrap();
    wait_for("held", TAKE, || coordinator.held("l0").is_some()).await;
    let seen = record(&coordinator);

    // The next renewal is applied but its answer lost: the local copy is one behind.
    store.faults().renew_applied_but_failed = true;
    wait_for("a failed renewal", RENEW * 2, || {
        coordinator.stats().renew_failures == 1
    })
    .await;
    store.faults().renew_applied_but_failed = false;
    let stored = store.get_now("l0").unwrap().lease_counter;
    assert_eq!(coordinator.held("l0").unwrap().lease_counter + 1, stored);

    // The following renewal fails its condition, re-reads, and keeps the lease.
    let renewals = coordinator.stats().renewals;
    wait_for("two renewals", RENEW * 3, || {
        coordinator.stats().renewals >= renewals + 2
    })
    .await;
    assert_eq!(coordinator.stats().lost, 0);
    assert_eq!(
        coordinator.held("l0").unwrap().lease_counter,
        store.get_now("l0").unwrap().lease_counter
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "the held set never changed"
    );
    coordinator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn checkpoints_are_serialized_with_renewals() {
    let store = MemoryStore::with_leases(unowned(4));
    // Slow writes: without serialization, renewals and checkpoints would overlap and one of
    // each pair would fail its condition.
    store.faults().write_delay = Some(Duration::from_millis(300));
    let coordinator = coordinator(&store, "w1");
    coordinator.start().unwrap();
    wait_for("4 held", TAKE * 10, || coordinator.held_leases().len() == 4).await;

    let mut writers = Vec::new();
    for key in ["l0", "l1", "l2", "l3"] {
        let coordinator = coordinator.clone();
        writers.push(tokio::spawn(async move {
            for seq in 1..=20u64 {
                let stored = coordinator
                    .checkpoint(key, Checkpoint::sequence(seq.to_string(), 0))
                    .await
                    .unwrap_or_else(|err| panic!("{key} checkpoint {seq}: {err}"));
                assert_eq!(stored.checkpoint, Checkpoint::sequence(seq.to_string(), 0));
                tokio::time::sleep(Duration::from_millis(70)).await;
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let stats = coordinator.stats();
    assert_eq!(stats.lost, 0, "{stats:?}");
    assert_eq!(stats.held, 4);
    for key in ["l0", "l1", "l2", "l3"] {
        let stored = store.get_now(key).unwrap();
        assert_eq!(stored.checkpoint, Checkpoint::sequence("20", 0));
        assert_eq!(coordinator.held(key).unwrap(), stored);
    }
    coordinator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_released_lease_goes_back_to_the_table_and_is_not_retaken_for_a_failover_time() {
    let store = MemoryStore::with_leases(unowned(2));
    let coordinator = coordinator(&store, "w1");
    coordinator.start().unwrap();
    wait_for("2 held", TAKE, || coordinator.held_leases().len() == 2).await;

    coordinator.release("l0").await.unwrap();
    assert_eq!(store.get_now("l0").unwrap().lease_owner, None);
    assert_eq!(held_keys(&coordinator), ["l1"]);
    assert_eq!(coordinator.stats().released, 1);
    // This worker is alone, so it takes the lease back, but only after a failover time.
    let took = wait_for("retaken", FAILOVER * 2, || coordinator.held("l0").is_some()).await;
    assert!(
        took > FAILOVER && took <= FAILOVER + TAKE + POLL,
        "{took:?}"
    );

    assert!(matches!(
        coordinator.release("nope").await,
        Err(HeldLeaseError::NotHeld { .. })
    ));
    coordinator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn release_all_hands_everything_back_and_stops_taking() {
    let store = MemoryStore::with_leases(unowned(3));
    let coordinator = coordinator(&store, "w1");
    coordinator.start().unwrap();
    wait_for("3 held", TAKE, || coordinator.held_leases().len() == 3).await;
    let mut rx = coordinator.subscribe();

    let summary = coordinator.release_all().await;
    assert_eq!(summary.released, ["l0", "l1", "l2"]);
    assert!(summary.failed.is_empty());
    assert!(rx.borrow_and_update().is_empty());
    tokio::time::sleep(FAILOVER * 3).await;
    assert!(store.owners().values().all(Option::is_none));
    assert!(coordinator.held_leases().is_empty());
    coordinator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn of_two_workers_racing_for_a_lease_exactly_one_holds_it() {
    let store = MemoryStore::with_leases(unowned(1));
    // Both first scans complete before either worker takes: a real race.
    store.faults().list_barrier = Some(Arc::new(Barrier::new(2)));
    let a = coordinator(&store, "a");
    let b = coordinator(&store, "b");
    let (seen_a, seen_b) = (record(&a), record(&b));
    a.start().unwrap();
    b.start().unwrap();
    wait_for("both cycles", TAKE, || {
        a.stats().take_cycles == 1 && b.stats().take_cycles == 1
    })
    .await;
    store.faults().list_barrier = None;
    tokio::time::sleep(FAILOVER * 2).await;

    let owner = store.get_now("l0").unwrap().lease_owner.unwrap();
    let (winner, loser, loser_seen) = if owner == "a" {
        (&a, &b, &seen_b)
    } else {
        (&b, &a, &seen_a)
    };
    assert_eq!(held_keys(winner), ["l0"]);
    assert!(held_keys(loser).is_empty());
    // Both tried in the first cycle; the loser's take failed its condition.
    assert_eq!(winner.stats().taken, 1);
    assert_eq!(loser.stats().taken, 0);
    assert_eq!(loser.stats().take_failures, 1);
    assert!(loser_seen.lock().unwrap().iter().all(BTreeMap::is_empty));
    // Later cycles: 1 lease over 2 workers, an imbalance of one: nobody steals.
    assert_eq!(loser.stats().last_take.unwrap().planned, 0);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_dead_workers_leases_move_after_the_failover_time() {
    let store = MemoryStore::with_leases(unowned(4));
    let a = coordinator_with(&store, "a", steal_config());
    a.start().unwrap();
    wait_for("a holds 4", TAKE, || a.held_leases().len() == 4).await;
    let b = coordinator_with(&store, "b", steal_config());
    b.start().unwrap();
    // b steals its share in its first cycle; a notices at its next renewal.
    wait_for("b's first cycle", TAKE, || b.stats().take_cycles == 1).await;
    assert_eq!(b.held_leases().len(), 2);
    let took = wait_for("a down to 2", RENEW * 2, || a.held_leases().len() == 2).await;
    assert!(took <= RENEW + POLL, "{took:?}");
    assert_eq!(b.stats().stolen, 2);

    a.abort();
    let took = wait_for("b holds 4", FAILOVER * 3, || b.held_leases().len() == 4).await;
    assert!(took > FAILOVER - RENEW, "{took:?}");
    assert!(took <= FAILOVER + TAKE * 2 + POLL, "{took:?}");
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn leases_left_under_this_workers_id_are_taken_back_after_the_failover_time() {
    let store = MemoryStore::with_leases([
        lease("l0", Some("w1"), 5),
        lease("l1", Some("w1"), 9),
        lease("l2", Some("other"), 2),
    ]);
    let coordinator = coordinator(&store, "w1");
    coordinator.start().unwrap();
    // Another process with this id could be renewing them: they wait as any dead worker's.
    let took = wait_for("own leases back", FAILOVER * 2, || {
        held_keys(&coordinator).starts_with(&["l0".to_owned(), "l1".to_owned()])
    })
    .await;
    assert!(took > FAILOVER, "{took:?}");
    assert_eq!(coordinator.held("l0").unwrap().lease_counter, 6);
    assert_eq!(coordinator.stats().duplicate_worker_detections, 0);
    coordinator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_expired_lease_is_taken_and_a_renewed_one_never_is() {
    let store = MemoryStore::with_leases([
        lease("ghost-lease", Some("ghost"), 3),
        lease("live-lease", Some("live"), 7),
    ]);
    // "live" renews its lease every failover / 2.
    let renewer = {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(FAILOVER / 2).await;
                store.bump("live-lease");
            }
        })
    };
    let coordinator = coordinator(&store, "me");
    coordinator.start().unwrap();
    let took = wait_for("ghost's lease taken", FAILOVER * 3, || {
        coordinator.held("ghost-lease").is_some()
    })
    .await;
    assert!(
        took > FAILOVER && took <= FAILOVER + TAKE + POLL,
        "{took:?}"
    );
    tokio::time::sleep(FAILOVER * 10).await;
    assert_eq!(
        store.get_now("live-lease").unwrap().lease_owner.as_deref(),
        Some("live")
    );
    let stats = coordinator.stats();
    assert_eq!((stats.taken, stats.held), (1, 1));
    renewer.abort();
    coordinator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_lease_lost_and_taken_again_shows_a_new_acquired_value() {
    let store = MemoryStore::with_leases(unowned(1));
    let coordinator = coordinator(&store, "w1");
    let seen = record(&coordinator);
    coordinator.start().unwrap();
    wait_for("held", TAKE, || coordinator.held("l0").is_some()).await;
    // Another worker takes it and releases it before this one notices.
    {
        let mut leases = store.lock();
        let l0 = leases.get_mut("l0").unwrap();
        l0.lease_counter += 2;
        l0.lease_owner = None;
    }
    wait_for("dropped", RENEW * 2, || coordinator.held("l0").is_none()).await;
    wait_for("retaken", TAKE * 2, || coordinator.held("l0").is_some()).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let seen = seen.lock().unwrap().clone();
    let counters: Vec<Option<u64>> = seen
        .iter()
        .map(|map| map.get("l0").map(|l| l.lease_counter))
        .collect();
    assert_eq!(counters, [Some(1), None, Some(4)]);
    coordinator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn update_held_accepts_only_newer_copies_of_held_leases() {
    let store = MemoryStore::with_leases(unowned(1));
    let coordinator = coordinator(&store, "w1");
    coordinator.start().unwrap();
    wait_for("held", TAKE, || coordinator.held("l0").is_some()).await;
    coordinator.shutdown().await;

    let current = coordinator.held("l0").unwrap();
    let mut newer = current.clone();
    newer.lease_counter += 1;
    newer.checkpoint = Checkpoint::sequence("42", 0);
    let mut foreign = newer.clone();
    foreign.lease_owner = Some("w2".into());
    foreign.lease_counter += 1;
    assert!(!coordinator.update_held(current.clone()));
    assert!(!coordinator.update_held(foreign));
    assert!(!coordinator.update_held(lease("other", Some("w1"), 9)));
    assert!(coordinator.update_held(newer.clone()));
    assert_eq!(coordinator.held("l0").unwrap(), newer);
}

#[tokio::test(start_paused = true)]
async fn update_held_does_not_extend_the_validity() {
    let store = MemoryStore::with_leases(unowned(1));
    let (coordinator, held) = holding_l0(&store).await;
    let until = || match coordinator.shared_state().validity(&held) {
        super::state::Validity::Valid(until) => until,
        other => panic!("not valid: {other:?}"),
    };
    let before = until();
    tokio::time::sleep(RENEW / 2).await;
    // The application wrote the lease itself: when that write was sent is unknown, so it
    // cannot count as a renewal.
    let mut written = coordinator.held("l0").unwrap();
    written.lease_counter += 1;
    written.checkpoint = Checkpoint::sequence("7", 0);
    store.lock().insert("l0".into(), written.clone());
    assert!(coordinator.update_held(written.clone()));
    assert_eq!(coordinator.held("l0").unwrap(), written);
    assert_eq!(until(), before);
    coordinator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_write_of_a_lost_lease_drops_it() {
    let store = MemoryStore::with_leases(unowned(1));
    let coordinator = coordinator(&store, "w1");
    coordinator.start().unwrap();
    wait_for("held", TAKE, || coordinator.held("l0").is_some()).await;
    store.lock().get_mut("l0").unwrap().lease_owner = Some("w2".into());
    let err = coordinator
        .checkpoint("l0", Checkpoint::sequence("1", 0))
        .await
        .unwrap_err();
    assert!(err.is_lease_lost(), "{err}");
    assert!(coordinator.held("l0").is_none());
    let err = coordinator
        .checkpoint("l0", Checkpoint::sequence("1", 0))
        .await
        .unwrap_err();
    assert!(matches!(err, HeldLeaseError::NotHeld { .. }));
    coordinator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn failed_scans_are_counted_and_take_nothing() {
    let store = MemoryStore::with_leases(unowned(2));
    store.faults().list_transient = true;
    let coordinator = coordinator(&store, "w1");
    coordinator.start().unwrap();
    tokio::time::sleep(TAKE * 4 + Duration::from_millis(10)).await;
    let stats = coordinator.stats();
    assert_eq!(
        (stats.scan_failures, stats.take_cycles, stats.held),
        (5, 0, 0)
    );
    store.faults().list_transient = false;
    wait_for("2 held", TAKE * 2, || coordinator.held_leases().len() == 2).await;
    coordinator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn max_leases_for_worker_is_respected() {
    let store = MemoryStore::with_leases(unowned(5));
    let config = CoordinatorConfig::builder()
        .failover_time(FAILOVER)
        .max_leases_for_worker(std::num::NonZeroUsize::new(2).unwrap())
        .build()
        .unwrap();
    let coordinator = LeaseCoordinatorBuilder::from_store(Arc::new(store.clone()), "w1")
        .config(config)
        .build()
        .unwrap();
    coordinator.start().unwrap();
    tokio::time::sleep(FAILOVER * 5).await;
    assert_eq!(coordinator.held_leases().len(), 2);
    coordinator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn start_and_shutdown_rules() {
    let store = MemoryStore::with_leases(unowned(1));
    let coordinator = coordinator(&store, "w1");
    coordinator.start().unwrap();
    assert_eq!(coordinator.start(), Err(StartError::AlreadyStarted));
    coordinator.shutdown().await;
    coordinator.shutdown().await;

    let never_started = self::coordinator(&store, "w2");
    never_started.shutdown().await;
    assert_eq!(never_started.start(), Err(StartError::ShutDown));

    let parent = tokio_util::sync::CancellationToken::new();
    let child = LeaseCoordinatorBuilder::from_store(Arc::new(store.clone()), "w3")
        .config(config())
        .cancellation_token(parent.clone())
        .build()
        .unwrap();
    child.start().unwrap();
    parent.cancel();
    assert!(child.cancellation_token().is_cancelled());
    child.shutdown().await;

    assert_eq!(
        LeaseCoordinatorBuilder::from_store(Arc::new(store), "")
            .build()
            .unwrap_err(),
        CoordinatorConfigError::EmptyWorkerId
    );
}

#[test]
fn start_outside_a_runtime_fails() {
    let coordinator = coordinator(&MemoryStore::default(), "w1");
    assert_eq!(coordinator.start(), Err(StartError::NoRuntime));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_last_handle_stops_the_loops() {
    let store = MemoryStore::with_leases(unowned(1));
    let coordinator = coordinator(&store, "w1");
    coordinator.start().unwrap();
    wait_for("held", TAKE, || coordinator.held("l0").is_some()).await;
    let token = coordinator.cancellation_token();
    drop(coordinator);
    assert!(token.is_cancelled());
    let counter = store.get_now("l0").unwrap().lease_counter;
    tokio::time::sleep(RENEW * 5).await;
    assert_eq!(store.get_now("l0").unwrap().lease_counter, counter);
}

#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync + 'static>() {}
    fn clone<T: Clone>() {}
    send_sync::<LeaseCoordinator>();
    clone::<LeaseCoordinator>();
    send_sync::<CoordinatorConfig>();
    send_sync::<HeldLeaseError>();
    send_sync::<StartError>();
    send_sync::<CoordinatorConfigError>();
    send_sync::<CoordinatorStats>();
    send_sync::<ReleaseSummary>();
}

/// A holder in these tests: hands over every lease asked of it, as the scheduler does. With a
/// `checkpoint`, after checkpointing the lease there (one it can no longer checkpoint is not
/// released); without, at once (nothing was processed), a failed release ignored.
pub(super) fn answer_handoffs(
    coordinator: &LeaseCoordinator,
    checkpoint: Option<Checkpoint>,
) -> tokio::task::JoinHandle<()> {
    let coordinator = coordinator.clone();
    let mut asked = coordinator.handoff_requests();
    tokio::spawn(async move {
        while asked.changed().await.is_ok() {
            let keys: Vec<String> = asked.borrow_and_update().iter().cloned().collect();
            for key in keys {
                match &checkpoint {
                    Some(checkpoint) => {
                        if coordinator
                            .checkpoint(&key, checkpoint.clone())
                            .await
                            .is_ok()
                        {
                            coordinator.release(&key).await.unwrap();
                        }
                    }
                    None => {
                        let _ = coordinator.release(&key).await;
                    }
                }
            }
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_steal_is_a_graceful_handoff_from_the_holders_checkpoint() {
    let store = MemoryStore::with_leases(unowned(4));
    let a = coordinator(&store, "a");
    a.start().unwrap();
    wait_for("a holds 4", TAKE, || a.held_leases().len() == 4).await;
    let holder = answer_handoffs(&a, Some(Checkpoint::sequence("77", 3)));
    let b = coordinator(&store, "b");
    b.start().unwrap();
    wait_for("b's first cycle", TAKE, || b.stats().take_cycles == 1).await;
    // b asked for two leases: they count as b's in the table, a still processes them.
    assert_eq!(b.stats().handoffs_requested, 2);
    assert!(b.held_leases().is_empty());
    let asked: Vec<Lease> = store
        .all()
        .into_iter()
        .filter(|l| l.checkpoint_owner.is_some())
        .collect();
    assert_eq!(asked.len(), 2);
    assert!(
        asked
            .iter()
            .all(|l| l.is_owned_by("b") && l.is_held_by("a"))
    );
    // a sees the requests at its next renewal, checkpoints and lets go; b takes them from
    // a's checkpoint at its next poll.
    let took = wait_for("b holds 2", RENEW * 3, || b.held_leases().len() == 2).await;
    assert!(
        took <= RENEW + a.config().handoff_poll_interval() + POLL * 2,
        "{took:?}"
    );
    assert_eq!(a.held_leases().len(), 2);
    for lease in b.held_leases().values() {
        assert_eq!(lease.checkpoint, Checkpoint::sequence("77", 3));
        assert_eq!(lease.checkpoint_owner, None);
        assert_eq!(
            lease.owner_switches_since_checkpoint, 0,
            "checkpointed at the switch"
        );
    }
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!(
        (sb.handoffs_completed, sb.handoffs_forced, sb.stolen),
        (2, 0, 0)
    );
    assert_eq!(
        (sa.handoffs_requested_of_me, sa.handed_off, sa.lost),
        (2, 2, 0)
    );
    // Balanced: nothing moves afterwards.
    tokio::time::sleep(TAKE * 10).await;
    assert_eq!(
        (a.held_leases().len(), b.held_leases().len()),
        (2, 2),
        "{:?} {:?} {:?} {:?}",
        store.all(),
        a.stats(),
        b.stats(),
        store.writes.lock().unwrap()
    );
    assert_eq!(b.stats().handoffs_requested, 2);
    holder.abort();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_holder_that_never_answers_loses_the_lease_after_the_handoff_timeout() {
    // A Java KCL 2.x holder: it keeps renewing (counter only) and ignores checkpointOwner.
    let mut java = lease("l0", Some("java"), 10);
    java.hash_key_range = None;
    let store = MemoryStore::with_leases([java, lease("l1", Some("java"), 4)]);
    let timeout = Duration::from_secs(8);
    let b = coordinator_with(
        &store,
        "b",
        CoordinatorConfig::builder()
            .failover_time(FAILOVER)
            .renew_interval(RENEW)
            .take_interval(TAKE)
            .handoff_timeout(timeout)
            .build()
            .unwrap(),
    );
    let renewing = {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW).await;
                let owned: Vec<String> = store
                    .all()
                    .into_iter()
                    .filter(|l| {
                        l.is_held_by("java") || l.checkpoint_owner.as_deref() == Some("java")
                    })
                    .map(|l| l.lease_key)
                    .collect();
                for key in owned {
                    store.bump(&key);
                }
            }
        })
    };
    b.start().unwrap();
    wait_for("a handoff asked", TAKE, || {
        b.stats().handoffs_requested == 1
    })
    .await;
    let took = wait_for("taken anyway", timeout * 2, || b.held_leases().len() == 1).await;
    assert!(took >= timeout - POLL, "{took:?}");
    assert!(
        took <= timeout + b.config().handoff_poll_interval() + POLL,
        "{took:?}"
    );
    let taken = b.held_leases().into_values().next().unwrap();
    assert_eq!(
        taken.checkpoint_owner, None,
        "the take clears checkpointOwner"
    );
    assert_eq!(b.stats().handoffs_forced, 1);
    renewing.abort();
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_holder_that_dies_during_a_handoff_is_not_waited_for_beyond_the_failover_time() {
    let store =
        MemoryStore::with_leases([lease("l0", Some("dead"), 3), lease("l1", Some("dead"), 3)]);
    // "dead" renewed once after b first saw it, then stopped.
    let b = coordinator(&store, "b");
    let bumps = {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..2 {
                tokio::time::sleep(RENEW).await;
                store.bump("l0");
                store.bump("l1");
            }
        })
    };
    b.start().unwrap();
    wait_for("a handoff asked", TAKE, || {
        b.stats().handoffs_requested == 1
    })
    .await;
    let took = wait_for("taken", CoordinatorConfig::DEFAULT_HANDOFF_TIMEOUT, || {
        b.held_leases().len() == 2
    })
    .await;
    assert!(took <= FAILOVER + RENEW * 2 + TAKE * 2, "{took:?}");
    bumps.abort();
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn after_a_dynamodb_outage_every_lease_stays_with_its_holder() {
    let store = MemoryStore::with_leases(unowned(4));
    let (va, vb) = (store.view(), store.view());
    let a = coordinator(&va, "a");
    a.start().unwrap();
    wait_for("a holds 4", TAKE, || a.held_leases().len() == 4).await;
    let b = coordinator(&vb, "b");
    b.start().unwrap();
    let holder = answer_handoffs(&a, Some(Checkpoint::sequence("5", 0)));
    wait_for("2/2", RENEW * 4, || {
        a.held_leases().len() == 2 && b.held_leases().len() == 2
    })
    .await;
    let before = store.owners();
    let takes_before = store.writes_of("take").len();
    // DynamoDB unreachable for everyone, for five failover times.
    va.faults().unreachable = true;
    vb.faults().unreachable = true;
    let holdings: Vec<HeldRef> = a
        .held_leases()
        .keys()
        .filter_map(|k| a.holding(k))
        .collect();
    wait_for("a paused", FAILOVER * 2, || {
        holdings.iter().all(|h| !a.is_valid(h))
    })
    .await;
    tokio::time::sleep(FAILOVER * 5).await;
    va.faults().unreachable = false;
    vb.faults().unreachable = false;
    wait_for("a valid again", RENEW * 2, || {
        holdings.iter().all(|h| a.is_valid(h))
    })
    .await;
    tokio::time::sleep(FAILOVER * 3).await;
    assert_eq!(store.owners(), before, "no lease changed hands");
    assert_eq!(
        store.writes_of("take").len(),
        takes_before,
        "nothing was taken"
    );
    assert_eq!((a.stats().lost, b.stats().lost), (0, 0));
    holder.abort();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_cut_off_from_dynamodb_stops_delivering_before_another_may_take_its_leases() {
    let store = MemoryStore::with_leases(unowned(2));
    let (va, vb) = (store.view(), store.view());
    let a = coordinator(&va, "a");
    a.start().unwrap();
    wait_for("a holds 2", TAKE, || a.held_leases().len() == 2).await;
    let holdings: Vec<HeldRef> = ["l0", "l1"].iter().filter_map(|k| a.holding(k)).collect();
    // b holds nothing: 2 leases over 2 workers with a at 2 would make b steal; keep b out
    // of it until the partition so only expiry moves the leases.
    let b = coordinator_with(
        &vb,
        "b",
        CoordinatorConfig::builder()
            .failover_time(FAILOVER)
            .renew_interval(RENEW)
            .take_interval(TAKE)
            .max_leases_for_worker(std::num::NonZeroUsize::new(2).unwrap())
            .build()
            .unwrap(),
    );
    va.faults().unreachable = true;
    let cut_off = Instant::now();
    let paused = {
        let a = a.clone();
        let holdings = holdings.clone();
        tokio::spawn(async move {
            wait_for("a paused", FAILOVER * 2, || {
                holdings.iter().all(|h| !a.is_valid(h))
            })
            .await;
            Instant::now()
        })
    };
    b.start().unwrap();
    wait_for("b took both", FAILOVER * 4, || b.held_leases().len() == 2).await;
    let taken = Instant::now();
    let paused = paused.await.unwrap();
    assert!(
        paused < taken,
        "a paused at {:?}, b took at {:?}",
        paused - cut_off,
        taken - cut_off
    );
    assert!(taken - cut_off > FAILOVER, "{:?}", taken - cut_off);
    // When the table answers again, a finds out at its next renewal and lets go for good.
    va.faults().unreachable = false;
    wait_for("a lost both", RENEW * 2, || a.held_leases().is_empty()).await;
    assert_eq!(a.stats().lost, 2);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_leaving_before_its_handoffs_complete_withdraws_them() {
    let store = MemoryStore::with_leases(unowned(4));
    let a = coordinator(&store, "a");
    a.start().unwrap();
    wait_for("a holds 4", TAKE, || a.held_leases().len() == 4).await;
    let b = coordinator(&store, "b");
    b.start().unwrap();
    wait_for("b asked", TAKE, || b.stats().handoffs_requested == 2).await;
    // b leaves before a noticed (a does not answer handoffs in this test).
    b.release_all().await;
    b.shutdown().await;
    assert!(
        store
            .all()
            .iter()
            .all(|l| l.is_owned_by("a") && l.checkpoint_owner.is_none())
    );
    // a keeps all four, without a loss, once its renewals adopt the withdrawn copies.
    tokio::time::sleep(RENEW * 3).await;
    assert_eq!(a.held_leases().len(), 4);
    assert_eq!(a.stats().lost, 0);
    assert!(a.handoff_requests().borrow().is_empty());
    a.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn handoffs_complete_with_a_take_interval_shorter_than_the_poll_interval() {
    let config = || {
        CoordinatorConfig::builder()
            .failover_time(Duration::from_secs(6))
            .renew_interval(Duration::from_secs(2))
            .take_interval(Duration::from_millis(100))
            .build()
            .unwrap()
    };
    assert!(config().handoff_poll_interval() > config().take_interval());
    let store = MemoryStore::with_leases(unowned(2));
    let a = coordinator_with(&store, "a", config());
    a.start().unwrap();
    wait_for("a holds 2", TAKE, || a.held_leases().len() == 2).await;
    let holder = answer_handoffs(&a, Some(Checkpoint::sequence("1", 0)));
    let b = coordinator_with(&store, "b", config());
    b.start().unwrap();
    wait_for("b holds 1", Duration::from_secs(5), || {
        b.held_leases().len() == 1
    })
    .await;
    assert_eq!(b.stats().handoffs_completed, 1);
    holder.abort();
    a.shutdown().await;
    b.shutdown().await;
}

// A conditional write whose answer was lost, met again by the next write.

/// Holds `l0` alone and returns the holding once a renewal got through.
async fn holding_l0(store: &MemoryStore) -> (LeaseCoordinator, HeldRef) {
    let coordinator = coordinator(store, "w1");
    coordinator.start().unwrap();
    wait_for("held", TAKE, || coordinator.held("l0").is_some()).await;
    let renewals = coordinator.stats().renewals;
    wait_for("a renewal", RENEW * 2, || {
        coordinator.stats().renewals > renewals
    })
    .await;
    let held = coordinator.holding("l0").unwrap();
    (coordinator, held)
}

/// Lets the next renewal of `l0` be applied and its answer be lost: the local copy is one
/// counter behind the table.
async fn lose_a_renewal_answer(store: &MemoryStore, coordinator: &LeaseCoordinator) {
    let failures = coordinator.stats().renew_failures;
    store.faults().applied_but_failed.insert("renew", 1);
    wait_for("a renewal whose answer was lost", RENEW * 2, || {
        coordinator.stats().renew_failures > failures
    })
    .await;
    assert_eq!(
        coordinator.held("l0").unwrap().lease_counter + 1,
        store.get_now("l0").unwrap().lease_counter
    );
}

#[tokio::test(start_paused = true)]
async fn a_checkpoint_after_a_renewal_whose_answer_was_lost_is_stored_not_assumed() {
    let store = MemoryStore::with_leases(unowned(1));
    let (coordinator, _) = holding_l0(&store).await;
    lose_a_renewal_answer(&store, &coordinator).await;
    // The checkpoint expects the stale counter: its condition fails, the re-read shows this
    // worker's lease one counter on, but the checkpoint is not what the table holds.
    let checkpoint = Checkpoint::sequence("42", 0);
    let stored = coordinator
        .checkpoint("l0", checkpoint.clone())
        .await
        .unwrap();
    assert_eq!(stored.checkpoint, checkpoint);
    assert_eq!(store.get_now("l0").unwrap().checkpoint, checkpoint);
    assert_eq!(
        coordinator.held("l0").unwrap(),
        store.get_now("l0").unwrap()
    );
    assert_eq!(coordinator.stats().lost, 0);
    coordinator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shard_end_after_a_renewal_whose_answer_was_lost_is_stored_not_assumed() {
    let store = MemoryStore::with_leases(unowned(1));
    let (coordinator, held) = holding_l0(&store).await;
    let mut checkpointer = crate::checkpointer::Checkpointer::new(
        coordinator.clone(),
        held,
        Checkpoint::TrimHorizon,
        None,
    );
    checkpointer.delivered("7", 0);
    checkpointer.checkpoint().await.unwrap();
    lose_a_renewal_answer(&store, &coordinator).await;
    checkpointer.shard_end_reached();
    checkpointer.checkpoint_shard_end().await.unwrap();
    assert_eq!(*checkpointer.last_checkpoint(), Checkpoint::ShardEnd);
    assert_eq!(
        store.get_now("l0").unwrap().checkpoint,
        Checkpoint::ShardEnd
    );
    coordinator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_pending_checkpoint_after_a_lost_renewal_answer_is_stored_not_assumed() {
    let store = MemoryStore::with_leases(unowned(1));
    let (coordinator, held) = holding_l0(&store).await;
    lose_a_renewal_answer(&store, &coordinator).await;
    let pending = Checkpoint::sequence("9", 3);
    let stored = coordinator
        .prepare_checkpoint_holding(&held, pending.clone(), Some(vec![1, 2]))
        .await
        .unwrap();
    assert_eq!(stored.pending_checkpoint, Some(pending.clone()));
    let in_table = store.get_now("l0").unwrap();
    assert_eq!(in_table.pending_checkpoint, Some(pending));
    assert_eq!(in_table.pending_checkpoint_state, Some(vec![1, 2]));
    coordinator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_retried_checkpoint_found_applied_keeps_the_validity_of_the_write_that_landed() {
    let store = MemoryStore::with_leases(unowned(1));
    let (coordinator, held) = holding_l0(&store).await;
    // From here on no renewal gets through: validity comes from checkpoints only.
    store.faults().renew_transient = true;
    let checkpoint = Checkpoint::sequence("5", 0);
    store.faults().applied_but_failed.insert("checkpoint", 1);
    let landed = Instant::now();
    assert!(
        coordinator
            .checkpoint("l0", checkpoint.clone())
            .await
            .unwrap_err()
            .is_retryable()
    );
    assert_eq!(store.get_now("l0").unwrap().checkpoint, checkpoint);
    // The application retries a second later: the condition fails, the re-read shows the
    // checkpoint stored. The holding is valid from the write that moved the counter.
    tokio::time::sleep(RENEW).await;
    let stored = coordinator
        .checkpoint("l0", checkpoint.clone())
        .await
        .unwrap();
    assert_eq!(stored.checkpoint, checkpoint);
    let span = FAILOVER - FAILOVER / 10;
    tokio::time::sleep_until(landed + span + POLL).await;
    assert!(
        !coordinator.is_valid(&held),
        "still valid {:?} after the write that landed",
        landed.elapsed()
    );
    coordinator.shutdown().await;
}

// Two processes started with the same worker id.

/// Whether the two coordinators hold `key` in holdings that are both valid now.
fn both_valid(a: &LeaseCoordinator, b: &LeaseCoordinator, key: &str) -> bool {
    [a, b]
        .iter()
        .all(|c| c.holding(key).is_some_and(|h| c.is_valid(&h)))
}

#[tokio::test(start_paused = true)]
async fn a_second_process_with_the_same_worker_id_is_detected_and_neither_takes_the_others_leases()
{
    let store = MemoryStore::with_leases(unowned(4));
    let first = coordinator(&store, "w1");
    first.start().unwrap();
    wait_for("4 held", TAKE, || first.held_leases().len() == 4).await;
    let second = coordinator(&store, "w1");
    second.start().unwrap();
    // New leases after both started: both take some.
    store.insert((4..8).map(|i| lease(&format!("l{i}"), None, 0)));
    let start = Instant::now();
    let mut taken = None;
    while start.elapsed() < FAILOVER * 5 {
        for i in 0..8 {
            let key = format!("l{i}");
            assert!(
                !both_valid(&first, &second, &key),
                "{key} valid in both processes after {:?}",
                start.elapsed()
            );
        }
        // Nothing moves back and forth: once settled, no more takes.
        if start.elapsed() > FAILOVER * 2 {
            let now = (first.stats().taken, second.stats().taken);
            assert_eq!(*taken.get_or_insert(now), now, "leases keep moving");
        }
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(
        first.held_leases().len() + second.held_leases().len(),
        8,
        "every lease held by one of them"
    );
    assert!(first.held_leases().len() >= 4);
    assert!(!second.held_leases().is_empty());
    assert!(first.stats().duplicate_worker_detections > 0);
    assert!(second.stats().duplicate_worker_detections > 0);
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_process_back_from_a_long_pause_finds_its_lease_moved_by_its_twin_and_drops_it() {
    let store = MemoryStore::with_leases(unowned(1));
    let (va, vb) = (store.view(), store.view());
    let first = coordinator(&va, "w1");
    first.start().unwrap();
    wait_for("held", TAKE, || first.held("l0").is_some()).await;
    let holding = first.holding("l0").unwrap();
    // The first process stops reaching DynamoDB (a long GC pause, a partition); the second,
    // with the same id, takes the lease once it stood still for the failover time.
    va.faults().unreachable = true;
    let second = coordinator(&vb, "w1");
    second.start().unwrap();
    wait_for("second holds l0", FAILOVER * 3, || {
        second.held("l0").is_some()
    })
    .await;
    assert!(!first.is_valid(&holding));
    tokio::time::sleep(RENEW * 2).await;
    va.faults().unreachable = false;
    // The first process's next renewal finds the lease moved on without it.
    let start = Instant::now();
    while start.elapsed() < FAILOVER * 3 {
        assert!(!both_valid(&first, &second, "l0"), "{:?}", start.elapsed());
        tokio::time::sleep(POLL).await;
    }
    assert!(first.held("l0").is_none());
    assert!(second.held("l0").is_some());
    assert!(first.stats().duplicate_worker_detections > 0);
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_handoff_is_completed_only_by_a_let_go_carrying_its_own_request_id() {
    let store = MemoryStore::with_leases([lease("l0", Some("h"), 5), lease("l1", Some("h"), 5)]);
    // "h" renews the leases it holds and never answers handoffs.
    let holder = {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW / 2).await;
                for lease in store.lock().values_mut() {
                    if lease.is_held_by("h") {
                        lease.lease_counter += 1;
                    }
                }
            }
        })
    };
    let taker = coordinator(&store, "w1");
    taker.start().unwrap();
    wait_for("a handoff asked", TAKE * 4, || {
        taker.stats().handoffs_requested == 1
    })
    .await;
    let asked = store
        .all()
        .into_iter()
        .find(|l| l.is_owned_by("w1"))
        .unwrap();
    assert!(asked.handoff_request_id.is_some());
    // Between two polls, another process with the id "w1" takes the lease and has its own
    // request answered: the row looks like h letting go to "w1", with another request's id.
    {
        let mut leases = store.lock();
        let l = leases.get_mut(&asked.lease_key).unwrap();
        l.checkpoint_owner = None;
        l.handoff_request_id = Some("another process's request".into());
        l.lease_counter += 3;
    }
    let start = Instant::now();
    while start.elapsed() < FAILOVER - RENEW {
        assert!(
            taker.held(&asked.lease_key).is_none(),
            "taken after {:?}",
            start.elapsed()
        );
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(taker.stats().handoffs_completed, 0);
    assert_eq!(taker.stats().pending_handoffs, 0);
    holder.abort();
    taker.shutdown().await;
}
