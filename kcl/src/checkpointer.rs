//! Recording progress: the checkpointer a processor calls.

use std::cmp::Ordering;

use tokio::sync::watch;

use crate::coordinator::{HeldLeaseError, HeldRef, LeaseCoordinator};
use crate::lease::Checkpoint;
use crate::retrieval::compare_sequence_numbers;
#[cfg(any(test, feature = "test-util"))]
use crate::testing::{CheckpointCall, MemoryLog};

/// Runs one fallible checkpoint call; with a test's in-memory backend, the call is logged
/// first (and may fail there, as the test asked) and its result after. Without `test-util`
/// this is the body alone.
macro_rules! logged {
    ($self:ident, $call:expr, $body:expr) => {{
        #[cfg(any(test, feature = "test-util"))]
        if let Some(error) = $self.log_call(|| $call) {
            return Err(error);
        }
        let result = $body;
        #[cfg(any(test, feature = "test-util"))]
        $self.log_result(&result);
        result
    }};
}

/// Why a checkpoint was not written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// This worker no longer holds the shard's lease: another worker took it. Stop processing;
    /// the new owner resumes from the last checkpoint.
    #[error("lease {lease_key} was lost: another worker owns the shard now")]
    LeaseLost {
        /// The lease (shard id).
        lease_key: String,
    },
    /// The requested position was not delivered to this processor, or lies before the last
    /// checkpoint.
    #[error("cannot checkpoint at {sequence_number}/{sub_sequence_number}: {reason}")]
    InvalidPosition {
        /// The requested sequence number.
        sequence_number: String,
        /// The requested sub-sequence number.
        sub_sequence_number: u64,
        /// Why it is refused.
        reason: &'static str,
    },
    /// SHARD_END may only be checkpointed once the shard's end was delivered.
    #[error(
        "the shard's end has not been reached: SHARD_END can only be checkpointed in shard_ended"
    )]
    ShardNotEnded,
    /// `commit_prepared` without a prepared checkpoint.
    #[error("no checkpoint was prepared")]
    NothingPrepared,
    /// DynamoDB could not be written (throttling, a network error...): retry later.
    #[error("checkpoint write failed; retry: {0}")]
    Write(#[source] Box<HeldLeaseError>),
}

impl From<HeldLeaseError> for CheckpointError {
    fn from(error: HeldLeaseError) -> Self {
        if error.is_lease_lost() {
            Self::LeaseLost {
                lease_key: error.lease_key().to_owned(),
            }
        } else {
            Self::Write(Box::new(error))
        }
    }
}

/// Compares two (sequence number, sub-sequence number) positions.
fn cmp_position(a: (&str, u64), b: (&str, u64)) -> Ordering {
    compare_sequence_numbers(a.0, b.0).then(a.1.cmp(&b.1))
}

/// Writes a shard's checkpoints, checked against what was delivered.
///
/// Every write is conditional on this worker still holding the lease, in the same holding the
/// processor was started for: after a lease loss it fails with
/// [`CheckpointError::LeaseLost`], never silently overwriting the new owner's progress, nor
/// writing into a later holding of the same lease by this worker. A checkpoint equal to the
/// last one written is not written again.
#[derive(Debug)]
pub struct Checkpointer {
    lease_key: String,
    backend: Backend,
    last_checkpoint: Checkpoint,
    /// The largest (sequence, sub-sequence) handed to the processor.
    delivered: Option<(String, u64)>,
    shard_end_reached: bool,
    prepared: Option<Checkpoint>,
    /// Whether the stored lease has pending checkpoint attributes (a checkpoint clears them,
    /// so it is written even when equal to the last one).
    pending_stored: bool,
    /// Why the processor asked to be replaced, if it did.
    restart: Option<String>,
    /// Told of every checkpoint call: the consumer's processor-timeout watchdog.
    progress: Option<watch::Sender<()>>,
}

