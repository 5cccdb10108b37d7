//! The lease table against DynamoDB Local (`./scripts/emulators.sh start`; `scripts/test.sh`
//! starts it). Here rather than in `kcl/tests/` because most of the writes they test are
//! crate-private. Without the emulator they fail at once saying how to start it:
//! `cargo test -p kinesis-kcl --lib -- --skip table_tests` runs the unit tests alone.
//!
//! Every test works in its own table, so the tests run in parallel. Rows "written by the Java
//! KCL" are built by hand with PutItem, attribute by attribute, as the Java KCL 2.x's
//! `DynamoDBLeaseSerializer` writes them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::sync::Arc;

use crate::lease::{
    BillingMode, Checkpoint, Lease, LeaseError, LeaseErrorKind, LeaseTable, MalformedKind,
    SkipReason, TableOptions,
};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use tokio::sync::Barrier;

/// A real sequence number (56 digits).
const SEQ: &str = "49590338271490256608559692538361571095921575989136588898";
const SEQ2: &str = "49590338271490256608559692540925702759324208523137515618";

/// A fresh lease table (created with [`LeaseTable::create_if_missing`]).
async fn new_table() -> (Client, LeaseTable) {
    let client = integration_tests::dynamodb_client().await;
    let table = lease_table(&client, &integration_tests::unique_name("kcl-lease"));
    assert!(
        table.create_if_missing().await.expect("create_if_missing"),
        "a new table name must be created"
    );
    (client, table)
}

fn lease_table(client: &Client, name: &str) -> LeaseTable {
    LeaseTable::new(client.clone(), name)
        .with_poll_interval(integration_tests::POLL_INTERVAL)
        .with_active_timeout(integration_tests::ACTIVE_TIMEOUT)
}

async fn drop_table(client: &Client, table: &LeaseTable) {
    integration_tests::delete_table(client, table.table_name()).await;
}

/// A lease `key` at TRIM_HORIZON, created in the table.
async fn create_lease(table: &LeaseTable, key: &str) -> Lease {
    let lease = Lease::new(key, Checkpoint::TrimHorizon);
    assert!(
        table
            .create_if_absent(&lease)
            .await
            .expect("create_if_absent")
    );
    lease
}

/// A lease `key` created and taken by `owner`.
async fn owned_lease(table: &LeaseTable, key: &str, owner: &str) -> Lease {
    let lease = create_lease(table, key).await;
    table.take(&lease, owner).await.expect("take")
}

async fn stored(table: &LeaseTable, key: &str) -> Lease {
    table
        .get(key)
        .await
        .expect("get")
        .unwrap_or_else(|| panic!("lease {key} not found"))
}

