//! [`LeaseCoordinator`]: the public handle over the renew and take loops.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info_span};

use super::clock::SystemClock;
use super::config::{CoordinatorConfig, CoordinatorConfigError};
use super::error::{HeldLeaseError, StartError, unresolved, within};
use super::snapshot::ScanSnapshot;
use super::state::{Conflict, DropReason, HeldRef, Shared, Wrote, may_have_applied};
use super::stats::CoordinatorStats;
use super::{renewer, taker};
use crate::lease::store::LeaseStore;
use crate::lease::{Checkpoint, Lease, LeaseError, LeaseTable, whole_millis};

/// Holds this worker's share of the leases: takes, renews, publishes and releases them.
///
/// A cheap handle: clones share one coordinator. See the [module docs](super) for the model.
///
/// # Lifecycle
///
/// [`new`](Self::new) or [`builder`](Self::builder), then [`start`](Self::start) (inside a
/// tokio runtime) spawns the renew and take loops. To leave the fleet gracefully, stop
/// processing, then [`release_all`](Self::release_all) (stops taking and hands every lease
/// back, so other workers take them in their next cycle instead of after the failover time),
/// then [`shutdown`](Self::shutdown). Dropping the last handle cancels the loops without
/// waiting for them.
///
/// # Writes
///
/// Checkpoints and handoff answers are written by the [`Scheduler`](crate::Scheduler) that
/// runs the coordinator, each fenced to the holding it was given (a lease lost and taken again
/// is a new holding): nothing public takes a lease key to write to, so no holder of a
/// coordinator can write into a holding it was not given. Used alone, a coordinator takes,
/// renews, balances and releases ([`release_all`](Self::release_all)) leases; it writes no
/// checkpoints.
///
/// # Handoffs
///
/// With [`CoordinatorConfig::graceful_handoff`] (the default), other workers balance the fleet
/// by asking for leases instead of taking them: the keys asked for appear in
/// [`handoff_requests`](Self::handoff_requests). The [`Scheduler`](crate::Scheduler) stops
/// processing each of them, checkpoints, then lets go. A lease not let go of (a coordinator
/// used alone does not answer) is taken anyway after the
/// [handoff timeout](CoordinatorConfig::handoff_timeout): turn graceful handoffs off for a
/// coordinator used alone, or leave before that with [`release_all`](Self::release_all).
///
/// # Examples
///
/// ```no_run
/// use kcl::coordinator::{CoordinatorConfig, LeaseCoordinator};
/// use kcl::lease::LeaseTable;
///
/// # async fn run(client: aws_sdk_dynamodb::Client) -> Result<(), Box<dyn std::error::Error>> {
/// let table = LeaseTable::new(client, "my-application");
/// table.create_if_missing().await?;
/// let coordinator = LeaseCoordinator::new(table, "worker-1", CoordinatorConfig::default())?;
/// coordinator.start()?;
///
/// let mut held = coordinator.subscribe();
/// while held.changed().await.is_ok() {
///     let leases = held.borrow_and_update().clone();
///     // Start a processor for each new key (from `lease.checkpoint`), stop the others.
///     # let _ = leases;
///     # break;
/// }
///
/// coordinator.release_all().await;
/// coordinator.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct LeaseCoordinator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    /// Stops both loops.
    cancel: CancellationToken,
    /// Stops the taker only (a child of `cancel`).
    taker_cancel: CancellationToken,
    tasks: Mutex<Tasks>,
}

#[derive(Debug, Default)]
struct Tasks {
    started: bool,
    renewer: Option<JoinHandle<()>>,
    taker: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Builds a [`LeaseCoordinator`] (see [`LeaseCoordinator::builder`]).
#[derive(Debug)]
pub struct LeaseCoordinatorBuilder {
    store: Arc<dyn LeaseStore>,
    worker_id: String,
    config: CoordinatorConfig,
    parent: Option<CancellationToken>,
}

impl LeaseCoordinatorBuilder {
    pub(crate) fn from_store(store: Arc<dyn LeaseStore>, worker_id: impl Into<String>) -> Self {
        Self {
            store,
            worker_id: worker_id.into(),
            config: CoordinatorConfig::default(),
            parent: None,
        }
    }

