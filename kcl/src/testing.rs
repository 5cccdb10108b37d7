//! A processor test kit (feature `test-util`): drive a [`ShardRecordProcessor`] without
//! DynamoDB or Kinesis, and see what it checkpointed.
//!
//! - [`InitializeInputBuilder`] and [`ProcessRecordsInputBuilder`] make the inputs a worker
//!   hands a processor: records from raw bytes or aggregated from
//!   [`aggregation_proto::UserRecord`]s (deaggregated as the worker does, with sub-sequence
//!   numbers), sequence numbers, arrival times, `millis_behind_latest`.
//! - [`TestCheckpointer`] holds a real [`Checkpointer`] (the type processors take, with the
//!   same position checks) whose writes go to memory instead of a lease table. It records
//!   every call ([`RecordedCall`]) and every checkpoint written, and fails the next call with
//!   any [`CheckpointErrorKind`] on request, so failure paths can be tested.
//! - [`ProcessorHarness`] runs the lifecycle calls in order, telling the checkpointer what the
//!   worker would (records delivered, shard end reached).
//!
//! ```
//! use kcl::lease::Checkpoint;
//! use kcl::testing::{InitializeInputBuilder, ProcessRecordsInputBuilder, ProcessorHarness, UserRecord};
//! use kcl::{Checkpointer, ProcessRecordsInput, ShardRecordProcessor};
//!
//! #[derive(Default)]
//! struct Counter {
//!     seen: Vec<String>,
//! }
//!
//! impl ShardRecordProcessor for Counter {
//!     async fn process_records(&mut self, input: ProcessRecordsInput, checkpointer: &mut Checkpointer) {
//!         for record in &input.records {
//!             self.seen.push(String::from_utf8_lossy(record.data()).into_owned());
//!         }
//!         let _ = checkpointer.checkpoint().await;
//!     }
//!
//!     async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
//!         let _ = checkpointer.checkpoint_shard_end().await;
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut harness = ProcessorHarness::new(
//!     Counter::default(),
//!     InitializeInputBuilder::new("shardId-000000000000").build(),
//! );
//! harness.initialize().await;
//! // One plain record (sequence number 1), then one KPL aggregate of three user records
//! // (sequence number 2, sub-sequence numbers 0 to 2).
//! let batch = ProcessRecordsInputBuilder::new()
//!     .record("pk-a", "a")
//!     .aggregated([
//!         UserRecord::new("pk-b", "b"),
//!         UserRecord::new("pk-c", "c"),
//!         UserRecord::new("pk-d", "d"),
//!     ])?
//!     .millis_behind_latest(0)
//!     .build();
//! harness.process_records(batch).await;
//! harness.shard_ended().await;
//!
//! assert_eq!(harness.processor().seen, ["a", "b", "c", "d"]);
//! assert_eq!(
//!     harness.checkpointer().checkpoints(),
//!     [Checkpoint::sequence("2", 2), Checkpoint::ShardEnd]
//! );
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::time::SystemTime;

/// The record types the builders take, from [`aggregation_proto`].
pub use aggregation_proto::{AddError, ReceivedRecord, UserRecord};
use aggregation_proto::{Aggregator, AggregatorConfig, DeaggregatedRecord, deaggregate};
use bytes::Bytes;

use crate::checkpointer::{CheckpointError, Checkpointer};
use crate::coordinator::HeldLeaseError;
use crate::lease::{Checkpoint, LeaseError, LeaseErrorKind};
use crate::processor::{InitializeInput, ProcessRecordsInput, ShardRecordProcessor};

/// Builds an [`InitializeInput`]: a shard starting from `TRIM_HORIZON` with nothing pending,
/// unless set otherwise.
#[derive(Debug, Clone)]
pub struct InitializeInputBuilder {
    input: InitializeInput,
}

impl InitializeInputBuilder {
    /// The input for shard `shard_id` (the lease key), from `TRIM_HORIZON`.
    pub fn new(shard_id: impl Into<String>) -> Self {
        Self {
            input: InitializeInput {
                shard_id: shard_id.into(),
                checkpoint: Checkpoint::TrimHorizon,
                pending_checkpoint: None,
                pending_checkpoint_state: None,
            },
        }
    }

    /// The checkpoint processing resumes after.
    pub fn checkpoint(mut self, checkpoint: Checkpoint) -> Self {
        self.input.checkpoint = checkpoint;
        self
    }

    /// A checkpoint an earlier processor prepared but did not commit, with its state.
    pub fn pending_checkpoint(mut self, checkpoint: Checkpoint, state: Option<Vec<u8>>) -> Self {
        self.input.pending_checkpoint = Some(checkpoint);
        self.input.pending_checkpoint_state = state;
        self
    }

    /// The input.
    pub fn build(self) -> InitializeInput {
        self.input
    }
}

/// Builds a [`ProcessRecordsInput`] from Kinesis records, deaggregated as the worker does.
///
/// Each Kinesis record added takes the next sequence number (from 1, or from
/// [`first_sequence_number`](Self::first_sequence_number)) unless it brings its own; one that
/// brings a decimal sequence number moves the numbering on past it. Records added after
/// [`arrival_time`](Self::arrival_time) carry that arrival time.
#[derive(Debug, Clone)]
pub struct ProcessRecordsInputBuilder {
    records: Vec<DeaggregatedRecord>,
    next_sequence_number: u128,
    arrival_time: Option<SystemTime>,
    millis_behind_latest: Option<i64>,
}

impl Default for ProcessRecordsInputBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessRecordsInputBuilder {
    /// An empty batch; sequence numbers from 1; no arrival times, no `millis_behind_latest`.
    pub fn new() -> Self {
        Self {
            records: Vec::new(),
            next_sequence_number: 1,
            arrival_time: None,
            millis_behind_latest: None,
        }
    }

    /// The sequence number of the next Kinesis record added (to continue an earlier batch).
    pub fn first_sequence_number(mut self, sequence_number: u128) -> Self {
        self.next_sequence_number = sequence_number;
        self
    }

    /// The arrival time of the records added from now on.
    pub fn arrival_time(mut self, arrival: SystemTime) -> Self {
        self.arrival_time = Some(arrival);
        self
    }

    /// How far behind the tip of the shard the batch is.
    pub fn millis_behind_latest(mut self, millis: i64) -> Self {
        self.millis_behind_latest = Some(millis);
        self
    }

    /// A plain (not aggregated) record: one user record without a sub-sequence number.
    pub fn record(self, partition_key: impl Into<String>, data: impl Into<Bytes>) -> Self {
        self.kinesis_record(ReceivedRecord::new(partition_key.into(), data))
    }

    /// One KPL aggregate of `records`, as one Kinesis record: its user records share its
    /// sequence number, with sub-sequence numbers `0..n`. A single record comes out as a
    /// plain record, as the KPL sends it.
    ///
    /// # Errors
    /// [`AddError`] when a record is invalid (e.g. an empty partition key) or the records do
    /// not fit in one aggregate.
    pub fn aggregated(
        self,
        records: impl IntoIterator<Item = UserRecord>,
    ) -> Result<Self, AddError> {
        let mut aggregator = Aggregator::new(AggregatorConfig::default());
        for record in records {
            aggregator.try_add(&record)?;
        }
        Ok(match aggregator.finish() {
            Some(aggregate) => {
                self.kinesis_record(ReceivedRecord::new(aggregate.partition_key, aggregate.data))
            }
            None => self,
        })
    }

    /// A Kinesis record as it is (aggregated or not): its own sequence number and arrival
    /// time if it has them, otherwise the builder's.
    pub fn kinesis_record(mut self, mut record: ReceivedRecord) -> Self {
        match record.sequence_number.as_deref() {
            Some(sequence_number) => {
                if let Ok(number) = sequence_number.parse::<u128>() {
                    self.next_sequence_number = number.saturating_add(1);
                }
            }
            None => {
                record.sequence_number = Some(self.next_sequence_number.to_string().into());
                self.next_sequence_number = self.next_sequence_number.saturating_add(1);
            }
        }
        if record.approximate_arrival_timestamp.is_none() {
            record.approximate_arrival_timestamp = self.arrival_time;
        }
        self.records.extend(deaggregate(&record));
        self
    }

    /// The batch.
    pub fn build(self) -> ProcessRecordsInput {
        ProcessRecordsInput {
            records: self.records,
            millis_behind_latest: self.millis_behind_latest,
        }
    }
}

/// The kind of a [`CheckpointError`]: what [`TestCheckpointer::fail_next`] injects and what a
/// [`RecordedCall`] failed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CheckpointErrorKind {
    /// [`CheckpointError::LeaseLost`].
    LeaseLost,
    /// [`CheckpointError::InvalidPosition`].
    InvalidPosition,
    /// [`CheckpointError::ShardNotEnded`].
    ShardNotEnded,
    /// [`CheckpointError::NothingPrepared`].
    NothingPrepared,
    /// [`CheckpointError::Write`] (a transient DynamoDB failure).
    Write,
}