/// Where a checkpointer's writes go.
#[derive(Debug)]
enum Backend {
    /// The production path: the coordinator, fenced to one holding.
    Lease {
        coordinator: LeaseCoordinator,
        holding: HeldRef,
    },
    /// A test's in-memory log (`kcl::testing`): no lease table, every call recorded.
    #[cfg(any(test, feature = "test-util"))]
    Memory(MemoryLog),
}

impl Checkpointer {
    pub(crate) fn new(
        coordinator: LeaseCoordinator,
        holding: HeldRef,
        last_checkpoint: Checkpoint,
        pending: Option<Checkpoint>,
    ) -> Self {
        let lease_key = holding.key.clone();
        Self::with_backend(
            lease_key,
            Backend::Lease {
                coordinator,
                holding,
            },
            last_checkpoint,
            pending,
        )
    }

    /// The state both backends start from: nothing delivered, prepared or asked for yet.
    fn with_backend(
        lease_key: String,
        backend: Backend,
        last_checkpoint: Checkpoint,
        pending: Option<Checkpoint>,
    ) -> Self {
        Self {
            lease_key,
            backend,
            last_checkpoint,
            delivered: None,
            shard_end_reached: false,
            pending_stored: pending.is_some(),
            prepared: pending,
            restart: None,
            progress: None,
        }
    }

    /// A checkpointer without a lease table, for `kcl::testing`: the same checks, writes
    /// recorded in `log` instead of stored.
    #[cfg(any(test, feature = "test-util"))]
    pub(crate) fn in_memory(
        shard_id: String,
        last_checkpoint: Checkpoint,
        pending: Option<Checkpoint>,
        log: MemoryLog,
    ) -> Self {
        Self::with_backend(shard_id, Backend::Memory(log), last_checkpoint, pending)
    }

    /// The in-memory log, for a checkpointer made by [`in_memory`](Self::in_memory).
    #[cfg(any(test, feature = "test-util"))]
    pub(crate) fn memory_log(&self) -> Option<&MemoryLog> {
        match &self.backend {
            Backend::Memory(log) => Some(log),
            Backend::Lease { .. } => None,
        }
    }

    /// As [`memory_log`](Self::memory_log), to change it (inject failures).
    #[cfg(any(test, feature = "test-util"))]
    pub(crate) fn memory_log_mut(&mut self) -> Option<&mut MemoryLog> {
        match &mut self.backend {
            Backend::Memory(log) => Some(log),
            Backend::Lease { .. } => None,
        }
    }

    /// The restart the processor asked for, if any (not taken).
    #[cfg(any(test, feature = "test-util"))]
    pub(crate) fn restart_requested(&self) -> Option<&str> {
        self.restart.as_deref()
    }

    /// Logs a call with the in-memory backend; the failure the test queued for it, if any.
    #[cfg(any(test, feature = "test-util"))]
    fn log_call(&mut self, call: impl FnOnce() -> CheckpointCall) -> Option<CheckpointError> {
        let lease_key = &self.lease_key;
        match &mut self.backend {
            Backend::Memory(log) => log.call(call(), lease_key),
            Backend::Lease { .. } => None,
        }
    }

    #[cfg(any(test, feature = "test-util"))]
    fn log_result(&mut self, result: &Result<(), CheckpointError>) {
        if let Backend::Memory(log) = &mut self.backend {
            log.result(result);
        }
    }

    /// Signals `progress` on every checkpoint call from now on (whether it writes or not): a
    /// processor that checkpoints is alive, and its processor timeout starts again.
    pub(crate) fn report_progress(&mut self, progress: watch::Sender<()>) {
        self.progress = Some(progress);
    }

    fn progressed(&self) {
        if let Some(progress) = &self.progress {
            progress.send_replace(());
        }
    }

    /// The restart the processor asked for, if any (taken once).
    pub(crate) fn take_restart_request(&mut self) -> Option<String> {
        self.restart.take()
    }

