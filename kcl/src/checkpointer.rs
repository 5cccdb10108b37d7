//! Recording progress: the checkpointer a processor calls.

use std::cmp::Ordering;

use crate::coordinator::{HeldLeaseError, LeaseCoordinator};
use crate::lease::{Checkpoint, LeaseTable};
use crate::retrieval::compare_sequence_numbers;

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
/// Every write is conditional on this worker still holding the lease: after a lease loss it
/// fails with [`CheckpointError::LeaseLost`], never silently overwriting the new owner's
/// progress.
#[derive(Debug)]
pub struct Checkpointer {
    lease_key: String,
    coordinator: LeaseCoordinator,
    table: LeaseTable,
    last_checkpoint: Checkpoint,
    /// The largest (sequence, sub-sequence) handed to the processor.
    delivered: Option<(String, u64)>,
    shard_end_reached: bool,
    prepared: Option<Checkpoint>,
}

impl Checkpointer {
    pub(crate) fn new(
        lease_key: String,
        coordinator: LeaseCoordinator,
        table: LeaseTable,
        last_checkpoint: Checkpoint,
    ) -> Self {
        Self {
            lease_key,
            coordinator,
            table,
            last_checkpoint,
            delivered: None,
            shard_end_reached: false,
            prepared: None,
        }
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

    /// The last checkpoint written (or the one processing started from).
    pub fn last_checkpoint(&self) -> &Checkpoint {
        &self.last_checkpoint
    }

    /// Checkpoints the last record delivered to the processor. A no-op when nothing was
    /// delivered since the last checkpoint.
    ///
    /// # Errors
    /// [`CheckpointError::LeaseLost`] after the lease was taken; [`CheckpointError::Write`] on
    /// a transient DynamoDB failure.
    pub async fn checkpoint(&mut self) -> Result<(), CheckpointError> {
        let Some((sequence_number, sub_sequence_number)) = self.delivered.clone() else {
            return Ok(());
        };
        self.write(Checkpoint::sequence(sequence_number, sub_sequence_number))
            .await
    }

    /// Checkpoints at a given user record, which must have been delivered and must not lie
    /// before the last checkpoint.
    ///
    /// # Errors
    /// [`CheckpointError::InvalidPosition`], or as for [`checkpoint`](Self::checkpoint).
    pub async fn checkpoint_at(
        &mut self,
        sequence_number: &str,
        sub_sequence_number: u64,
    ) -> Result<(), CheckpointError> {
        self.check_position(sequence_number, sub_sequence_number)?;
        self.write(Checkpoint::sequence(sequence_number, sub_sequence_number))
            .await
    }

    /// Checkpoints the end of the shard, which lets its children start. Only valid once the
    /// end was delivered (in [`ShardRecordProcessor::shard_ended`](crate::ShardRecordProcessor::shard_ended)).
    ///
    /// # Errors
    /// [`CheckpointError::ShardNotEnded`], or as for [`checkpoint`](Self::checkpoint).
    pub async fn checkpoint_shard_end(&mut self) -> Result<(), CheckpointError> {
        if !self.shard_end_reached {
            return Err(CheckpointError::ShardNotEnded);
        }
        self.write(Checkpoint::ShardEnd).await
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
        self.check_position(sequence_number, sub_sequence_number)?;
        let pending = Checkpoint::sequence(sequence_number, sub_sequence_number);
        let table = self.table.clone();
        let prepared = pending.clone();
        self.coordinator
            .write_held(&self.lease_key, move |lease| async move {
                table.prepare_checkpoint(&lease, prepared, state).await
            })
            .await?;
        self.prepared = Some(pending);
        Ok(())
    }

    /// Second phase: makes the prepared checkpoint the checkpoint (and clears it).
    ///
    /// # Errors
    /// [`CheckpointError::NothingPrepared`], or as for [`checkpoint`](Self::checkpoint).
    pub async fn commit_prepared(&mut self) -> Result<(), CheckpointError> {
        let prepared = self
            .prepared
            .take()
            .ok_or(CheckpointError::NothingPrepared)?;
        self.write(prepared).await
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
        self.coordinator
            .checkpoint(&self.lease_key, checkpoint.clone())
            .await?;
        self.last_checkpoint = checkpoint;
        Ok(())
    }
}