    /// The timings and limits (default: [`CoordinatorConfig::default`]).
    pub fn config(mut self, config: CoordinatorConfig) -> Self {
        self.config = config;
        self
    }

    /// Stops the coordinator's loops when `token` is cancelled (their own token is a child of
    /// it). Cancelling it is like [`LeaseCoordinator::shutdown`] without the waiting.
    pub fn cancellation_token(mut self, token: CancellationToken) -> Self {
        self.parent = Some(token);
        self
    }

    /// The coordinator (not started).
    ///
    /// # Errors
    ///
    /// [`CoordinatorConfigError::EmptyWorkerId`] for an empty worker id.
    pub fn build(self) -> Result<LeaseCoordinator, CoordinatorConfigError> {
        if self.worker_id.is_empty() {
            return Err(CoordinatorConfigError::EmptyWorkerId);
        }
        let cancel = match &self.parent {
            Some(parent) => parent.child_token(),
            None => CancellationToken::new(),
        };
        let taker_cancel = cancel.child_token();
        Ok(LeaseCoordinator {
            inner: Arc::new(Inner {
                shared: Arc::new(Shared::new(
                    self.store,
                    self.worker_id,
                    self.config,
                    Arc::new(SystemClock),
                )),
                cancel,
                taker_cancel,
                tasks: Mutex::new(Tasks::default()),
            }),
        })
    }
}

/// What [`LeaseCoordinator::release_all`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ReleaseSummary {
    /// Leases handed back.
    pub released: Vec<String>,
    /// Leases that could not be handed back, with the error. Those that failed with
    /// [`LeaseError::LeaseLost`] were not this worker's any more and are dropped; the others
    /// are still held (and renewed while the coordinator runs): call `release_all` again, or
    /// shut down and let them expire.
    pub failed: Vec<(String, LeaseError)>,
}

impl LeaseCoordinator {
    /// A coordinator for worker `worker_id` over `table`, with the system clock and its own
    /// cancellation token. Not started.
    ///
    /// Worker ids must be unique across the fleet (the Java KCL uses a host name plus a UUID).
    /// Leases stored under this worker's id by an earlier run are taken back once they stood
    /// still for the failover time, as any dead worker's. Two live processes with one id are
    /// detected (an error event, the `DuplicateWorkerId` metric,
    /// [`CoordinatorStats::duplicate_worker_detections`]); neither delivers from a lease the
    /// other holds.
    ///
    /// # Errors
    ///
    /// [`CoordinatorConfigError::EmptyWorkerId`] for an empty worker id.
    pub fn new(
        table: LeaseTable,
        worker_id: impl Into<String>,
        config: CoordinatorConfig,
    ) -> Result<Self, CoordinatorConfigError> {
        Self::builder(table, worker_id).config(config).build()
    }

    /// A builder, to also set a parent cancellation token.
    pub fn builder(table: LeaseTable, worker_id: impl Into<String>) -> LeaseCoordinatorBuilder {
        LeaseCoordinatorBuilder::from_store(Arc::new(table), worker_id)
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// The loops' shared state (a view that does not keep them running).
    pub(crate) fn shared_state(&self) -> Arc<Shared> {
        self.inner.shared.clone()
    }

    fn tasks(&self) -> MutexGuard<'_, Tasks> {
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// This worker's id.
    pub fn worker_id(&self) -> &str {
        &self.shared().worker_id
    }

    /// The timings and limits.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.shared().config
    }

    /// The lease table's name.
    pub fn table_name(&self) -> &str {
        self.shared().store.table_name()
    }

    /// The token that stops the loops (cancel it to stop them without waiting).
    pub fn cancellation_token(&self) -> CancellationToken {
        self.inner.cancel.clone()
    }