    pub(crate) fn delivered(&mut self, sequence_number: &str, sub_sequence_number: u64) {
        self.delivered = Some((sequence_number.to_owned(), sub_sequence_number));
    }

    pub(crate) fn shard_end_reached(&mut self) {
        self.shard_end_reached = true;
    }

    /// The shard (lease key) this checkpointer writes for.
    pub fn shard_id(&self) -> &str {
        &self.lease_key
    }

    /// Asks the worker to replace this processor: once the current `process_records` call
    /// returns, the processor is dropped and the shard starts over from its last checkpoint
    /// with a new processor after a backoff, as after a panic (the lease stays with this
    /// worker). For a processor that cannot go on, e.g. one whose external process died in
    /// the middle of a batch. (In `shard_ended` there is no need: a shard end without
    /// SHARD_END stored is retried with the same processor after a backoff.)
    pub fn request_restart(&mut self, reason: impl Into<String>) {
        let reason = reason.into();
        #[cfg(any(test, feature = "test-util"))]
        if let Backend::Memory(log) = &mut self.backend {
            log.restart_requested(&reason);
        }
        self.restart = Some(reason);
    }

    /// The last checkpoint written (or the one processing started from).
    pub fn last_checkpoint(&self) -> &Checkpoint {
        &self.last_checkpoint
    }

    /// Checkpoints the last record delivered to the processor. A no-op when nothing was
    /// delivered since the last checkpoint. Once the shard's end was reached (in
    /// [`shard_ended`](crate::ShardRecordProcessor::shard_ended)) this checkpoints
    /// `SHARD_END`, as the Java KCL does.
    ///
    /// # Errors
    /// [`CheckpointError::LeaseLost`] after the lease was taken; [`CheckpointError::Write`] on
    /// a transient DynamoDB failure.
    pub async fn checkpoint(&mut self) -> Result<(), CheckpointError> {
        logged!(
            self,
            CheckpointCall::Checkpoint,
            self.checkpoint_last().await
        )
    }

    async fn checkpoint_last(&mut self) -> Result<(), CheckpointError> {
        if self.shard_end_reached {
            return self.write(Checkpoint::ShardEnd).await;
        }
        let Some((sequence_number, sub_sequence_number)) = self.delivered.clone() else {
            return Ok(());
        };
        self.write(Checkpoint::sequence(sequence_number, sub_sequence_number))
            .await
    }

    /// Checkpoints at a given user record, which must have been delivered and must not lie
    /// before the last checkpoint. Once the shard's end was reached, a checkpoint at the
    /// shard's last record checkpoints `SHARD_END`, as the Java KCL does.
    ///
    /// # Errors
    /// [`CheckpointError::InvalidPosition`], or as for [`checkpoint`](Self::checkpoint).
    pub async fn checkpoint_at(
        &mut self,
        sequence_number: &str,
        sub_sequence_number: u64,
    ) -> Result<(), CheckpointError> {
        logged!(
            self,
            CheckpointCall::CheckpointAt {
                sequence_number: sequence_number.to_owned(),
                sub_sequence_number,
            },
            self.checkpoint_at_position(sequence_number, sub_sequence_number)
                .await
        )
    }

    async fn checkpoint_at_position(
        &mut self,
        sequence_number: &str,
        sub_sequence_number: u64,
    ) -> Result<(), CheckpointError> {
        self.check_position(sequence_number, sub_sequence_number)?;
        let at_last = self.delivered.as_ref().is_some_and(|(seq, sub)| {
            cmp_position((sequence_number, sub_sequence_number), (seq, *sub)) == Ordering::Equal
        });
        if self.shard_end_reached && at_last {
            return self.write(Checkpoint::ShardEnd).await;
        }
        self.write(Checkpoint::sequence(sequence_number, sub_sequence_number))
            .await
    }