async fn raw_item(
    client: &Client,
    table: &LeaseTable,
    key: &str,
) -> HashMap<String, AttributeValue> {
    client
        .get_item()
        .table_name(table.table_name())
        .key("leaseKey", AttributeValue::S(key.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .expect("GetItem")
        .item
        .unwrap_or_else(|| panic!("item {key} not found"))
}

async fn put_raw(client: &Client, table: &LeaseTable, item: HashMap<String, AttributeValue>) {
    client
        .put_item()
        .table_name(table.table_name())
        .set_item(Some(item))
        .send()
        .await
        .expect("PutItem");
}

fn assert_lost<T: std::fmt::Debug>(result: Result<T, LeaseError>, key: &str) {
    match result {
        Err(LeaseError::LeaseLost { lease_key }) => assert_eq!(lease_key, key),
        other => panic!("expected LeaseLost for {key}, got {other:?}"),
    }
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn n(value: &str) -> AttributeValue {
    AttributeValue::N(value.to_owned())
}

fn ss(values: &[&str]) -> AttributeValue {
    AttributeValue::Ss(values.iter().map(|v| (*v).to_owned()).collect())
}

/// The DynamoDB type of every attribute the Java KCL 2.x reads, as its serializer writes it.
const JAVA_TYPES: [(&str, &str); 13] = [
    ("leaseKey", "S"),
    ("leaseOwner", "S"),
    ("leaseCounter", "N"),
    ("checkpoint", "S"),
    ("checkpointSubSequenceNumber", "N"),
    ("pendingCheckpoint", "S"),
    ("pendingCheckpointSubSequenceNumber", "N"),
    ("pendingCheckpointState", "B"),
    ("ownerSwitchesSinceCheckpoint", "N"),
    ("parentShardId", "SS"),
    ("childShardIds", "SS"),
    ("startingHashKey", "S"),
    ("endingHashKey", "S"),
];

fn type_of(value: &AttributeValue) -> &'static str {
    match value {
        AttributeValue::S(_) => "S",
        AttributeValue::N(_) => "N",
        AttributeValue::B(_) => "B",
        AttributeValue::Ss(_) => "SS",
        AttributeValue::M(_) => "M",
        _ => "other",
    }
}

/// Checks that the Java KCL 2.x would read `item`: every attribute it writes unconditionally
/// is there, every attribute it knows has its type, numbers fit a Java `long`, and nothing
/// but its attributes and `extra` is present.
fn assert_java_readable(item: &HashMap<String, AttributeValue>, extra: &[&str]) {
    let java: BTreeMap<&str, &str> = JAVA_TYPES.into_iter().collect();
    for required in [
        "leaseKey",
        "leaseCounter",
        "checkpoint",
        "checkpointSubSequenceNumber",
        "ownerSwitchesSinceCheckpoint",
    ] {
        assert!(item.contains_key(required), "{required} missing: {item:?}");
    }
    for (name, value) in item {
        if let Some(expected) = java.get(name.as_str()) {
            assert_eq!(type_of(value), *expected, "type of {name}");
            if let AttributeValue::N(number) = value {
                number
                    .parse::<i64>()
                    .unwrap_or_else(|_| panic!("{name} = {number} is not a Java long"));
            }
        } else {
            assert!(
                extra.contains(&name.as_str()),
                "unexpected attribute {name}"
            );
        }
    }
    if item.contains_key("pendingCheckpoint") {
        assert!(item.contains_key("pendingCheckpointSubSequenceNumber"));
    }
}

#[tokio::test]
async fn create_if_missing_twice_is_a_no_op() {
    let (client, table) = new_table().await;
    create_lease(&table, "shardId-000000000000").await;
    assert!(
        !table
            .create_if_missing()
            .await
            .expect("second create_if_missing")
    );
    // The table and its lease are untouched.
    assert_eq!(table.list().await.expect("list").len(), 1);
    drop_table(&client, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_if_missing_concurrently_creates_once() {
    let client = integration_tests::dynamodb_client().await;
    let name = integration_tests::unique_name("kcl-lease");
    let barrier = Arc::new(Barrier::new(2));
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let table = lease_table(&client, &name);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                table.create_if_missing().await
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        if task.await.expect("task").expect("create_if_missing") {
            created += 1;
        }
    }
    assert_eq!(created, 1, "exactly one worker creates the table");
    let table = lease_table(&client, &name);
    assert!(table.list().await.expect("list").is_empty());
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn create_if_absent_does_not_overwrite() {
    let (client, table) = new_table().await;
    let lease = Lease::new("shardId-000000000000", Checkpoint::TrimHorizon);
    assert!(table.create_if_absent(&lease).await.expect("first"));
    let mut other = Lease::new("shardId-000000000000", Checkpoint::Latest);
    other.lease_owner = Some("intruder".into());
    assert!(!table.create_if_absent(&other).await.expect("second"));
    assert_eq!(stored(&table, "shardId-000000000000").await, lease);
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn create_lease_creates_an_unowned_lease_and_never_changes_a_stored_one() {
    let (client, table) = new_table().await;
    let lease = Lease::new("shardId-000000000000", Checkpoint::TrimHorizon);
    assert!(table.create_lease(&lease).await.expect("first"));
    assert_eq!(stored(&table, "shardId-000000000000").await, lease);
    // A held lease stays as its holder left it.
    let held = table.take(&lease, "worker-1").await.expect("take");
    let again = Lease::new("shardId-000000000000", Checkpoint::Latest);
    assert!(!table.create_lease(&again).await.expect("second"));
    assert_eq!(stored(&table, "shardId-000000000000").await, held);
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn renew_bumps_the_counter_and_stale_or_foreign_renewals_are_lost() {
    let (client, table) = new_table().await;
    let key = "shardId-000000000000";
    let held = owned_lease(&table, key, "worker-a").await;
    assert_eq!(held.lease_counter, 1);

    let renewed = table.renew(&held).await.expect("renew");
    assert_eq!(renewed.lease_counter, 2);
    assert_eq!(renewed.lease_owner.as_deref(), Some("worker-a"));
    assert_eq!(stored(&table, key).await, renewed);

    // The copy from before the renewal is stale.
    assert_lost(table.renew(&held).await, key);
    // A copy claiming another owner, with the right counter.
    let mut foreign = renewed.clone();
    foreign.lease_owner = Some("worker-b".into());
    assert_lost(table.renew(&foreign).await, key);
    // A lease that does not exist.
    let mut missing = renewed.clone();
    missing.lease_key = "shardId-000000000099".into();
    assert_lost(table.renew(&missing).await, "shardId-000000000099");

    assert_eq!(
        stored(&table, key).await,
        renewed,
        "failed renewals change nothing"
    );
    let err = table.renew(&held).await.unwrap_err();
    assert_eq!(err.kind(), LeaseErrorKind::LeaseLost);
    assert!(!err.is_retryable());
    drop_table(&client, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_takes_have_exactly_one_winner() {
    let (client, table) = new_table().await;
    let key = "shardId-000000000000";
    create_lease(&table, key).await;
    for round in 0..5 {
        let before = stored(&table, key).await;
        let barrier = Arc::new(Barrier::new(2));
        let tasks: Vec<_> = ["worker-a", "worker-b"]
            .into_iter()
            .map(|worker| {
                let table = table.clone();
                let lease = before.clone();
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    barrier.wait().await;
                    (worker, table.take(&lease, worker).await)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            match task.await.expect("task") {
                (worker, Ok(lease)) => {
                    assert_eq!(lease.lease_owner.as_deref(), Some(worker));
                    winners.push((worker, lease));
                }
                (_, Err(err)) => assert!(err.is_lease_lost(), "round {round}: {err:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one take wins");
        let (_, won) = &winners[0];
        assert_eq!(won.lease_counter, before.lease_counter + 1);
        assert_eq!(&stored(&table, key).await, won);
    }
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn take_counts_owner_switches_like_the_java_kcl() {
    let (client, table) = new_table().await;
    let key = "shardId-000000000000";
    let first = owned_lease(&table, key, "worker-a").await;
    assert_eq!(
        first.owner_switches_since_checkpoint, 0,
        "from nobody: no switch"
    );
    let stolen = table.take(&first, "worker-b").await.expect("steal");
    assert_eq!(stolen.owner_switches_since_checkpoint, 1);
    assert_eq!(stolen.lease_counter, 2);
    let again = table
        .take(&stolen, "worker-b")
        .await
        .expect("retake by owner");
    assert_eq!(
        again.owner_switches_since_checkpoint, 1,
        "same owner: no switch"
    );
    let checkpointed = table
        .checkpoint(&again, Checkpoint::sequence(SEQ, 0))
        .await
        .expect("checkpoint");
    assert_eq!(checkpointed.owner_switches_since_checkpoint, 0);
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn checkpoint_by_a_non_owner_or_with_a_stale_counter_is_lost() {
    let (client, table) = new_table().await;
    let key = "shardId-000000000000";
    let held = owned_lease(&table, key, "worker-a").await;

    let mut foreign = held.clone();
    foreign.lease_owner = Some("worker-b".into());
    assert_lost(
        table
            .checkpoint(&foreign, Checkpoint::sequence(SEQ, 0))
            .await,
        key,
    );

    let renewed = table.renew(&held).await.expect("renew");
    assert_lost(
        table.checkpoint(&held, Checkpoint::sequence(SEQ, 0)).await,
        key,
    );
    assert_lost(
        table
            .prepare_checkpoint(&held, Checkpoint::sequence(SEQ, 0), None)
            .await,
        key,
    );
    let unchanged = stored(&table, key).await;
    assert_eq!(unchanged, renewed);
    assert_eq!(unchanged.checkpoint, Checkpoint::TrimHorizon);

    // The holder's current copy works, and bumps the counter.
    let checkpointed = table
        .checkpoint(&renewed, Checkpoint::sequence(SEQ, 3))
        .await
        .expect("checkpoint");
    assert_eq!(checkpointed.checkpoint, Checkpoint::sequence(SEQ, 3));
    assert_eq!(checkpointed.lease_counter, renewed.lease_counter + 1);
    assert_eq!(stored(&table, key).await, checkpointed);

    // A bad sequence number never reaches the table.
    let err = table
        .checkpoint(&checkpointed, Checkpoint::sequence("not-a-number", 0))
        .await
        .unwrap_err();
    assert!(
        matches!(err, LeaseError::InvalidCheckpoint { .. }),
        "{err:?}"
    );
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn release_lets_another_worker_take_at_once() {
    let (client, table) = new_table().await;
    let key = "shardId-000000000000";
    let held = owned_lease(&table, key, "worker-a").await;
    let released = table.release(&held).await.expect("release");
    assert_eq!(released.lease_owner, None);
    assert_eq!(released.lease_counter, held.lease_counter + 1);
    assert!(
        !raw_item(&client, &table, key)
            .await
            .contains_key("leaseOwner")
    );

    // The old holder's copy is dead.
    assert_lost(table.renew(&held).await, key);
    assert_lost(table.release(&held).await, key);

    // Another worker takes it from the row it reads, without waiting for expiry.
    let seen = stored(&table, key).await;
    let taken = table.take(&seen, "worker-b").await.expect("take");
    assert_eq!(taken.lease_owner.as_deref(), Some("worker-b"));
    assert_eq!(taken.lease_counter, released.lease_counter + 1);
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn prepare_then_checkpoint_clears_the_pending_fields() {
    let (client, table) = new_table().await;
    let key = "shardId-000000000000";
    let held = owned_lease(&table, key, "worker-a").await;

    let prepared = table
        .prepare_checkpoint(&held, Checkpoint::sequence(SEQ, 4), Some(b"state".to_vec()))
        .await
        .expect("prepare");
    assert_eq!(
        prepared.pending_checkpoint,
        Some(Checkpoint::sequence(SEQ, 4))
    );
    assert_eq!(
        prepared.pending_checkpoint_state.as_deref(),
        Some(&b"state"[..])
    );
    assert_eq!(
        prepared.checkpoint,
        Checkpoint::TrimHorizon,
        "not committed yet"
    );
    let raw = raw_item(&client, &table, key).await;
    assert_eq!(raw["pendingCheckpoint"], s(SEQ));
    assert_eq!(raw["pendingCheckpointSubSequenceNumber"], n("4"));
    assert_eq!(
        raw["pendingCheckpointState"],
        AttributeValue::B(Blob::new(b"state".to_vec()))
    );

    // Preparing again without state drops the old state.
    let prepared = table
        .prepare_checkpoint(&prepared, Checkpoint::sequence(SEQ2, 0), None)
        .await
        .expect("prepare again");
    assert_eq!(
        prepared.pending_checkpoint,
        Some(Checkpoint::sequence(SEQ2, 0))
    );
    assert_eq!(prepared.pending_checkpoint_state, None);

    let committed = table
        .checkpoint(&prepared, Checkpoint::sequence(SEQ2, 0))
        .await
        .expect("checkpoint");
    assert_eq!(committed.checkpoint, Checkpoint::sequence(SEQ2, 0));
    assert_eq!(committed.pending_checkpoint, None);
    assert_eq!(committed.pending_checkpoint_state, None);
    let raw = raw_item(&client, &table, key).await;
    for gone in [
        "pendingCheckpoint",
        "pendingCheckpointSubSequenceNumber",
        "pendingCheckpointState",
    ] {
        assert!(!raw.contains_key(gone), "{gone} still stored");
    }
    assert_java_readable(&raw, &[]);
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn every_attribute_round_trips() {
    let (client, table) = new_table().await;
    let mut lease = Lease::new("shardId-000000000007", Checkpoint::sequence(SEQ, 12));
    lease.lease_owner = Some("worker-a".into());
    lease.lease_counter = 41;
    lease.pending_checkpoint = Some(Checkpoint::sequence(SEQ2, 3));
    lease.pending_checkpoint_state = Some(vec![0, 1, 2, 254, 255]);
    lease.owner_switches_since_checkpoint = 6;
    lease.parent_shard_ids = vec!["shardId-000000000001".into(), "shardId-000000000002".into()];
    lease.child_shard_ids = vec!["shardId-000000000010".into(), "shardId-000000000011".into()];
    lease.hash_key_range = Some((
        "170141183460469231731687303715884105728".into(),
        "340282366920938463463374607431768211455".into(),
    ));
    assert!(table.create_if_absent(&lease).await.expect("create"));
    assert_eq!(stored(&table, &lease.lease_key).await, lease);
    assert_eq!(table.list().await.expect("list"), [lease.clone()]);
    assert_java_readable(&raw_item(&client, &table, &lease.lease_key).await, &[]);

    for sentinel in [
        Checkpoint::TrimHorizon,
        Checkpoint::Latest,
        Checkpoint::AtTimestamp,
        Checkpoint::ShardEnd,
    ] {
        let key = format!("sentinel-{sentinel}");
        let lease = Lease::new(key.as_str(), sentinel.clone());
        assert!(table.create_if_absent(&lease).await.expect("create"));
        assert_eq!(stored(&table, &key).await.checkpoint, sentinel);
        let raw = raw_item(&client, &table, &key).await;
        assert_eq!(raw["checkpoint"], s(sentinel.stored_value()));
        assert_eq!(raw["checkpointSubSequenceNumber"], n("0"));
    }
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn update_child_shards_and_delete() {
    let (client, table) = new_table().await;
    let key = "shardId-000000000000";
    let held = owned_lease(&table, key, "worker-a").await;
    let children = [
        "shardId-000000000002".to_owned(),
        "shardId-000000000001".to_owned(),
    ];
    let updated = table
        .update_child_shards(key, &children)
        .await
        .expect("update_child_shards");
    assert_eq!(
        updated.child_shard_ids,
        ["shardId-000000000001", "shardId-000000000002"]
    );
    assert_eq!(
        updated.lease_counter, held.lease_counter,
        "lineage is not a claim"
    );
    assert!(matches!(
        raw_item(&client, &table, key).await["childShardIds"],
        AttributeValue::Ss(_)
    ));
    // The holder's copy is still current.
    table
        .renew(&held)
        .await
        .expect("renew after lineage update");

    assert_lost(
        table
            .update_child_shards("shardId-000000000099", &children)
            .await,
        "shardId-000000000099",
    );
    table.delete(key).await.expect("delete");
    assert_eq!(table.get(key).await.expect("get"), None);
    table.delete(key).await.expect("deleting a missing lease");
    assert_lost(table.renew(&held).await, key);
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn list_reads_every_page() {
    let (client, table) = new_table().await;
    let table = table.with_scan_page_limit(NonZeroU32::new(2).expect("non-zero"));
    let mut keys = BTreeSet::new();
    for i in 0..5 {
        let key = format!("shardId-{i:012}");
        create_lease(&table, &key).await;
        keys.insert(key);
    }
    let listed: BTreeSet<String> = table
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|lease| lease.lease_key)
        .collect();
    assert_eq!(listed, keys);
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn rows_that_are_not_single_stream_leases_are_skipped_by_list_never_fatal() {
    let (client, table) = new_table().await;
    create_lease(&table, "shardId-000000000009").await;
    // Malformed: a counter that is not a number.
    put_raw(
        &client,
        &table,
        HashMap::from([
            ("leaseKey".to_owned(), s("shardId-000000000000")),
            ("leaseCounter".to_owned(), s("seven")),
            ("checkpoint".to_owned(), s("TRIM_HORIZON")),
        ]),
    )
    .await;
    // A Java multi-stream lease of another application's stream.
    put_raw(
        &client,
        &table,
        HashMap::from([
            (
                "leaseKey".to_owned(),
                s("123456789012:orders:1700000000:shardId-000000000003"),
            ),
            ("leaseCounter".to_owned(), n("0")),
            ("checkpoint".to_owned(), s("TRIM_HORIZON")),
            ("streamName".to_owned(), s("123456789012:orders:1700000000")),
            ("shardId".to_owned(), s("shardId-000000000003")),
        ]),
    )
    .await;
    // Java KCL 3.x rows of other kinds in the same table: no leaseCounter, another entity type.
    put_raw(
        &client,
        &table,
        HashMap::from([
            ("leaseKey".to_owned(), s("Leader")),
            ("lockOwner".to_owned(), s("worker-1")),
        ]),
    )
    .await;
    put_raw(
        &client,
        &table,
        HashMap::from([
            ("leaseKey".to_owned(), s("streamInfo")),
            ("entityType".to_owned(), s("STREAM")),
            ("leaseCounter".to_owned(), n("1")),
            ("checkpoint".to_owned(), s("TRIM_HORIZON")),
        ]),
    )
    .await;
    let listed: Vec<String> = table
        .list()
        .await
        .expect("list never fails on a row")
        .into_iter()
        .map(|lease| lease.lease_key)
        .collect();
    assert_eq!(listed, ["shardId-000000000009"]);
    let scan = table.scan().await.expect("scan");
    let mut skipped: Vec<(String, String)> = scan
        .skipped
        .iter()
        .map(|row| {
            let why = match &row.reason {
                SkipReason::MultiStream => "multi-stream".to_owned(),
                SkipReason::Malformed(malformed) => malformed.attribute().to_owned(),
            };
            (row.lease_key.clone().unwrap_or_default(), why)
        })
        .collect();
    skipped.sort();
    assert_eq!(
        skipped,
        [
            (
                "123456789012:orders:1700000000:shardId-000000000003".to_owned(),
                "multi-stream".to_owned()
            ),
            ("Leader".to_owned(), "leaseCounter".to_owned()),
            ("shardId-000000000000".to_owned(), "leaseCounter".to_owned()),
            ("streamInfo".to_owned(), "entityType".to_owned()),
        ]
    );
    // Reading the malformed row on its own is a typed error naming the attribute.
    let err = table.get("shardId-000000000000").await.unwrap_err();
    let LeaseError::Malformed { source, .. } = &err else {
        panic!("expected Malformed, got {err:?}");
    };
    assert_eq!(source.lease_key(), Some("shardId-000000000000"));
    assert_eq!(source.attribute(), "leaseCounter");
    assert!(matches!(
        source.kind(),
        MalformedKind::WrongType {
            expected: "N",
            found: "S"
        }
    ));
    assert_eq!(err.kind(), LeaseErrorKind::Fatal);
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn a_graceful_handoff_keeps_the_holder_then_gives_the_lease_to_the_taker() {
    let (client, table) = new_table().await;
    let held = owned_lease(&table, "shardId-000000000000", "holder").await;
    let asked = table
        .request_handoff(&held, "taker")
        .await
        .expect("request_handoff");
    // The counter does not move (the holder's renewals go on); the owners do.
    assert_eq!(asked.lease_counter, held.lease_counter);
    assert_eq!(asked.lease_owner.as_deref(), Some("taker"));
    assert_eq!(asked.checkpoint_owner.as_deref(), Some("holder"));
    assert_eq!(asked.holder(), Some("holder"));
    // The holder's old copy no longer matches; the adopted one renews and checkpoints.
    assert_lost(table.renew(&held).await, "shardId-000000000000");
    let renewed = table.renew(&asked).await.expect("renew in the handoff");
    let checkpointed = table
        .checkpoint(&renewed, Checkpoint::sequence(SEQ, 4))
        .await
        .expect("checkpoint in the handoff");
    // A second request while one is in progress fails.
    assert_lost(
        table.request_handoff(&checkpointed, "third").await,
        "shardId-000000000000",
    );
    // Letting go removes checkpointOwner only: the lease is the taker's.
    let released = table.release(&checkpointed).await.expect("release");
    assert_eq!(released.lease_owner.as_deref(), Some("taker"));
    assert_eq!(released.checkpoint_owner, None);
    let raw = raw_item(&client, &table, "shardId-000000000000").await;
    assert!(!raw.contains_key("checkpointOwner"));
    // The request's id stays until the taker takes (our attribute: the Java KCL reads leases by
    // the attributes it knows and ignores it).
    assert!(raw.contains_key("handoffRequestId"));
    assert_java_readable(&raw, &["handoffRequestId"]);
    let taken = table.take(&released, "taker").await.expect("take");
    let raw = raw_item(&client, &table, "shardId-000000000000").await;
    assert!(!raw.contains_key("handoffRequestId"), "a take removes it");
    assert_java_readable(&raw, &[]);
    assert_eq!(taken.checkpoint, Checkpoint::sequence(SEQ, 4));
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn a_latest_lease_notes_its_first_read_until_the_first_checkpoint() {
    let (client, table) = new_table().await;
    let key = "shardId-000000000000";
    let lease = Lease::new(key, Checkpoint::Latest);
    assert!(table.create_if_absent(&lease).await.expect("create"));
    let held = table.take(&lease, "w1").await.expect("take");
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_765_000_000_123);
    let noted = table.note_latest_start(&held, at).await.expect("note");
    assert_eq!(noted.latest_started_at, Some(at));
    assert_eq!(noted.lease_counter, held.lease_counter + 1);
    let raw = raw_item(&client, &table, key).await;
    assert_eq!(
        raw.get("latestStartedAt"),
        Some(&AttributeValue::N("1765000000123".into()))
    );
    // Ours only: the Java KCL reads leases by the attributes it knows.
    assert_java_readable(&raw, &["latestStartedAt"]);
    // Fenced like every holder's write: a stale copy does not write it.
    assert_lost(table.note_latest_start(&held, at).await, key);
    // Another worker's take keeps it (a failover reads from it); a checkpoint removes it.
    let taken = table.take(&noted, "w2").await.expect("take");
    assert_eq!(taken.latest_started_at, Some(at));
    let checkpointed = table
        .checkpoint(&taken, Checkpoint::sequence(SEQ, 0))
        .await
        .expect("checkpoint");
    assert_eq!(checkpointed.latest_started_at, None);
    let raw = raw_item(&client, &table, key).await;
    assert!(!raw.contains_key("latestStartedAt"));
    // Only a lease at LATEST notes a first read.
    let refused = table.note_latest_start(&checkpointed, at).await;
    assert!(
        matches!(refused, Err(LeaseError::InvalidInput { .. })),
        "{refused:?}"
    );
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn every_take_clears_checkpoint_owner_as_the_java_kcl_3x_does() {
    let (client, table) = new_table().await;
    let held = owned_lease(&table, "shardId-000000000000", "holder").await;
    let asked = table
        .request_handoff(&held, "taker")
        .await
        .expect("request_handoff");
    // The holder never answers: the taker takes it after its timeout.
    let forced = table.take(&asked, "taker").await.expect("forced take");
    assert_eq!(forced.checkpoint_owner, None);
    assert_eq!(
        forced.owner_switches_since_checkpoint, 1,
        "the handoff to taker completed"
    );
    let raw = raw_item(&client, &table, "shardId-000000000000").await;
    assert!(!raw.contains_key("checkpointOwner"));
    // A Java 3.x row in a handoff taken by a third worker: checkpointOwner goes too.
    let asked = table
        .request_handoff(&forced, "other")
        .await
        .expect("request_handoff");
    let third = table.take(&asked, "third").await.expect("take");
    assert_eq!(third.checkpoint_owner, None);
    assert_eq!(third.lease_owner.as_deref(), Some("third"));
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn a_finished_lease_is_deleted_once_and_only_if_unchanged() {
    let (client, table) = new_table().await;
    let held = owned_lease(&table, "shardId-000000000000", "w1").await;
    let finished = table
        .checkpoint(&held, Checkpoint::ShardEnd)
        .await
        .expect("checkpoint");
    // A stale copy does not delete it.
    assert!(!table.delete_if_unchanged(&held).await.expect("delete"));
    assert!(
        table
            .get("shardId-000000000000")
            .await
            .expect("get")
            .is_some()
    );
    // Two workers cleaning up with the same copy: exactly one deletes it.
    let (a, b) = tokio::join!(
        table.delete_if_unchanged(&finished),
        table.delete_if_unchanged(&finished)
    );
    assert_eq!(
        [a.expect("delete"), b.expect("delete")]
            .iter()
            .filter(|d| **d)
            .count(),
        1
    );
    assert!(
        table
            .get("shardId-000000000000")
            .await
            .expect("get")
            .is_none()
    );
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn table_options_apply_when_the_table_is_created() {
    let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
    let client = {
        let base = integration_tests::dynamodb_client().await;
        let config = base
            .config()
            .to_builder()
            .interceptor(RecordBodies(requests.clone()))
            .build();
        Client::from_conf(config)
    };
    let name = integration_tests::unique_name("kcl-lease-options");
    let table = lease_table(&client, &name).with_options(
        TableOptions::default()
            .billing_mode(BillingMode::Provisioned {
                read_capacity: std::num::NonZeroI64::new(7).unwrap(),
                write_capacity: std::num::NonZeroI64::new(3).unwrap(),
            })
            .tag("team", "payments")
            .deletion_protection(true)
            .point_in_time_recovery(true),
    );
    assert!(table.create_if_missing().await.expect("create"));
    assert!(!table.create_if_missing().await.expect("exists"));
    let description = client
        .describe_table()
        .table_name(&name)
        .send()
        .await
        .expect("DescribeTable")
        .table
        .expect("table");
    let throughput = description.provisioned_throughput().expect("provisioned");
    assert_eq!(throughput.read_capacity_units(), Some(7));
    assert_eq!(throughput.write_capacity_units(), Some(3));
    assert_eq!(description.deletion_protection_enabled(), Some(true));
    // DynamoDB Local takes tags but cannot list them: the CreateTable request shows them.
    let sent = requests.lock().unwrap().clone();
    let create = sent
        .iter()
        .find(|body| body.contains("\"KeySchema\""))
        .expect("a CreateTable request");
    assert!(
        create.contains(r#""Tags":[{"Key":"team","Value":"payments"}]"#),
        "{create}"
    );
    // Point-in-time recovery was asked for too: DynamoDB Local has no continuous backups
    // (UnknownOperationException), which is a warning, not a failed table creation.
    // Deletion protection holds; turn it off to clean up.
    assert!(
        client
            .delete_table()
            .table_name(&name)
            .send()
            .await
            .is_err()
    );
    client
        .update_table()
        .table_name(&name)
        .deletion_protection_enabled(false)
        .send()
        .await
        .expect("UpdateTable");
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn a_java_kcl_row_is_read_and_stays_java_readable_after_our_writes() {
    let (client, table) = new_table().await;
    let key = "shardId-000000000002";
    let java_worker = "ip-10-0-1-17.ec2.internal:3f0b6c1e-6a3e-4d1c-9d1f-0e4b5b8b6f21";
    // As DynamoDBLeaseSerializer.toDynamoRecord + a later updateLease write it for a child of
    // a merge that has a prepared checkpoint, plus attributes we do not model.
    let item = HashMap::from([
        ("leaseKey".to_owned(), s(key)),
        ("leaseOwner".to_owned(), s(java_worker)),
        ("leaseCounter".to_owned(), n("1207")),
        ("checkpoint".to_owned(), s(SEQ)),
        ("checkpointSubSequenceNumber".to_owned(), n("0")),
        ("ownerSwitchesSinceCheckpoint".to_owned(), n("1")),
        (
            "parentShardId".to_owned(),
            ss(&["shardId-000000000000", "shardId-000000000001"]),
        ),
        ("pendingCheckpoint".to_owned(), s(SEQ2)),
        ("pendingCheckpointSubSequenceNumber".to_owned(), n("5")),
        (
            "pendingCheckpointState".to_owned(),
            AttributeValue::B(Blob::new(vec![0xca, 0xfe])),
        ),
        ("startingHashKey".to_owned(), s("0")),
        (
            "endingHashKey".to_owned(),
            s("170141183460469231731687303715884105727"),
        ),
        // Unknown to the 2.x single-stream schema: must be ignored and preserved.
        ("throughputKBps".to_owned(), n("12.5")),
        (
            "applicationMetadata".to_owned(),
            AttributeValue::M(HashMap::from([("a".to_owned(), n("1"))])),
        ),
    ]);
    put_raw(&client, &table, item.clone()).await;

    let lease = stored(&table, key).await;
    assert_eq!(lease.lease_key, key);
    assert_eq!(lease.lease_owner.as_deref(), Some(java_worker));
    assert_eq!(lease.lease_counter, 1207);
    assert_eq!(lease.checkpoint, Checkpoint::sequence(SEQ, 0));
    assert_eq!(lease.owner_switches_since_checkpoint, 1);
    assert_eq!(
        lease.parent_shard_ids,
        ["shardId-000000000000", "shardId-000000000001"]
    );
    assert!(lease.child_shard_ids.is_empty());
    assert_eq!(
        lease.pending_checkpoint,
        Some(Checkpoint::sequence(SEQ2, 5))
    );
    assert_eq!(
        lease.pending_checkpoint_state.as_deref(),
        Some(&[0xca, 0xfe][..])
    );
    assert_eq!(
        lease.hash_key_range,
        Some((
            "0".to_owned(),
            "170141183460469231731687303715884105727".to_owned()
        ))
    );

    // Steal it from the Java worker, renew, checkpoint, record children.
    let taken = table.take(&lease, "rust-worker").await.expect("take");
    assert_eq!(taken.owner_switches_since_checkpoint, 2);
    let renewed = table.renew(&taken).await.expect("renew");
    let checkpointed = table
        .checkpoint(&renewed, Checkpoint::sequence(SEQ2, 5))
        .await
        .expect("checkpoint");
    table
        .update_child_shards(key, &["shardId-000000000005".to_owned()])
        .await
        .expect("update_child_shards");
    assert_eq!(checkpointed.lease_counter, 1210);

    let raw = raw_item(&client, &table, key).await;
    assert_java_readable(&raw, &["throughputKBps", "applicationMetadata"]);
    assert_eq!(raw["leaseOwner"], s("rust-worker"));
    assert_eq!(raw["leaseCounter"], n("1210"));
    assert_eq!(raw["checkpoint"], s(SEQ2));
    assert_eq!(raw["checkpointSubSequenceNumber"], n("5"));
    assert_eq!(raw["ownerSwitchesSinceCheckpoint"], n("0"));
    assert_eq!(raw["childShardIds"], ss(&["shardId-000000000005"]));
    for kept in [
        "parentShardId",
        "startingHashKey",
        "endingHashKey",
        "throughputKBps",
        "applicationMetadata",
    ] {
        assert_eq!(raw[kept], item[kept], "{kept} must survive our writes");
    }
    for gone in [
        "pendingCheckpoint",
        "pendingCheckpointSubSequenceNumber",
        "pendingCheckpointState",
    ] {
        assert!(
            !raw.contains_key(gone),
            "{gone} must be cleared by the checkpoint"
        );
    }

    // Giving it back removes the owner, as the Java KCL's evict does.
    let released = table
        .release(&stored(&table, key).await)
        .await
        .expect("release");
    let raw = raw_item(&client, &table, key).await;
    assert!(!raw.contains_key("leaseOwner"));
    assert_eq!(raw["leaseCounter"], n(&released.lease_counter.to_string()));
    assert_java_readable(&raw, &["throughputKBps", "applicationMetadata"]);
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn a_java_multi_stream_row_keeps_its_stream_attributes() {
    let (client, table) = new_table().await;
    let key = "123456789012:orders:1700000000:shardId-000000000003";
    // DynamoDBMultiStreamLeaseSerializer adds streamName and shardId to the 2.x row.
    put_raw(
        &client,
        &table,
        HashMap::from([
            ("leaseKey".to_owned(), s(key)),
            ("leaseCounter".to_owned(), n("0")),
            ("checkpoint".to_owned(), s("TRIM_HORIZON")),
            ("checkpointSubSequenceNumber".to_owned(), n("0")),
            ("ownerSwitchesSinceCheckpoint".to_owned(), n("0")),
            ("streamName".to_owned(), s("123456789012:orders:1700000000")),
            ("shardId".to_owned(), s("shardId-000000000003")),
        ]),
    )
    .await;
    let lease = stored(&table, key).await;
    assert_eq!(lease.lease_owner, None);
    assert_eq!(lease.checkpoint, Checkpoint::TrimHorizon);
    let taken = table.take(&lease, "rust-worker").await.expect("take");
    assert_eq!(taken.owner_switches_since_checkpoint, 0);
    table
        .checkpoint(&taken, Checkpoint::ShardEnd)
        .await
        .expect("checkpoint");
    let raw = raw_item(&client, &table, key).await;
    assert_eq!(raw["streamName"], s("123456789012:orders:1700000000"));
    assert_eq!(raw["shardId"], s("shardId-000000000003"));
    assert_eq!(raw["checkpoint"], s("SHARD_END"));
    assert_java_readable(&raw, &["streamName", "shardId"]);
    drop_table(&client, &table).await;
}

/// Keeps the body of every request sent.
#[derive(Debug)]
struct RecordBodies(Arc<std::sync::Mutex<Vec<String>>>);

impl aws_sdk_dynamodb::config::Intercept for RecordBodies {
    fn name(&self) -> &'static str {
        "RecordBodies"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &aws_sdk_dynamodb::config::RuntimeComponents,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        if let Some(body) = context.request().body().bytes() {
            self.0
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(body).into_owned());
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_child_lease_is_created_only_while_its_parent_is_held_and_unfinished() {
    let (client, table) = new_table().await;
    let parent = owned_lease(&table, "shardId-000000000000", "w1").await;
    let child = |n: u32| {
        let mut lease = Lease::new(format!("shardId-00000000000{n}"), Checkpoint::TrimHorizon);
        lease.parent_shard_ids = vec![parent.lease_key.clone()];
        lease
    };
    // The holder creates it, once.
    assert!(
        table
            .create_child_lease(&parent.lease_key, "w1", &child(1))
            .await
            .expect("create")
    );
    assert!(
        !table
            .create_child_lease(&parent.lease_key, "w1", &child(1))
            .await
            .expect("exists")
    );
    let raw = raw_item(&client, &table, "shardId-000000000001").await;
    assert_java_readable(&raw, &[]);
    // Another worker (a stale holder) creates nothing.
    assert_lost(
        table
            .create_child_lease(&parent.lease_key, "w2", &child(2))
            .await,
        &parent.lease_key,
    );
    // During a handoff the holder is the checkpoint owner.
    let asked = table.request_handoff(&parent, "w2").await.expect("handoff");
    assert!(
        table
            .create_child_lease(&parent.lease_key, "w1", &child(2))
            .await
            .expect("the holder in a handoff")
    );
    assert_lost(
        table
            .create_child_lease(&parent.lease_key, "w2", &child(3))
            .await,
        &parent.lease_key,
    );
    // A finished parent, or one deleted by cleanup, creates nothing: a late request from a
    // stale holder cannot bring back a child that was processed and deleted.
    let ended = table
        .checkpoint(&asked, Checkpoint::ShardEnd)
        .await
        .expect("SHARD_END");
    assert_lost(
        table
            .create_child_lease(&parent.lease_key, "w1", &child(3))
            .await,
        &parent.lease_key,
    );
    assert!(table.delete_if_unchanged(&ended).await.expect("delete"));
    assert_lost(
        table
            .create_child_lease(&parent.lease_key, "w1", &child(3))
            .await,
        &parent.lease_key,
    );
    assert!(
        table
            .get("shardId-000000000003")
            .await
            .expect("get")
            .is_none()
    );
    drop_table(&client, &table).await;
}
