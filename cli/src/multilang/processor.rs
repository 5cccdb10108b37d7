//! The shard record processor that runs a child process: each lifecycle call of our consumer
//! becomes one protocol action, and the child's checkpoint requests go through our
//! checkpointer, answered with the Java exception names the client libraries know.
//!
//! Where the Java daemon exits the whole JVM (a child that exits or stops answering), this
//! one kills that child and asks the worker to start the shard over from its last checkpoint
//! with a new child after a backoff; the lease stays.

use std::sync::Arc;
use std::time::Duration;

use kcl::lease::Checkpoint;
use kcl::{
    CheckpointError, Checkpointer, InitializeInput, ProcessRecordsInput, ShardRecordProcessor,
};
use tracing::{error, warn};

use super::child::{Child, ChildCommand};
use super::driver::{CheckpointHandler, DriverError, NoCheckpoints};
use super::protocol::{CheckpointRequest, DaemonMessage, RecordMessage, RequestedPosition};

/// What every shard's processor shares.
#[derive(Debug)]
pub(crate) struct ChildSettings {
    pub(crate) command: ChildCommand,
    /// `timeoutInSeconds`: the longest wait for each message from a child.
    pub(crate) timeout: Option<Duration>,
}

/// Runs one child for one shard.
#[derive(Debug)]
pub(crate) struct ChildProcessor {
    shard_id: String,
    settings: Arc<ChildSettings>,
    child: Option<Child>,
}

impl ChildProcessor {
    pub(crate) fn new(shard_id: &str, settings: Arc<ChildSettings>) -> Self {
        Self {
            shard_id: shard_id.to_owned(),
            settings,
            child: None,
        }
    }

    /// Starts a child and initializes it at `checkpoint`; on failure no child is left.
    async fn start(&mut self, checkpoint: &Checkpoint) -> Result<(), String> {
        let mut child = Child::spawn(
            &self.settings.command,
            &self.shard_id,
            self.settings.timeout,
        )
        .map_err(|e| e.to_string())?;
        let message = initialize_message(&self.shard_id, checkpoint);
        match child.driver.perform(&message, &mut NoCheckpoints).await {
            Ok(()) => {
                self.child = Some(child);
                Ok(())
            }
            Err(error) => {
                child.kill(&self.shard_id).await;
                Err(error.to_string())
            }
        }
    }

    /// Performs `message` on the running child; a child that fails is killed and gone.
    async fn perform(
        &mut self,
        message: &DaemonMessage,
        checkpoints: &mut impl CheckpointHandler,
    ) -> Result<(), DriverError> {
        let Some(child) = self.child.as_mut() else {
            return Err(DriverError::Closed {
                action: message.action(),
            });
        };
        let result = child.driver.perform(message, checkpoints).await;
        if result.is_err()
            && let Some(child) = self.child.take()
        {
            child.kill(&self.shard_id).await;
        }
        result
    }

    /// Tells the child its lease is gone (leaseLost; no checkpoints then), and ends it.
    async fn lose_lease(&mut self) {
        if let Err(error) = self
            .perform(&DaemonMessage::LeaseLost, &mut NoCheckpoints)
            .await
        {
            warn!(shard = %self.shard_id, %error, "the record processor failed on leaseLost");
        }
        self.finish().await;
    }

    /// After the last action: stdin closed, the child's exit awaited.
    async fn finish(&mut self) {
        if let Some(child) = self.child.take() {
            child.finish(&self.shard_id).await;
        }
    }
}

/// `initialize` for a lease at `checkpoint`: sentinels by name with sub-sequence 0, as Java.
pub(crate) fn initialize_message(shard_id: &str, checkpoint: &Checkpoint) -> DaemonMessage {
    let (sequence_number, sub_sequence_number) = match checkpoint {
        Checkpoint::Sequence {
            sequence_number,
            sub_sequence_number,
        } => (sequence_number.clone(), *sub_sequence_number),
        other => (other.stored_value().to_owned(), 0),
    };
    DaemonMessage::Initialize {
        shard_id: shard_id.to_owned(),
        sequence_number: Some(sequence_number),
        sub_sequence_number: Some(sub_sequence_number),
    }
}

/// The simple name of the Java exception the Java daemon answers a failed checkpoint with.
pub(crate) fn java_exception_name(error: &CheckpointError) -> &'static str {
    match error {
        // The lease is gone: Java's checkpointer throws ShutdownException, and the samples
        // stop checkpointing on it.
        CheckpointError::LeaseLost { .. } => "ShutdownException",
        CheckpointError::InvalidPosition { .. } => "IllegalArgumentException",
        CheckpointError::ShardNotEnded | CheckpointError::NothingPrepared => {
            "InvalidStateException"
        }
        _ => "KinesisClientLibDependencyException",
    }
}