    /// Checkpoints the end of the shard, which lets its children start. Only valid once the
    /// end was delivered (in [`ShardRecordProcessor::shard_ended`](crate::ShardRecordProcessor::shard_ended)).
    ///
    /// # Errors
    /// [`CheckpointError::ShardNotEnded`], or as for [`checkpoint`](Self::checkpoint).
    pub async fn checkpoint_shard_end(&mut self) -> Result<(), CheckpointError> {
        logged!(self, CheckpointCall::CheckpointShardEnd, {
            if self.shard_end_reached {
                self.write(Checkpoint::ShardEnd).await
            } else {
                Err(CheckpointError::ShardNotEnded)
            }
        })
    }

    /// First phase of a two-phase checkpoint: records the intended position (and optional
    /// application state) as the lease's pending checkpoint, without moving the checkpoint.
    ///
    /// # Errors
    /// As for [`checkpoint_at`](Self::checkpoint_at).
    pub async fn prepare_checkpoint(
        &mut self,
        sequence_number: &str,
        sub_sequence_number: u64,
        state: Option<Vec<u8>>,
    ) -> Result<(), CheckpointError> {
        logged!(
            self,
            CheckpointCall::PrepareCheckpoint {
                sequence_number: sequence_number.to_owned(),
                sub_sequence_number,
                state: state.clone(),
            },
            self.prepare(sequence_number, sub_sequence_number, state)
                .await
        )
    }

    async fn prepare(
        &mut self,
        sequence_number: &str,
        sub_sequence_number: u64,
        state: Option<Vec<u8>>,
    ) -> Result<(), CheckpointError> {
        self.progressed();
        self.check_position(sequence_number, sub_sequence_number)?;
        let pending = Checkpoint::sequence(sequence_number, sub_sequence_number);
        match &mut self.backend {
            Backend::Lease {
                coordinator,
                holding,
            } => {
                coordinator
                    .prepare_checkpoint_holding(holding, pending.clone(), state)
                    .await?;
            }
            #[cfg(any(test, feature = "test-util"))]
            Backend::Memory(log) => log.prepared(pending.clone(), state),
        }
        self.prepared = Some(pending);
        self.pending_stored = true;
        Ok(())
    }

    /// Second phase: makes the prepared checkpoint the checkpoint (and clears it). The
    /// prepared checkpoint is the one of [`prepare_checkpoint`](Self::prepare_checkpoint), or
    /// the pending checkpoint the lease had when processing started
    /// ([`InitializeInput::pending_checkpoint`](crate::InitializeInput::pending_checkpoint)).
    /// It is validated like any checkpoint: it must have been delivered since processing
    /// started and must not lie before the last checkpoint, so a commit never moves the
    /// checkpoint back.
    ///
    /// # Errors
    /// [`CheckpointError::NothingPrepared`], [`CheckpointError::InvalidPosition`] (the
    /// prepared checkpoint stays prepared), or as for [`checkpoint`](Self::checkpoint).
    pub async fn commit_prepared(&mut self) -> Result<(), CheckpointError> {
        logged!(self, CheckpointCall::CommitPrepared, self.commit().await)
    }

    async fn commit(&mut self) -> Result<(), CheckpointError> {
        let prepared = self
            .prepared
            .clone()
            .ok_or(CheckpointError::NothingPrepared)?;
        if let Checkpoint::Sequence {
            sequence_number,
            sub_sequence_number,
        } = &prepared
        {
            self.check_position(sequence_number, *sub_sequence_number)?;
        }
        self.write(prepared).await?;
        self.prepared = None;
        Ok(())
    }

