//! The simulation's fault layer: a [`LeaseStore`] over one view of the in-memory table that
//! delays requests, applies a write and loses its answer, answers errors and throttles, and
//! holds every request of a paused process (a stopped process, a long GC pause).
//!
//! A request travels on its own task, as over a network: a caller that stops waiting (a
//! timeout) does not stop it, and it may be applied long after the caller gave up.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::Rng;
use rand::rngs::SmallRng;
use tokio::time::{Instant, sleep, sleep_until};

use crate::lease::memory::MemoryStore;
use crate::lease::store::{BoxFuture, LeaseStore};
use crate::lease::{Checkpoint, Lease, LeaseError, LeaseErrorKind};

/// The simulation's random generator: seeded, and cheap (a run draws a few hundred thousand
/// numbers; a cryptographic generator was a tenth of a run's time).
pub(super) type SimRng = SmallRng;

/// The faults one process meets now.
#[derive(Debug, Clone, Default)]
pub(super) struct FaultPlan {
    /// Chance that a request is delayed, and the longest delay (before it is applied, and
    /// again before its answer).
    pub(super) p_delay: f64,
    pub(super) max_delay: Duration,
    /// Chance that a request is applied and its answer lost (a transient error).
    pub(super) p_lost_answer: f64,
    /// Chance that a request fails without being applied (a server error).
    pub(super) p_error: f64,
    /// Chance that a request is throttled (not applied).
    pub(super) p_throttle: f64,
    /// Every request waits until then before it is applied, and every answer before it is
    /// seen: the process is stopped.
    pub(super) paused_until: Option<Instant>,
}

impl FaultPlan {
    pub(super) fn is_paused(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|until| until > now)
    }
}

/// What happens to one request.
enum Fate {
    Answered,
    LostAnswer,
    Failed(LeaseErrorKind),
}

/// Where applied writes are told, for the trace of a failing seed.
pub(super) type Log = Arc<dyn Fn(String) + Send + Sync>;

#[derive(Clone)]
pub(super) struct FaultyStore {
    inner: MemoryStore,
    rng: Arc<Mutex<SimRng>>,
    pub(super) plan: Arc<Mutex<FaultPlan>>,
    /// Only when a failing seed is replayed for its trace: formatting every write costs.
    log: Option<Log>,
}

impl std::fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyStore").finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn wait_unpaused(plan: &Mutex<FaultPlan>) {
    loop {
        let until = lock(plan).paused_until;
        match until {
            Some(until) if until > Instant::now() => sleep_until(until).await,
            _ => return,
        }
    }
}

fn injected(operation: &'static str, kind: LeaseErrorKind) -> LeaseError {
    LeaseError::Dynamo {
        operation,
        table: "sim".into(),
        kind,
        source: "injected fault".into(),
    }
}

impl FaultyStore {
    pub(super) fn new(inner: MemoryStore, rng: Arc<Mutex<SimRng>>, log: Option<Log>) -> Self {
        Self {
            inner,
            rng,
            plan: Arc::default(),
            log,
        }
    }

    /// A write of `lease`, told to the log once applied (or refused).
    fn write(
        &self,
        operation: &'static str,
        lease: &Lease,
        run: impl FnOnce(MemoryStore, Lease) -> BoxFuture<'static, Result<Lease, LeaseError>>
        + Send
        + 'static,
    ) -> BoxFuture<'_, Result<Lease, LeaseError>> {
        let log = self.log.clone();
        let lease = lease.clone();
        self.call(operation, move |store| {
            Box::pin(async move {
                let expected = lease.lease_counter;
                let key = lease.lease_key.clone();
                let result = run(store, lease).await;
                let Some(log) = log else {
                    return result;
                };
                match &result {
                    Ok(stored) => log(format!(
                        "{operation} {key} at {expected} applied: counter {}, owner {:?}, checkpoint owner {:?}, checkpoint {}",
                        stored.lease_counter, stored.lease_owner, stored.checkpoint_owner, stored.checkpoint
                    )),
                    Err(_) => log(format!("{operation} {key} at {expected} refused")),
                }
                result
            })
        })
    }

    pub(super) fn plan(&self) -> std::sync::MutexGuard<'_, FaultPlan> {
        lock(&self.plan)
    }

    /// Draws the fate of one request: delays before it is applied and before its answer.
    fn draw(&self) -> (Duration, Fate, Duration) {
        let plan = self.plan().clone();
        let mut rng = lock(&self.rng);
        let delay = |rng: &mut SimRng| {
            if plan.p_delay > 0.0 && rng.random_bool(plan.p_delay) {
                let max = plan.max_delay.as_millis().max(1) as u64;
                Duration::from_millis(rng.random_range(0..=max))
            } else {
                Duration::ZERO
            }
        };
        let before = delay(&mut rng);
        let after = delay(&mut rng);
        let roll: f64 = rng.random();
        let fate = if roll < plan.p_lost_answer {
            Fate::LostAnswer
        } else if roll < plan.p_lost_answer + plan.p_error {
            Fate::Failed(LeaseErrorKind::Transient)
        } else if roll < plan.p_lost_answer + plan.p_error + plan.p_throttle {
            Fate::Failed(LeaseErrorKind::Throttling)
        } else {
            Fate::Answered
        };
        (before, fate, after)
    }

    fn call<T: Send + 'static>(
        &self,
        operation: &'static str,
        run: impl FnOnce(MemoryStore) -> BoxFuture<'static, Result<T, LeaseError>> + Send + 'static,
    ) -> BoxFuture<'_, Result<T, LeaseError>> {
        let (before, fate, after) = self.draw();
        let store = self.inner.clone();
        let plan = self.plan.clone();
        Box::pin(async move {
            wait_unpaused(&plan).await;
            if let Fate::Failed(kind) = fate {
                pause(before).await;
                return Err(injected(operation, kind));
            }
            let result = if before.is_zero() {
                // Applied at once: nothing could stop it on the way, so there is no need for a
                // task of its own (a task and its timers were a good part of a run's time).
                run(store).await
            } else {
                let travelling = plan.clone();
                let applied = tokio::spawn(async move {
                    sleep(before).await;
                    wait_unpaused(&travelling).await;
                    run(store).await
                });
                match applied.await {
                    Ok(result) => result,
                    Err(_) => Err(injected(operation, LeaseErrorKind::Transient)),
                }
            };
            pause(after).await;
            wait_unpaused(&plan).await;
            match fate {
                Fate::LostAnswer => Err(injected(operation, LeaseErrorKind::Transient)),
                _ => result,
            }
        })
    }
}