impl CheckpointErrorKind {
    /// The kind of `error`.
    pub fn of(error: &CheckpointError) -> Self {
        match error {
            CheckpointError::LeaseLost { .. } => Self::LeaseLost,
            CheckpointError::InvalidPosition { .. } => Self::InvalidPosition,
            CheckpointError::ShardNotEnded => Self::ShardNotEnded,
            CheckpointError::NothingPrepared => Self::NothingPrepared,
            CheckpointError::Write(_) => Self::Write,
        }
    }

    /// An error of this kind, as the production checkpointer would return it for `call`.
    fn error(self, call: &CheckpointCall, lease_key: &str) -> CheckpointError {
        const INJECTED: &str = "injected by the test";
        match self {
            Self::LeaseLost => CheckpointError::LeaseLost {
                lease_key: lease_key.to_owned(),
            },
            Self::InvalidPosition => {
                let (sequence_number, sub_sequence_number) = match call {
                    CheckpointCall::CheckpointAt {
                        sequence_number,
                        sub_sequence_number,
                    }
                    | CheckpointCall::PrepareCheckpoint {
                        sequence_number,
                        sub_sequence_number,
                        ..
                    } => (sequence_number.clone(), *sub_sequence_number),
                    _ => (String::new(), 0),
                };
                CheckpointError::InvalidPosition {
                    sequence_number,
                    sub_sequence_number,
                    reason: INJECTED,
                }
            }
            Self::ShardNotEnded => CheckpointError::ShardNotEnded,
            Self::NothingPrepared => CheckpointError::NothingPrepared,
            Self::Write => CheckpointError::Write(Box::new(HeldLeaseError::Write {
                lease_key: lease_key.to_owned(),
                source: LeaseError::Dynamo {
                    operation: "UpdateItem",
                    table: "test".to_owned(),
                    kind: LeaseErrorKind::Transient,
                    source: INJECTED.into(),
                },
            })),
        }
    }
}

