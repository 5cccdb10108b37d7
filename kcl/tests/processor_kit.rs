//! The processor test kit (`kcl::testing`, feature `test-util`) used as a user would: only
//! its public API, on a processor written against `&mut Checkpointer`.

use kcl::lease::Checkpoint;
use kcl::testing::{
    CheckpointCall, CheckpointErrorKind, InitializeInputBuilder, ProcessRecordsInputBuilder,
    ProcessorHarness, ReceivedRecord, TestCheckpointer, UserRecord,
};
use kcl::{CheckpointError, Checkpointer, ProcessRecordsInput, ShardRecordProcessor};

/// Writes each record to a sink, checkpointing every `every` records at the last one written;
/// retries a failed write once, stops on a lost lease, asks for a restart on a bad record.
struct Sink {
    every: usize,
    written: Vec<(String, u64, Vec<u8>)>,
    since_checkpoint: usize,
    stopped: bool,
}

impl Sink {
    fn new(every: usize) -> Self {
        Self {
            every,
            written: Vec::new(),
            since_checkpoint: 0,
            stopped: false,
        }
    }
}

impl ShardRecordProcessor for Sink {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        for record in &input.records {
            if self.stopped {
                return;
            }
            if record.data() == b"poison" {
                checkpointer.request_restart("poison record");
                return;
            }
            let sequence_number = record.sequence_number().unwrap_or("0").to_owned();
            let sub = record.sub_sequence_number().unwrap_or(0);
            self.written
                .push((sequence_number.clone(), sub, record.data().to_vec()));
            self.since_checkpoint += 1;
            if self.since_checkpoint < self.every {
                continue;
            }
            let mut result = checkpointer.checkpoint_at(&sequence_number, sub).await;
            if let Err(CheckpointError::Write(_)) = result {
                result = checkpointer.checkpoint_at(&sequence_number, sub).await;
            }
            match result {
                Ok(()) => self.since_checkpoint = 0,
                Err(CheckpointError::LeaseLost { .. }) => self.stopped = true,
                Err(_) => {}
            }
        }
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
        let _ = checkpointer.checkpoint_shard_end().await;
    }

    async fn shutdown_requested(&mut self, checkpointer: &mut Checkpointer) {
        if !self.stopped {
            let _ = checkpointer.checkpoint().await;
        }
    }
}

fn mixed_batch() -> ProcessRecordsInput {
    ProcessRecordsInputBuilder::new()
        .first_sequence_number(49_590_338_271_490_256_608_559_692_538_361_571_095)
        .record("a", "1")
        .aggregated([
            UserRecord::new("b", "2"),
            UserRecord::new("c", "3"),
            UserRecord::new("d", "4"),
        ])
        .expect("three small records fit in one aggregate")
        .record("e", "5")
        .millis_behind_latest(1_000)
        .build()
}

#[tokio::test]
async fn a_processor_checkpoints_plain_and_aggregated_records_then_the_shard_end() {
    let mut harness = ProcessorHarness::new(
        Sink::new(2),
        InitializeInputBuilder::new("shardId-000000000001").build(),
    );
    harness.initialize().await;
    harness.process_records(mixed_batch()).await;
    harness.shard_ended().await;

    let first = "49590338271490256608559692538361571095";
    let aggregate = "49590338271490256608559692538361571096";
    assert_eq!(harness.processor().written.len(), 5);
    assert_eq!(
        harness.checkpointer().checkpoints(),
        [
            Checkpoint::sequence(aggregate, 0),
            Checkpoint::sequence(aggregate, 2),
            Checkpoint::ShardEnd,
        ]
    );
    assert_eq!(
        harness.checkpointer().calls()[0].call,
        CheckpointCall::CheckpointAt {
            sequence_number: aggregate.to_owned(),
            sub_sequence_number: 0,
        }
    );
    assert_eq!(harness.processor().written[0].0, first);
}

#[tokio::test]
async fn a_failed_write_is_retried_and_a_lost_lease_stops_the_processor() {
    let mut harness = ProcessorHarness::new(Sink::new(1), InitializeInputBuilder::new("s").build());
    harness.initialize().await;
    let checkpointer = harness.checkpointer_mut();
    checkpointer.fail_next(CheckpointErrorKind::Write);
    harness
        .process_records(ProcessRecordsInputBuilder::new().record("k", "x").build())
        .await;
    assert_eq!(
        harness.checkpointer().checkpoints(),
        [Checkpoint::sequence("1", 0)]
    );
    let results: Vec<_> = harness
        .checkpointer()
        .calls()
        .iter()
        .map(|c| c.result)
        .collect();
    assert_eq!(results, [Err(CheckpointErrorKind::Write), Ok(())]);

    harness
        .checkpointer_mut()
        .fail_next(CheckpointErrorKind::LeaseLost);
    harness
        .process_records(
            ProcessRecordsInputBuilder::new()
                .first_sequence_number(2)
                .record("k", "y")
                .record("k", "z")
                .build(),
        )
        .await;
    harness.shutdown_requested().await;
    assert!(harness.processor().stopped);
    // Stopped at the first record of the batch: "z" never written, nothing checkpointed.
    assert_eq!(harness.processor().written.len(), 2);
    assert_eq!(
        harness.checkpointer().last_checkpoint(),
        &Checkpoint::sequence("1", 0)
    );
}

#[tokio::test]
async fn a_poison_record_asks_for_a_restart_without_a_harness() {
    let input = InitializeInputBuilder::new("s")
        .checkpoint(Checkpoint::sequence("7", 0))
        .build();
    let mut test = TestCheckpointer::for_input(&input);
    let mut sink = Sink::new(1);
    sink.initialize(input).await;
    let batch = ProcessRecordsInputBuilder::new()
        .kinesis_record(ReceivedRecord::new("k", "poison").with_sequence_number("8"))
        .build();
    test.deliver(&batch);
    sink.process_records(batch, test.checkpointer()).await;
    assert_eq!(test.restart_requested(), Some("poison record"));
    assert!(test.checkpoints().is_empty());
    assert_eq!(test.last_checkpoint(), &Checkpoint::sequence("7", 0));
}