/// Sleeps for `delay`, without a timer when there is none.
async fn pause(delay: Duration) {
    if !delay.is_zero() {
        sleep(delay).await;
    }
}

impl LeaseStore for FaultyStore {
    fn table_name(&self) -> &str {
        "sim"
    }

    fn create_table(&self) -> BoxFuture<'_, Result<bool, LeaseError>> {
        Box::pin(async { Ok(false) })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Lease>, LeaseError>> {
        self.call("Scan", |store| Box::pin(async move { Ok(store.all()) }))
    }

    fn get<'a>(&'a self, lease_key: &'a str) -> BoxFuture<'a, Result<Option<Lease>, LeaseError>> {
        let key = lease_key.to_owned();
        self.call("GetItem", move |store| {
            Box::pin(async move { Ok(store.get_now(&key)) })
        })
    }

    fn create_child_lease<'a>(
        &'a self,
        parent_key: &'a str,
        holder: &'a str,
        child: &'a Lease,
    ) -> BoxFuture<'a, Result<bool, LeaseError>> {
        let (parent, holder, child) = (parent_key.to_owned(), holder.to_owned(), child.clone());
        self.call("create_child_lease", move |store| {
            Box::pin(async move { store.create_child_lease(&parent, &holder, &child).await })
        })
    }

    fn create_if_absent<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<bool, LeaseError>> {
        let lease = lease.clone();
        let log = self.log.clone();
        self.call("PutItem", move |store| {
            Box::pin(async move {
                let result = store.create_if_absent(&lease).await;
                if let Some(log) = log {
                    log(format!(
                        "create {} at {}: {result:?}",
                        lease.lease_key, lease.checkpoint
                    ));
                }
                result
            })
        })
    }

    fn renew<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        self.write("renew", lease, |store, lease| {
            Box::pin(async move { store.renew(&lease).await })
        })
    }

    fn take<'a>(
        &'a self,
        lease: &'a Lease,
        new_owner: &'a str,
    ) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        let owner = new_owner.to_owned();
        self.write("take", lease, move |store, lease| {
            Box::pin(async move { store.take(&lease, &owner).await })
        })
    }

    fn request_handoff<'a>(
        &'a self,
        lease: &'a Lease,
        new_owner: &'a str,
    ) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        let owner = new_owner.to_owned();
        self.write("request_handoff", lease, move |store, lease| {
            Box::pin(async move { store.request_handoff(&lease, &owner).await })
        })
    }

    fn cancel_handoff<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        self.write("cancel_handoff", lease, |store, lease| {
            Box::pin(async move { store.cancel_handoff(&lease).await })
        })
    }

    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        self.write("release", lease, |store, lease| {
            Box::pin(async move { store.release(&lease).await })
        })
    }

    fn checkpoint<'a>(
        &'a self,
        lease: &'a Lease,
        checkpoint: Checkpoint,
    ) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        self.write("checkpoint", lease, move |store, lease| {
            Box::pin(async move { store.checkpoint(&lease, checkpoint).await })
        })
    }

    fn prepare_checkpoint<'a>(
        &'a self,
        lease: &'a Lease,
        pending: Checkpoint,
        state: Option<Vec<u8>>,
    ) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        self.write("prepare_checkpoint", lease, move |store, lease| {
            Box::pin(async move { store.prepare_checkpoint(&lease, pending, state).await })
        })
    }

    fn note_latest_start<'a>(
        &'a self,
        lease: &'a Lease,
        at: std::time::SystemTime,
    ) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        self.write("note_latest_start", lease, move |store, lease| {
            Box::pin(async move { store.note_latest_start(&lease, at).await })
        })
    }

    fn update_child_shards<'a>(
        &'a self,
        lease_key: &'a str,
        child_shard_ids: &'a [String],
    ) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        let (key, children) = (lease_key.to_owned(), child_shard_ids.to_vec());
        self.call("update_child_shards", move |store| {
            Box::pin(async move { store.update_child_shards(&key, &children).await })
        })
    }

    fn delete_if_unchanged<'a>(
        &'a self,
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<bool, LeaseError>> {
        let lease = lease.clone();
        let log = self.log.clone();
        self.call("DeleteItem", move |store| {
            Box::pin(async move {
                let result = store.delete_if_unchanged(&lease).await;
                if let Some(log) = log {
                    log(format!(
                        "delete {} at {}: {result:?}",
                        lease.lease_key, lease.lease_counter
                    ));
                }
                result
            })
        })
    }
}