/// A call a processor made on its [`Checkpointer`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointCall {
    /// [`Checkpointer::checkpoint`].
    Checkpoint,
    /// [`Checkpointer::checkpoint_at`].
    CheckpointAt {
        /// The requested sequence number.
        sequence_number: String,
        /// The requested sub-sequence number.
        sub_sequence_number: u64,
    },
    /// [`Checkpointer::checkpoint_shard_end`].
    CheckpointShardEnd,
    /// [`Checkpointer::prepare_checkpoint`].
    PrepareCheckpoint {
        /// The requested sequence number.
        sequence_number: String,
        /// The requested sub-sequence number.
        sub_sequence_number: u64,
        /// The application state given.
        state: Option<Vec<u8>>,
    },
    /// [`Checkpointer::commit_prepared`].
    CommitPrepared,
    /// [`Checkpointer::request_restart`].
    RequestRestart {
        /// The reason given.
        reason: String,
    },
}

/// A [`CheckpointCall`] and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordedCall {
    /// The call.
    pub call: CheckpointCall,
    /// Its result (`Ok` for a call that wrote nothing because nothing was new).
    pub result: Result<(), CheckpointErrorKind>,
}

/// The in-memory backend of a [`Checkpointer`]: what was called and written, and the failures
/// a test queued.
#[derive(Debug, Default)]
pub(crate) struct MemoryLog {
    calls: Vec<RecordedCall>,
    written: Vec<Checkpoint>,
    pending: Option<(Checkpoint, Option<Vec<u8>>)>,
    fail: VecDeque<CheckpointErrorKind>,
}