    /// Spawns the renew loop (span `lease_renewer`) and the take loop (span `lease_taker`).
    /// The first taking cycle runs at once.
    ///
    /// # Errors
    ///
    /// [`StartError::AlreadyStarted`] on a second call, [`StartError::ShutDown`] after
    /// [`shutdown`](Self::shutdown) or cancellation, [`StartError::NoRuntime`] outside a tokio
    /// runtime.
    pub fn start(&self) -> Result<(), StartError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
        let mut tasks = self.tasks();
        if tasks.started {
            return Err(StartError::AlreadyStarted);
        }
        if self.inner.cancel.is_cancelled() {
            return Err(StartError::ShutDown);
        }
        tasks.started = true;
        let shared = self.shared();
        let worker = shared.worker_id.as_str();
        let table = shared.store.table_name();
        tasks.renewer = Some(runtime.spawn(
            renewer::run(shared.clone(), self.inner.cancel.clone()).instrument(info_span!(
                "lease_renewer",
                worker,
                table
            )),
        ));
        tasks.taker = Some(runtime.spawn(
            taker::run(shared.clone(), self.inner.taker_cancel.clone()).instrument(info_span!(
                "lease_taker",
                worker,
                table
            )),
        ));
        Ok(())
    }

    /// The held leases, as a [`watch`] channel: a map from lease key to the lease **as this
    /// worker acquired it** (the stored lease returned by the take, whose `checkpoint` is where
    /// processing resumes). It changes only when a lease is acquired, lost or released, never
    /// on renewals or checkpoints, so a value that changes for a key that stayed in the map
    /// means the lease was lost and taken again in between: restart its processing from the
    /// new value's checkpoint. [`held`](Self::held) gives the latest copy.
    ///
    /// A watch channel rather than an event stream: a slow subscriber sees the latest state
    /// instead of a backlog, and the coordinator never waits for subscribers.
    pub fn subscribe(&self) -> watch::Receiver<BTreeMap<String, Lease>> {
        self.shared().subscribe()
    }

    /// The latest copy of held lease `lease_key` (its `lease_counter` is the one the next
    /// conditional write must expect), or `None` when this worker does not hold it.
    pub fn held(&self, lease_key: &str) -> Option<Lease> {
        self.shared().held(lease_key)
    }

    /// The latest copies of every held lease.
    pub fn held_leases(&self) -> BTreeMap<String, Lease> {
        self.shared().held_leases()
    }

    /// Replaces the local copy of a held lease after a write made outside the coordinator (a
    /// checkpoint bumps `leaseCounter`). Applied only if this worker holds the lease, `lease`
    /// names this worker as owner and its counter is newer than the local copy's; returns
    /// whether it was. The holding's validity is not extended (when the write was sent is
    /// not known); the next renewal, on the new counter, extends it.
    ///
    /// Only tests write outside the coordinator: every write of the crate's goes through
    /// [`write_holding`](Self::write_holding).
    #[cfg(test)]
    pub(crate) fn update_held(&self, lease: Lease) -> bool {
        self.shared().update_held(lease)
    }

    /// Runs `write` on the latest copy of one holding's lease, with renewals of that lease
    /// held off, and keeps the stored lease it returns as the new local copy. Fenced to the
    /// holding: fails with [`HeldLeaseError::NotHeld`] once that holding ended, even if the
    /// lease was taken again since (a checkpointer of an earlier holding never writes into a
    /// later one).
    ///
    /// A write that fails its condition ([`LeaseError::LeaseLost`]) re-reads the lease: if
    /// another worker asked for it (a graceful handoff, this worker is its
    /// `checkpointOwner`), or the counter was moved by an unanswered write of this worker's,
    /// the new copy is adopted and `write` runs once more with it; otherwise the holding ends
    /// (a stored lease that is no longer this worker's ends it for `gone`). `wrote` says what
    /// the write stores, so that a write whose condition failed counts as applied only when
    /// that is stored (see [`super::state`]). Keep `write` short (one request): the lease is
    /// not renewed while it runs.
    ///
    /// # Errors
    ///
    /// [`HeldLeaseError::NotHeld`] when the holding ended, [`HeldLeaseError::Write`] with the
    /// lease table's error.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future after `write` sent its request leaves the local copy possibly
    /// stale; the next renewal then finds out (and keeps the lease if this worker still owns
    /// it at the next counter, drops it otherwise).
    pub(crate) async fn write_holding<F, Fut>(
        &self,
        held: &HeldRef,
        gone: DropReason,
        wrote: Wrote,
        write: F,
    ) -> Result<Lease, HeldLeaseError>
    where
        F: Fn(Lease) -> Fut,
        Fut: Future<Output = Result<Lease, LeaseError>>,
    {
        // The first try, one after a handoff request or a counter moved by an unanswered
        // write of this worker's, and one more for both.
        const ATTEMPTS: usize = 3;
        let shared = self.shared();
        let not_held = || HeldLeaseError::NotHeld {
            lease_key: held.key.clone(),
        };
        let failed = |source| HeldLeaseError::Write {
            lease_key: held.key.clone(),
            source,
        };
        let _write = held.write_lock.clone().lock_owned().await;
        for _ in 0..ATTEMPTS {
            let (lease, _) = shared.current(held).ok_or_else(not_held)?;
            let sent_at = shared.clock.now();
            match write(lease.clone()).await {
                Ok(stored) => {
                    shared.after_write(held, stored.clone(), sent_at, gone);
                    return Ok(stored);
                }
                Err(source) if source.is_lease_lost() => {
                    let limit = shared.config.renew_interval();
                    let reread = match timeout(limit, shared.store.get(&held.key)).await {
                        Ok(Ok(stored)) => Ok(stored),
                        _ => Err(()),
                    };
                    match shared.resolve_conflict(held, &lease, reread, sent_at, &wrote) {
                        Conflict::Applied(stored, moved_at) => {
                            shared.after_write(held, (*stored).clone(), moved_at, gone);
                            return Ok(*stored);
                        }
                        Conflict::Retry => continue,
                        Conflict::Lost => return Err(failed(source)),
                        Conflict::Unreadable => {
                            return Err(failed(unresolved(
                                shared.store.table_name(),
                                "the lease could not be re-read after a failed condition",
                            )));
                        }
                    }
                }
                Err(source) => {
                    if may_have_applied(&source) {
                        shared.unanswered(held, lease.lease_counter, sent_at);
                    }
                    return Err(failed(source));
                }
            }
        }
        Err(failed(unresolved(
            shared.store.table_name(),
            "the lease kept changing under the write",
        )))
    }

    /// [`write_holding`](Self::write_holding) of one UpdateItem, `update`, on the latest copy
    /// of the holding's lease, bounded by the renew interval (a request that hangs counts as
    /// failed, as the renewals' do).
    async fn update_holding<F, Fut>(
        &self,
        held: &HeldRef,
        gone: DropReason,
        wrote: Wrote,
        update: F,
    ) -> Result<Lease, HeldLeaseError>
    where
        F: Fn(Arc<Shared>, Lease) -> Fut,
        Fut: Future<Output = Result<Lease, LeaseError>>,
    {
        let shared = self.shared().clone();
        self.write_holding(held, gone, wrote, |lease| {
            let shared = shared.clone();
            let write = update(shared.clone(), lease);
            async move {
                let limit = shared.config.renew_interval();
                within("UpdateItem", shared.store.table_name(), limit, write).await
            }
        })
        .await
    }

    /// Records `checkpoint` for the current holding of `lease_key` (tests' shorthand for
    /// [`checkpoint_holding`](Self::checkpoint_holding)).
    #[cfg(test)]
    pub(crate) async fn checkpoint(
        &self,
        lease_key: &str,
        checkpoint: Checkpoint,
    ) -> Result<Lease, HeldLeaseError> {
        let held = self
            .holding(lease_key)
            .ok_or_else(|| HeldLeaseError::NotHeld {
                lease_key: lease_key.to_owned(),
            })?;
        self.checkpoint_holding(&held, checkpoint).await
    }

    /// Records `checkpoint` for the holding's lease (see [`LeaseTable::checkpoint`]), with
    /// renewals held off, and keeps the stored lease as the local copy. The request is bounded
    /// by the renew interval.
    ///
    /// # Errors
    ///
    /// As for [`write_holding`](Self::write_holding).
    ///
    /// # Cancel safety
    ///
    /// As for [`write_holding`](Self::write_holding).
    pub(crate) async fn checkpoint_holding(
        &self,
        held: &HeldRef,
        checkpoint: Checkpoint,
    ) -> Result<Lease, HeldLeaseError> {
        let wrote = Wrote::Checkpoint(checkpoint.clone());
        self.update_holding(held, DropReason::Lost, wrote, move |shared, lease| {
            let checkpoint = checkpoint.clone();
            async move { shared.store.checkpoint(&lease, checkpoint).await }
        })
        .await
    }

    /// Notes when the holding's lease, still at `LATEST`, was first read (see
    /// [`LeaseTable::note_latest_start`]), fenced to one holding.
    pub(crate) async fn note_latest_start_holding(
        &self,
        held: &HeldRef,
        at: SystemTime,
    ) -> Result<Lease, HeldLeaseError> {
        let at = whole_millis(at);
        let wrote = Wrote::LatestStart(at);
        self.update_holding(
            held,
            DropReason::Lost,
            wrote,
            move |shared, lease| async move { shared.store.note_latest_start(&lease, at).await },
        )
        .await
    }

    /// Prepares a checkpoint (see [`LeaseTable::prepare_checkpoint`]), fenced to one holding.
    pub(crate) async fn prepare_checkpoint_holding(
        &self,
        held: &HeldRef,
        pending: Checkpoint,
        state: Option<Vec<u8>>,
    ) -> Result<Lease, HeldLeaseError> {
        let wrote = Wrote::Pending(pending.clone(), state.clone());
        self.update_holding(held, DropReason::Lost, wrote, move |shared, lease| {
            let pending = pending.clone();
            let state = state.clone();
            async move {
                shared
                    .store
                    .prepare_checkpoint(&lease, pending, state)
                    .await
            }
        })
        .await
    }

    /// Hands the current holding of `lease_key` back (tests' shorthand for
    /// [`release_holding`](Self::release_holding)).
    #[cfg(test)]
    pub(crate) async fn release(&self, lease_key: &str) -> Result<(), HeldLeaseError> {
        let held = self
            .holding(lease_key)
            .ok_or_else(|| HeldLeaseError::NotHeld {
                lease_key: lease_key.to_owned(),
            })?;
        self.release_holding(&held).await
    }

    /// Hands the holding's lease back (see [`LeaseTable::release`]): the stored lease loses
    /// its owner, so any worker takes it in its next taking cycle; during a handoff it goes to
    /// the worker that asked for it. This worker does not take it back for one failover time.
    /// The request is bounded by the renew interval.
    ///
    /// # Errors
    ///
    /// As for [`write_holding`](Self::write_holding); after a failure other than a lost lease
    /// the lease is still held.
    pub(crate) async fn release_holding(&self, held: &HeldRef) -> Result<(), HeldLeaseError> {
        let shared = self.shared();
        let handing_off = shared
            .current(held)
            .is_some_and(|(lease, _)| lease.checkpoint_owner.as_deref() == Some(&shared.worker_id));
        let gone = if handing_off {
            DropReason::HandedOff
        } else {
            DropReason::Released
        };
        self.update_holding(held, gone, Wrote::Release, |shared, lease| async move {
            shared.store.release(&lease).await
        })
        .await
        .map(|_| ())
    }

    /// Ends the holding of a lease whose shard was processed to its end (its checkpoint is
    /// `SHARD_END`): it is no longer renewed nor counted as held, and waits for lease cleanup.
    /// Returns whether the holding was still there.
    pub(crate) fn finish(&self, held: &HeldRef) -> bool {
        self.shared().remove(held, DropReason::Finished)
    }

    /// The finished leases this worker held and that were not deleted yet.
    pub(crate) fn finished(&self) -> BTreeMap<String, Lease> {
        self.shared().finished()
    }

    /// Forgets a finished lease (deleted, or taken by another worker).
    pub(crate) fn forget_finished(&self, key: &str) {
        self.shared().forget_finished(key);
    }

    /// The current holding of `lease_key`, as a fencing token.
    pub(crate) fn holding(&self, lease_key: &str) -> Option<HeldRef> {
        self.shared().held_ref(lease_key)
    }

    /// The latest copy of one holding, `None` once it ended.
    pub(crate) fn holding_lease(&self, held: &HeldRef) -> Option<Lease> {
        self.shared().current(held).map(|(lease, _)| lease)
    }

    /// Waits until the holding may deliver records (`true`) or ended (`false`); see
    /// [`super::state`] on validity.
    pub(crate) async fn wait_valid(&self, held: &HeldRef) -> bool {
        self.shared().wait_valid(held).await
    }

    /// Whether the holding may deliver records now.
    pub(crate) fn is_valid(&self, held: &HeldRef) -> bool {
        matches!(
            self.shared().validity(held),
            super::state::Validity::Valid(_)
        )
    }

    /// Keys of held leases another worker asked for (a graceful handoff; see
    /// [Handoffs](Self#handoffs)).
    pub fn handoff_requests(&self) -> watch::Receiver<BTreeSet<String>> {
        self.shared().subscribe_handoffs()
    }

    /// The last successful scan of the lease table (for lease cleanup).
    pub(crate) fn last_scan(&self) -> Option<Arc<ScanSnapshot>> {
        self.shared().last_scan()
    }

    /// Runs a taking cycle now instead of at the next take interval (for example when a
    /// shard ended and its children wait to be taken). Returns at once.
    pub fn take_now(&self) {
        self.shared().wake_taker.notify_one();
    }

    /// Stops taking leases for good (this worker is leaving) and hands every held lease back,
    /// concurrently (bounded). Waits for a taking cycle in progress to end first, so nothing
    /// is taken after the releases. The renew loop keeps running for leases that could not be
    /// released.
    ///
    /// # Cancel safety
    ///
    /// Taking stays stopped; releases already sent may or may not apply.
    pub async fn release_all(&self) -> ReleaseSummary {
        self.stop_taking().await;
        let permits = Arc::new(Semaphore::new(
            self.config().max_concurrent_requests().get(),
        ));
        let mut releases = JoinSet::new();
        for held in self.shared().held_refs() {
            let this = self.clone();
            let permits = permits.clone();
            releases.spawn(async move {
                let _permit = permits.acquire_owned().await.ok();
                let result = this.release_holding(&held).await;
                (held.key, result)
            });
        }
        let mut summary = ReleaseSummary::default();
        while let Some(joined) = releases.join_next().await {
            match joined {
                Ok((key, Ok(()))) => summary.released.push(key),
                Ok((_, Err(HeldLeaseError::NotHeld { .. }))) => {}
                Ok((key, Err(HeldLeaseError::Write { source, .. }))) => {
                    summary.failed.push((key, source));
                }
                Err(err) => {
                    if err.is_panic() {
                        error!(worker = self.worker_id(), "lease release panicked");
                    }
                }
            }
        }
        summary.released.sort();
        summary
    }

    /// Stops taking leases for good (this worker is leaving), waiting for a taking cycle in
    /// progress to end, so nothing is taken after this returns, and withdraws the handoffs
    /// this worker asked for and did not complete. Renewals go on.
    ///
    /// # Cancel safety
    ///
    /// Taking stays stopped.
    pub async fn stop_taking(&self) {
        self.inner.taker_cancel.cancel();
        let taker = self.tasks().taker.take();
        if let Some(taker) = taker
            && let Err(err) = taker.await
            && err.is_panic()
        {
            error!(worker = self.worker_id(), "lease taker panicked");
        }
        // Handoffs asked for and not completed would leave their leases to nobody.
        super::handoff::cancel_all(self.shared()).await;
    }

    /// Counters of the renew and take loops.
    pub fn stats(&self) -> CoordinatorStats {
        self.shared().stats()
    }

    /// Stops both loops and waits for them to finish the cycle in progress. Held leases are
    /// not released (call [`release_all`](Self::release_all) first for that): they are no
    /// longer renewed and expire at other workers after the failover time.
    ///
    /// # Cancel safety
    ///
    /// The loops stop whether or not this future is polled to the end.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        let (renewer, taker) = {
            let mut tasks = self.tasks();
            (tasks.renewer.take(), tasks.taker.take())
        };
        for task in [renewer, taker].into_iter().flatten() {
            if let Err(err) = task.await
                && err.is_panic()
            {
                error!(worker = self.worker_id(), "lease coordinator task panicked");
            }
        }
    }

    /// Stops both loops at once, abandoning requests in flight: from the fleet's point of view
    /// this worker died. Held leases are neither renewed nor released.
    pub fn abort(&self) {
        self.inner.cancel.cancel();
        let mut tasks = self.tasks();
        for task in [tasks.renewer.take(), tasks.taker.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}