/// Checkpoints through our checkpointer.
struct Checkpoints<'a> {
    checkpointer: &'a mut Checkpointer,
}

impl CheckpointHandler for Checkpoints<'_> {
    async fn checkpoint(&mut self, request: &CheckpointRequest) -> Option<&'static str> {
        let result = match request.position() {
            None => return Some("IllegalArgumentException"),
            Some(RequestedPosition::Largest) => self.checkpointer.checkpoint().await,
            Some(RequestedPosition::At {
                sequence_number,
                sub_sequence_number,
            }) => {
                self.checkpointer
                    .checkpoint_at(&sequence_number, sub_sequence_number)
                    .await
            }
        };
        result
            .inspect_err(|error| {
                warn!(shard = self.checkpointer.shard_id(), %error, "the record processor's checkpoint failed");
            })
            .err()
            .map(|error| java_exception_name(&error))
    }
}

impl ShardRecordProcessor for ChildProcessor {
    async fn initialize(&mut self, input: InitializeInput) {
        // A child that does not start or initialize is retried with the first batch (the
        // shard then starts over after a backoff), so nothing is delivered to a dead child.
        if let Err(reason) = self.start(&input.checkpoint).await {
            error!(shard = %self.shard_id, %reason, "the record processor did not initialize");
        }
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        if self.child.is_none() {
            checkpointer.request_restart("the record processor is not running");
            return;
        }
        let message = DaemonMessage::ProcessRecords {
            records: input
                .records
                .iter()
                .map(RecordMessage::from_record)
                .collect(),
            millis_behind_latest: input.millis_behind_latest,
        };
        let mut checkpoints = Checkpoints { checkpointer };
        if let Err(error) = self.perform(&message, &mut checkpoints).await {
            error!(shard = %self.shard_id, %error, "the record processor failed; it is restarted from the last checkpoint");
            checkpointer.request_restart(error.to_string());
        }
    }

    async fn lease_lost(&mut self) {
        if self.child.is_none() {
            return;
        }
        self.lose_lease().await;
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
        // Called again after a backoff until SHARD_END is stored: start a new child if the
        // last one failed.
        if self.child.is_none() {
            let checkpoint = checkpointer.last_checkpoint().clone();
            if let Err(reason) = self.start(&checkpoint).await {
                error!(shard = %self.shard_id, %reason, "the record processor did not initialize for the shard end; retried");
                return;
            }
        }
        let mut checkpoints = Checkpoints { checkpointer };
        match self
            .perform(&DaemonMessage::ShardEnded, &mut checkpoints)
            .await
        {
            Ok(()) => self.finish().await,
            Err(error) => {
                error!(shard = %self.shard_id, %error, "the record processor failed on shardEnded; retried");
            }
        }
    }

    async fn shutdown_requested(&mut self, checkpointer: &mut Checkpointer) {
        if self.child.is_none() {
            return;
        }
        let mut checkpoints = Checkpoints { checkpointer };
        if let Err(error) = self
            .perform(&DaemonMessage::ShutdownRequested, &mut checkpoints)
            .await
        {
            warn!(shard = %self.shard_id, %error, "the record processor failed on shutdownRequested");
            return;
        }
        // The lease is handed back next: the child hears that as leaseLost, as from Java.
        self.lose_lease().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initialize_carries_the_checkpoint() {
        assert_eq!(
            initialize_message("s", &Checkpoint::TrimHorizon),
            DaemonMessage::Initialize {
                shard_id: "s".into(),
                sequence_number: Some("TRIM_HORIZON".into()),
                sub_sequence_number: Some(0),
            }
        );
        assert_eq!(
            initialize_message("s", &Checkpoint::sequence("123", 4)),
            DaemonMessage::Initialize {
                shard_id: "s".into(),
                sequence_number: Some("123".into()),
                sub_sequence_number: Some(4),
            }
        );
    }

    #[test]
    fn checkpoint_errors_map_to_the_java_names() {
        assert_eq!(
            java_exception_name(&CheckpointError::LeaseLost {
                lease_key: "s".into()
            }),
            "ShutdownException"
        );
        assert_eq!(
            java_exception_name(&CheckpointError::InvalidPosition {
                sequence_number: "x".into(),
                sub_sequence_number: 0,
                reason: "r"
            }),
            "IllegalArgumentException"
        );
        assert_eq!(
            java_exception_name(&CheckpointError::ShardNotEnded),
            "InvalidStateException"
        );
    }
}