impl MemoryLog {
    /// Records `call`; the error it must fail with, if the test queued one.
    pub(crate) fn call(
        &mut self,
        call: CheckpointCall,
        lease_key: &str,
    ) -> Option<CheckpointError> {
        let injected = self.fail.pop_front();
        let error = injected.map(|kind| kind.error(&call, lease_key));
        self.calls.push(RecordedCall {
            call,
            result: injected.map_or(Ok(()), Err),
        });
        error
    }

    /// Sets the result of the last call recorded.
    pub(crate) fn result(&mut self, result: &Result<(), CheckpointError>) {
        if let Some(last) = self.calls.last_mut() {
            last.result = result.as_ref().map(|_| ()).map_err(CheckpointErrorKind::of);
        }
    }

    pub(crate) fn restart_requested(&mut self, reason: &str) {
        self.calls.push(RecordedCall {
            call: CheckpointCall::RequestRestart {
                reason: reason.to_owned(),
            },
            result: Ok(()),
        });
    }

    /// A checkpoint was stored (which clears the pending one, as in the lease table).
    pub(crate) fn wrote(&mut self, checkpoint: Checkpoint) {
        self.written.push(checkpoint);
        self.pending = None;
    }

    pub(crate) fn prepared(&mut self, pending: Checkpoint, state: Option<Vec<u8>>) {
        self.pending = Some((pending, state));
    }
}

/// A [`Checkpointer`] without a lease table, for tests: the same checks as in production
/// (positions must have been delivered, SHARD_END only at the shard's end, an equal
/// checkpoint is not written again), with writes recorded in memory.
///
/// Pass [`checkpointer`](Self::checkpointer) where a processor takes `&mut Checkpointer`.
/// Before calling the processor, tell it what the worker would: [`deliver`](Self::deliver)
/// a batch before `process_records`, [`end_shard`](Self::end_shard) before `shard_ended`
/// ([`ProcessorHarness`] does both).
#[derive(Debug)]
pub struct TestCheckpointer {
    checkpointer: Checkpointer,
}

/// What a checkpointer without a log shows (never the case here: a `TestCheckpointer` is
/// always made in memory).
static EMPTY: MemoryLog = MemoryLog {
    calls: Vec::new(),
    written: Vec::new(),
    pending: None,
    fail: VecDeque::new(),
};

impl TestCheckpointer {
    /// A checkpointer for `shard_id` starting from `TRIM_HORIZON`, nothing pending.
    pub fn new(shard_id: impl Into<String>) -> Self {
        Self::for_input(&InitializeInputBuilder::new(shard_id).build())
    }

    /// A checkpointer starting where `input` says: its checkpoint and pending checkpoint.
    pub fn for_input(input: &InitializeInput) -> Self {
        let log = MemoryLog {
            pending: input
                .pending_checkpoint
                .clone()
                .map(|pending| (pending, input.pending_checkpoint_state.clone())),
            ..MemoryLog::default()
        };
        Self {
            checkpointer: Checkpointer::in_memory(
                input.shard_id.clone(),
                input.checkpoint.clone(),
                input.pending_checkpoint.clone(),
                log,
            ),
        }
    }

