//! The checkpointer refuses positions that were not delivered, SHARD_END before the end, a
//! commit without a prepare, and any write after the lease was taken away.

// Only `put_flushed` of the shared test support is used here.
#[allow(dead_code)]
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use integration_tests::{create_stream, dynamodb_client, kinesis_client, unique_name};
use kcl::lease::{Checkpoint, Lease, LeaseTable};
use kcl::retrieval::PollingConfig;
use kcl::{
    CheckpointError, Checkpointer, InitialPosition, ProcessRecordsInput, Scheduler,
    ShardRecordProcessor,
};
use kpl::{Producer, UserRecord};
use support::put_flushed;

#[derive(Debug, Default)]
struct Findings {
    checks: Vec<(&'static str, String)>,
    lease_lost_called: bool,
    done: bool,
}

struct Prober {
    table: LeaseTable,
    /// Writes as another worker would (the crate's own lease writes are not public).
    dynamodb: aws_sdk_dynamodb::Client,
    findings: Arc<Mutex<Findings>>,
}

impl Prober {
    /// Takes `lease` for worker `thief` as any worker's take does: owner and counter, on the
    /// condition that the counter has not moved.
    async fn steal(&self, lease: &Lease, thief: &str) {
        self.dynamodb
            .update_item()
            .table_name(self.table.table_name())
            .key("leaseKey", AttributeValue::S(lease.lease_key.clone()))
            .update_expression("SET leaseOwner = :thief, leaseCounter = :next")
            .condition_expression("leaseCounter = :counter")
            .expression_attribute_values(":thief", AttributeValue::S(thief.to_owned()))
            .expression_attribute_values(
                ":next",
                AttributeValue::N((lease.lease_counter + 1).to_string()),
            )
            .expression_attribute_values(
                ":counter",
                AttributeValue::N(lease.lease_counter.to_string()),
            )
            .send()
            .await
            .expect("stolen");
    }
}

impl Prober {
    fn note(&self, what: &'static str, result: Result<(), CheckpointError>) {
        let outcome = match result {
            Ok(()) => "ok".to_owned(),
            Err(CheckpointError::InvalidPosition { reason, .. }) => format!("invalid: {reason}"),
            Err(CheckpointError::ShardNotEnded) => "shard not ended".into(),
            Err(CheckpointError::NothingPrepared) => "nothing prepared".into(),
            Err(CheckpointError::LeaseLost { .. }) => "lease lost".into(),
            Err(other) => format!("other: {other}"),
        };
        self.findings
            .lock()
            .expect("findings")
            .checks
            .push((what, outcome));
    }
}

impl ShardRecordProcessor for Prober {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        if self.findings.lock().expect("findings").done {
            return;
        }
        let last = input.records.last().expect("a batch has records");
        let sequence = last.sequence_number().expect("sequence").to_owned();
        let sub = last.sub_sequence_number().unwrap_or(0);
        let first_sub = input.records[0].sub_sequence_number().unwrap_or(0);
        self.note(
            "past delivered",
            checkpointer.checkpoint_at(&sequence, sub + 1).await,
        );
        self.note("not a number", checkpointer.checkpoint_at("12ab", 0).await);
        self.note("shard end early", checkpointer.checkpoint_shard_end().await);
        self.note("commit unprepared", checkpointer.commit_prepared().await);
        self.note(
            "first record",
            checkpointer.checkpoint_at(&sequence, first_sub).await,
        );
        self.note(
            "before checkpoint",
            checkpointer.checkpoint_at("1", 0).await,
        );
        self.note(
            "prepare last",
            checkpointer
                .prepare_checkpoint(&sequence, sub, Some(b"state".to_vec()))
                .await,
        );
        // Another worker takes the lease behind this one's back.
        let shard = checkpointer.shard_id().to_owned();
        let lease = self.table.get(&shard).await.expect("get").expect("lease");
        self.steal(&lease, "thief").await;
        self.note(
            "commit after the lease was taken",
            checkpointer.commit_prepared().await,
        );
        self.findings.lock().expect("findings").done = true;
    }

    async fn lease_lost(&mut self) {
        self.findings.lock().expect("findings").lease_lost_called = true;
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
        let _ = checkpointer.checkpoint_shard_end().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_validated_and_fenced() {
    let stream = unique_name("kcl-ckpt");
    let application = unique_name("kcl-ckpt-app");
    create_stream(&kinesis_client().await, &stream, 1).await;
    let producer = Producer::builder(stream.as_str())
        .client(kinesis_client().await)
        .build()
        .await
        .expect("producer");
    put_flushed(
        &producer,
        (0..20).map(|i| UserRecord::new("k", format!("r{i}"))),
    )
    .await;
    let dynamodb = dynamodb_client().await;
    let table = LeaseTable::new(dynamodb.clone(), application.as_str());
    let findings: Arc<Mutex<Findings>> = Arc::default();
    let scheduler = {
        let table = table.clone();
        let dynamodb = dynamodb.clone();
        let findings = findings.clone();
        Scheduler::builder(application.as_str(), stream.as_str(), move |_: &str| {
            Prober {
                table: table.clone(),
                dynamodb: dynamodb.clone(),
                findings: findings.clone(),
            }
        })
        .clients(kinesis_client().await, dynamodb_client().await)
        .initial_position(InitialPosition::TrimHorizon)
        .failover_time(Duration::from_secs(3))
        .polling(PollingConfig::default().idle_time_between_reads(Duration::from_millis(100)))
        .build()
        .expect("scheduler")
    };
    let handle = scheduler.handle();
    let task = tokio::spawn(scheduler.run());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !findings.lock().expect("findings").lease_lost_called {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            findings.lock().expect("findings")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handle.graceful_shutdown().await;
    task.await.expect("task").expect("run");
    let stored = table
        .list()
        .await
        .expect("leases")
        .pop()
        .expect("one lease");
    let findings = findings.lock().expect("findings");
    let checks: Vec<(&str, &str)> = findings
        .checks
        .iter()
        .map(|(w, o)| (*w, o.as_str()))
        .collect();
    assert_eq!(
        checks,
        vec![
            (
                "past delivered",
                "invalid: it is past the last record delivered"
            ),
            (
                "not a number",
                "invalid: a sequence number is a decimal integer"
            ),
            ("shard end early", "shard not ended"),
            ("commit unprepared", "nothing prepared"),
            ("first record", "ok"),
            (
                "before checkpoint",
                "invalid: it is before the last checkpoint"
            ),
            ("prepare last", "ok"),
            ("commit after the lease was taken", "lease lost"),
        ]
    );
    // The thief's lease kept the last checkpoint written by its owner of the time, and the
    // prepared one still pending.
    assert_eq!(stored.lease_owner.as_deref(), Some("thief"));
    assert!(
        matches!(
            stored.checkpoint,
            Checkpoint::Sequence {
                sub_sequence_number: 0,
                ..
            }
        ),
        "{stored:?}"
    );
    assert!(
        matches!(
            stored.pending_checkpoint,
            Some(Checkpoint::Sequence {
                sub_sequence_number: 19,
                ..
            })
        ),
        "{stored:?}"
    );
}