    fn check_position(
        &self,
        sequence_number: &str,
        sub_sequence_number: u64,
    ) -> Result<(), CheckpointError> {
        let invalid = |reason| CheckpointError::InvalidPosition {
            sequence_number: sequence_number.to_owned(),
            sub_sequence_number,
            reason,
        };
        if sequence_number.is_empty() || !sequence_number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("a sequence number is a decimal integer"));
        }
        let Some((delivered, delivered_sub)) = &self.delivered else {
            return Err(invalid("no record has been delivered yet"));
        };
        if cmp_position(
            (sequence_number, sub_sequence_number),
            (delivered, *delivered_sub),
        ) == Ordering::Greater
        {
            return Err(invalid("it is past the last record delivered"));
        }
        if let Checkpoint::Sequence {
            sequence_number: last,
            sub_sequence_number: last_sub,
        } = &self.last_checkpoint
            && cmp_position((sequence_number, sub_sequence_number), (last, *last_sub))
                == Ordering::Less
        {
            return Err(invalid("it is before the last checkpoint"));
        }
        Ok(())
    }

    async fn write(&mut self, checkpoint: Checkpoint) -> Result<(), CheckpointError> {
        self.progressed();
        if checkpoint == self.last_checkpoint && !self.pending_stored {
            // Already stored: nothing to write; still say so if the holding ended.
            if let Backend::Lease {
                coordinator,
                holding,
            } = &self.backend
                && coordinator.holding_lease(holding).is_none()
            {
                return Err(CheckpointError::LeaseLost {
                    lease_key: self.lease_key.clone(),
                });
            }
            return Ok(());
        }
        match &mut self.backend {
            Backend::Lease {
                coordinator,
                holding,
            } => {
                coordinator
                    .checkpoint_holding(holding, checkpoint.clone())
                    .await?;
            }
            #[cfg(any(test, feature = "test-util"))]
            Backend::Memory(log) => log.wrote(checkpoint.clone()),
        }
        self.last_checkpoint = checkpoint;
        self.pending_stored = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::coordinator::{CoordinatorConfig, LeaseCoordinatorBuilder};
    use crate::lease::Lease;
    use crate::lease::memory::MemoryStore;

    async fn holding(store: &MemoryStore) -> (LeaseCoordinator, HeldRef) {
        let coordinator = LeaseCoordinatorBuilder::from_store(Arc::new(store.clone()), "w1")
            .config(
                CoordinatorConfig::builder()
                    .failover_time(Duration::from_secs(3))
                    .take_interval(Duration::from_millis(100))
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        coordinator.start().unwrap();
        while coordinator.holding("s").is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let held = coordinator.holding("s").unwrap();
        (coordinator, held)
    }

    fn checkpointer(coordinator: &LeaseCoordinator, held: &HeldRef) -> Checkpointer {
        let lease = coordinator.holding_lease(held).unwrap();
        Checkpointer::new(
            coordinator.clone(),
            held.clone(),
            lease.checkpoint,
            lease.pending_checkpoint,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_checkpointer_of_an_earlier_holding_never_writes_into_a_later_one() {
        let store = MemoryStore::with_leases([Lease::new("s", Checkpoint::TrimHorizon)]);
        let (coordinator, first) = holding(&store).await;
        let mut old = checkpointer(&coordinator, &first);
        old.delivered("10", 0);
        old.checkpoint().await.unwrap();
        // The lease is lost (another worker takes it) and this worker takes it back.
        {
            let mut leases = store.lock();
            let lease = leases.get_mut("s").unwrap();
            lease.lease_owner = Some("other".into());
            lease.lease_counter += 1;
        }
        while coordinator
            .holding("s")
            .is_some_and(|h| h.epoch == first.epoch)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        store.lock().get_mut("s").unwrap().lease_owner = None;
        while coordinator.holding("s").is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let second = coordinator.holding("s").unwrap();
        assert_ne!(first.epoch, second.epoch);
        old.delivered("20", 0);
        assert!(matches!(
            old.checkpoint().await,
            Err(CheckpointError::LeaseLost { .. })
        ));
        assert_eq!(
            store.get_now("s").unwrap().checkpoint,
            Checkpoint::sequence("10", 0)
        );
        // The checkpointer of the new holding writes.
        let mut new = checkpointer(&coordinator, &second);
        new.delivered("15", 0);
        new.checkpoint().await.unwrap();
        assert_eq!(
            store.get_now("s").unwrap().checkpoint,
            Checkpoint::sequence("15", 0)
        );
        coordinator.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_equal_checkpoint_is_not_written_again() {
        let store = MemoryStore::with_leases([Lease::new("s", Checkpoint::TrimHorizon)]);
        let (coordinator, held) = holding(&store).await;
        let mut checkpointer = checkpointer(&coordinator, &held);
        checkpointer.delivered("10", 2);
        checkpointer.checkpoint().await.unwrap();
        checkpointer.checkpoint().await.unwrap();
        checkpointer.checkpoint_at("10", 2).await.unwrap();
        assert_eq!(store.writes_of("checkpoint").len(), 1);
        coordinator.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn commit_prepared_is_validated_and_never_moves_the_checkpoint_back() {
        let store = MemoryStore::with_leases([Lease::new("s", Checkpoint::TrimHorizon)]);
        let (coordinator, held) = holding(&store).await;
        let mut checkpointer = checkpointer(&coordinator, &held);
        checkpointer.delivered("10", 0);
        checkpointer
            .prepare_checkpoint("5", 0, Some(vec![1]))
            .await
            .unwrap();
        checkpointer.delivered("20", 0);
        checkpointer.checkpoint_at("15", 0).await.unwrap();
        // The prepared 5 now lies before the checkpoint: refused, and still prepared.
        assert!(matches!(
            checkpointer.commit_prepared().await,
            Err(CheckpointError::InvalidPosition { .. })
        ));
        assert_eq!(
            store.get_now("s").unwrap().checkpoint,
            Checkpoint::sequence("15", 0)
        );
        checkpointer
            .prepare_checkpoint("18", 0, None)
            .await
            .unwrap();
        checkpointer.commit_prepared().await.unwrap();
        let stored = store.get_now("s").unwrap();
        assert_eq!(stored.checkpoint, Checkpoint::sequence("18", 0));
        assert_eq!(stored.pending_checkpoint, None);
        assert!(matches!(
            checkpointer.commit_prepared().await,
            Err(CheckpointError::NothingPrepared)
        ));
        coordinator.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_pending_checkpoint_from_an_earlier_run_commits_once_delivered() {
        let mut lease = Lease::new("s", Checkpoint::sequence("10", 0));
        lease.pending_checkpoint = Some(Checkpoint::sequence("30", 1));
        lease.pending_checkpoint_state = Some(vec![9]);
        let store = MemoryStore::with_leases([lease]);
        let (coordinator, held) = holding(&store).await;
        let mut checkpointer = checkpointer(&coordinator, &held);
        // Not delivered yet: refused.
        checkpointer.delivered("20", 0);
        assert!(matches!(
            checkpointer.commit_prepared().await,
            Err(CheckpointError::InvalidPosition { .. })
        ));
        checkpointer.delivered("30", 4);
        checkpointer.commit_prepared().await.unwrap();
        let stored = store.get_now("s").unwrap();
        assert_eq!(stored.checkpoint, Checkpoint::sequence("30", 1));
        assert_eq!(stored.pending_checkpoint_state, None);
        coordinator.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn in_shard_ended_a_checkpoint_at_the_last_record_is_shard_end() {
        let store = MemoryStore::with_leases([Lease::new("s", Checkpoint::TrimHorizon)]);
        let (coordinator, held) = holding(&store).await;
        let mut checkpointer = checkpointer(&coordinator, &held);
        checkpointer.delivered("40", 0);
        assert!(matches!(
            checkpointer.checkpoint_shard_end().await,
            Err(CheckpointError::ShardNotEnded)
        ));
        checkpointer.shard_end_reached();
        checkpointer.checkpoint_at("40", 0).await.unwrap();
        assert_eq!(store.get_now("s").unwrap().checkpoint, Checkpoint::ShardEnd);
        coordinator.shutdown().await;
    }
}