    /// The checkpointer to hand the processor.
    pub fn checkpointer(&mut self) -> &mut Checkpointer {
        &mut self.checkpointer
    }

    /// Marks `input`'s records delivered, as the worker does before `process_records`: the
    /// processor may then checkpoint up to its last record.
    pub fn deliver(&mut self, input: &ProcessRecordsInput) {
        if let Some(last) = input.records.last() {
            self.deliver_position(
                last.sequence_number().unwrap_or("0"),
                last.sub_sequence_number().unwrap_or(0),
            );
        }
    }

    /// Marks every record up to this position delivered.
    pub fn deliver_position(&mut self, sequence_number: &str, sub_sequence_number: u64) {
        self.checkpointer
            .delivered(sequence_number, sub_sequence_number);
    }

    /// Marks the shard's end reached, as the worker does before `shard_ended`.
    pub fn end_shard(&mut self) {
        self.checkpointer.shard_end_reached();
    }

    /// Makes the next fallible call fail with an error of `kind`, whatever it asks (the call is
    /// recorded; nothing changes). Failures queue: calling this twice fails the next two calls.
    pub fn fail_next(&mut self, kind: CheckpointErrorKind) {
        if let Some(log) = self.checkpointer.memory_log_mut() {
            log.fail.push_back(kind);
        }
    }

    fn log(&self) -> &MemoryLog {
        self.checkpointer.memory_log().unwrap_or(&EMPTY)
    }

    /// Every call the processor made, in order, with its result.
    pub fn calls(&self) -> &[RecordedCall] {
        &self.log().calls
    }

    /// Every checkpoint written, in order (calls that failed or changed nothing write none).
    pub fn checkpoints(&self) -> &[Checkpoint] {
        &self.log().written
    }

    /// The checkpoint stored: the last one written, or the one processing started from.
    pub fn last_checkpoint(&self) -> &Checkpoint {
        self.checkpointer.last_checkpoint()
    }

    /// The pending (prepared, not committed) checkpoint stored, with its state.
    pub fn pending_checkpoint(&self) -> Option<(&Checkpoint, Option<&[u8]>)> {
        self.log()
            .pending
            .as_ref()
            .map(|(checkpoint, state)| (checkpoint, state.as_deref()))
    }

    /// The reason of the last [`Checkpointer::request_restart`], if the processor asked.
    pub fn restart_requested(&self) -> Option<&str> {
        self.checkpointer.restart_requested()
    }
}

/// Runs a processor's lifecycle calls against a [`TestCheckpointer`], doing what the worker
/// does around each (records delivered before `process_records`, the shard's end reached
/// before `shard_ended`). Call them in the worker's order: `initialize`, `process_records`*,
/// then one of `shard_ended`, `shutdown_requested`, `lease_lost`.
#[derive(Debug)]
pub struct ProcessorHarness<P> {
    processor: P,
    input: InitializeInput,
    checkpointer: TestCheckpointer,
}

impl<P: ShardRecordProcessor> ProcessorHarness<P> {
    /// A harness for `processor`, to be initialized with `input`.
    pub fn new(processor: P, input: InitializeInput) -> Self {
        Self {
            checkpointer: TestCheckpointer::for_input(&input),
            processor,
            input,
        }
    }

    /// Calls [`ShardRecordProcessor::initialize`].
    pub async fn initialize(&mut self) {
        self.processor.initialize(self.input.clone()).await;
    }

    /// Marks the batch delivered and calls [`ShardRecordProcessor::process_records`].
    pub async fn process_records(&mut self, input: ProcessRecordsInput) {
        self.checkpointer.deliver(&input);
        self.processor
            .process_records(input, self.checkpointer.checkpointer())
            .await;
    }

    /// Marks the shard's end reached and calls [`ShardRecordProcessor::shard_ended`].
    pub async fn shard_ended(&mut self) {
        self.checkpointer.end_shard();
        self.processor
            .shard_ended(self.checkpointer.checkpointer())
            .await;
    }

    /// Calls [`ShardRecordProcessor::shutdown_requested`].
    pub async fn shutdown_requested(&mut self) {
        self.processor
            .shutdown_requested(self.checkpointer.checkpointer())
            .await;
    }

    /// Calls [`ShardRecordProcessor::lease_lost`].
    pub async fn lease_lost(&mut self) {
        self.processor.lease_lost().await;
    }

    /// The processor.
    pub fn processor(&self) -> &P {
        &self.processor
    }

    /// The processor, to change it between calls.
    pub fn processor_mut(&mut self) -> &mut P {
        &mut self.processor
    }

    /// The checkpointer: what was called and written.
    pub fn checkpointer(&self) -> &TestCheckpointer {
        &self.checkpointer
    }

    /// The checkpointer, to inject failures ([`TestCheckpointer::fail_next`]).
    pub fn checkpointer_mut(&mut self) -> &mut TestCheckpointer {
        &mut self.checkpointer
    }

    /// The processor and the checkpointer.
    pub fn into_parts(self) -> (P, TestCheckpointer) {
        (self.processor, self.checkpointer)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_batch_numbers_plain_and_aggregated_records_as_kinesis_does() {
        let arrival = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let batch = ProcessRecordsInputBuilder::new()
            .first_sequence_number(100)
            .record("a", "plain")
            .arrival_time(arrival)
            .aggregated([UserRecord::new("b", "one"), UserRecord::new("c", "two")])
            .unwrap()
            .kinesis_record(ReceivedRecord::new("d", "own").with_sequence_number("500"))
            .record("e", "after")
            .millis_behind_latest(42)
            .build();
        let seen: Vec<_> = batch
            .records
            .iter()
            .map(|r| {
                (
                    r.partition_key(),
                    r.data(),
                    r.sequence_number(),
                    r.sub_sequence_number(),
                    r.approximate_arrival_timestamp(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("a", &b"plain"[..], Some("100"), None, None),
                ("b", b"one", Some("101"), Some(0), Some(arrival)),
                ("c", b"two", Some("101"), Some(1), Some(arrival)),
                ("d", b"own", Some("500"), None, Some(arrival)),
                ("e", b"after", Some("501"), None, Some(arrival)),
            ]
        );
        assert_eq!(batch.millis_behind_latest, Some(42));
        assert!(matches!(
            ProcessRecordsInputBuilder::new().aggregated([UserRecord::new("", "x")]),
            Err(AddError::Invalid(_))
        ));
        assert!(
            ProcessRecordsInputBuilder::new()
                .aggregated([])
                .unwrap()
                .build()
                .records
                .is_empty()
        );
    }

    #[test]
    fn an_initialize_input_starts_where_it_is_told() {
        let input = InitializeInputBuilder::new("s")
            .checkpoint(Checkpoint::sequence("10", 0))
            .pending_checkpoint(Checkpoint::sequence("20", 1), Some(vec![7]))
            .build();
        assert_eq!(input.shard_id, "s");
        assert_eq!(input.checkpoint, Checkpoint::sequence("10", 0));
        assert_eq!(
            input.pending_checkpoint,
            Some(Checkpoint::sequence("20", 1))
        );
        assert_eq!(input.pending_checkpoint_state, Some(vec![7]));
        let fresh = InitializeInputBuilder::new("s").build();
        assert_eq!(fresh.checkpoint, Checkpoint::TrimHorizon);
        assert_eq!(fresh.pending_checkpoint, None);
    }

    #[tokio::test]
    async fn every_call_is_recorded_and_checked_as_in_production() {
        let mut test = TestCheckpointer::new("s");
        // Nothing delivered: a no-op, and a position is refused.
        test.checkpointer().checkpoint().await.unwrap();
        assert!(matches!(
            test.checkpointer().checkpoint_at("1", 0).await,
            Err(CheckpointError::InvalidPosition { .. })
        ));
        test.deliver_position("5", 2);
        test.checkpointer().checkpoint_at("5", 1).await.unwrap();
        test.checkpointer().checkpoint().await.unwrap();
        // Equal to the last: not written again.
        test.checkpointer().checkpoint().await.unwrap();
        assert!(matches!(
            test.checkpointer().checkpoint_shard_end().await,
            Err(CheckpointError::ShardNotEnded)
        ));
        test.checkpointer().request_restart("stuck");
        test.end_shard();
        test.checkpointer().checkpoint_shard_end().await.unwrap();

        let at = |sequence_number: &str, sub_sequence_number| CheckpointCall::CheckpointAt {
            sequence_number: sequence_number.to_owned(),
            sub_sequence_number,
        };
        let calls: Vec<_> = test
            .calls()
            .iter()
            .map(|c| (c.call.clone(), c.result))
            .collect();
        assert_eq!(
            calls,
            [
                (CheckpointCall::Checkpoint, Ok(())),
                (at("1", 0), Err(CheckpointErrorKind::InvalidPosition)),
                (at("5", 1), Ok(())),
                (CheckpointCall::Checkpoint, Ok(())),
                (CheckpointCall::Checkpoint, Ok(())),
                (
                    CheckpointCall::CheckpointShardEnd,
                    Err(CheckpointErrorKind::ShardNotEnded)
                ),
                (
                    CheckpointCall::RequestRestart {
                        reason: "stuck".into()
                    },
                    Ok(())
                ),
                (CheckpointCall::CheckpointShardEnd, Ok(())),
            ]
        );
        assert_eq!(
            test.checkpoints(),
            [
                Checkpoint::sequence("5", 1),
                Checkpoint::sequence("5", 2),
                Checkpoint::ShardEnd
            ]
        );
        assert_eq!(test.last_checkpoint(), &Checkpoint::ShardEnd);
        assert_eq!(test.restart_requested(), Some("stuck"));
    }

    #[tokio::test]
    async fn the_next_call_fails_with_each_kind_and_changes_nothing() {
        let kinds = [
            CheckpointErrorKind::LeaseLost,
            CheckpointErrorKind::InvalidPosition,
            CheckpointErrorKind::ShardNotEnded,
            CheckpointErrorKind::NothingPrepared,
            CheckpointErrorKind::Write,
        ];
        for kind in kinds {
            let mut test = TestCheckpointer::new("shard-1");
            test.deliver_position("9", 0);
            test.fail_next(kind);
            let error = test.checkpointer().checkpoint_at("9", 0).await.unwrap_err();
            assert_eq!(CheckpointErrorKind::of(&error), kind);
            assert!(test.checkpoints().is_empty(), "{kind:?}");
            assert_eq!(test.last_checkpoint(), &Checkpoint::TrimHorizon);
            assert_eq!(test.calls()[0].result, Err(kind));
            // Only the next call: the one after writes.
            test.checkpointer().checkpoint_at("9", 0).await.unwrap();
            assert_eq!(test.checkpoints(), [Checkpoint::sequence("9", 0)]);
        }
        let mut test = TestCheckpointer::new("shard-1");
        test.fail_next(CheckpointErrorKind::Write);
        test.fail_next(CheckpointErrorKind::LeaseLost);
        let write = test.checkpointer().checkpoint().await.unwrap_err();
        assert!(matches!(&write, CheckpointError::Write(e) if e.is_retryable()));
        assert!(matches!(
            test.checkpointer().prepare_checkpoint("1", 0, None).await,
            Err(CheckpointError::LeaseLost { lease_key }) if lease_key == "shard-1"
        ));
        assert_eq!(test.pending_checkpoint(), None);
    }

    #[tokio::test]
    async fn two_phase_checkpoints_keep_the_pending_one_until_committed() {
        let input = InitializeInputBuilder::new("s")
            .checkpoint(Checkpoint::sequence("10", 0))
            .pending_checkpoint(Checkpoint::sequence("30", 0), Some(vec![1]))
            .build();
        let mut test = TestCheckpointer::for_input(&input);
        assert_eq!(
            test.pending_checkpoint(),
            Some((&Checkpoint::sequence("30", 0), Some(&[1u8][..])))
        );
        test.deliver_position("20", 0);
        assert!(matches!(
            test.checkpointer().commit_prepared().await,
            Err(CheckpointError::InvalidPosition { .. })
        ));
        test.checkpointer()
            .prepare_checkpoint("15", 0, Some(vec![2]))
            .await
            .unwrap();
        assert_eq!(
            test.pending_checkpoint(),
            Some((&Checkpoint::sequence("15", 0), Some(&[2u8][..])))
        );
        assert!(test.checkpoints().is_empty());
        test.checkpointer().commit_prepared().await.unwrap();
        assert_eq!(test.checkpoints(), [Checkpoint::sequence("15", 0)]);
        assert_eq!(test.pending_checkpoint(), None);
        assert!(matches!(
            test.checkpointer().commit_prepared().await,
            Err(CheckpointError::NothingPrepared)
        ));
    }

    /// Checkpoints every batch, retrying once after a write failure.
    #[derive(Default)]
    struct Retrying {
        initialized: Option<String>,
        lost: bool,
        shut_down: bool,
    }

    impl ShardRecordProcessor for Retrying {
        async fn initialize(&mut self, input: InitializeInput) {
            self.initialized = Some(input.shard_id);
        }

        async fn process_records(
            &mut self,
            _input: ProcessRecordsInput,
            checkpointer: &mut Checkpointer,
        ) {
            if let Err(CheckpointError::Write(_)) = checkpointer.checkpoint().await {
                let _ = checkpointer.checkpoint().await;
            }
        }

        async fn lease_lost(&mut self) {
            self.lost = true;
        }

        async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
            let _ = checkpointer.checkpoint_shard_end().await;
        }

        async fn shutdown_requested(&mut self, checkpointer: &mut Checkpointer) {
            self.shut_down = true;
            let _ = checkpointer.checkpoint().await;
        }
    }

    #[tokio::test]
    async fn the_harness_runs_the_lifecycle_as_the_worker_does() {
        let mut harness = ProcessorHarness::new(
            Retrying::default(),
            InitializeInputBuilder::new("s").build(),
        );
        harness.initialize().await;
        assert_eq!(harness.processor().initialized.as_deref(), Some("s"));
        harness
            .process_records(ProcessRecordsInputBuilder::new().record("k", "1").build())
            .await;
        harness
            .checkpointer_mut()
            .fail_next(CheckpointErrorKind::Write);
        let second = ProcessRecordsInputBuilder::new()
            .first_sequence_number(2)
            .aggregated([UserRecord::new("k", "2"), UserRecord::new("k", "3")])
            .unwrap()
            .build();
        harness.process_records(second).await;
        harness.shutdown_requested().await;
        harness.shard_ended().await;
        harness.lease_lost().await;
        let (processor, test) = harness.into_parts();
        assert!(processor.shut_down && processor.lost);
        assert_eq!(
            test.checkpoints(),
            [
                Checkpoint::sequence("1", 0),
                Checkpoint::sequence("2", 1),
                Checkpoint::ShardEnd
            ]
        );
        assert_eq!(test.calls().len(), 5);
        assert_eq!(test.calls()[1].result, Err(CheckpointErrorKind::Write));
    }
}
