//! The operator's commands (`describe`, `tail`, `lag`, `leases reset`) and the producer's
//! settings on `produce`, run as a user runs them, against kinesis-mock and DynamoDB Local.

mod common;

use std::collections::HashMap;
use std::process::Output;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use common::{produce_lines, run_with_input};
use integration_tests::{
    create_stream, dynamodb_client, kinesis_client, list_shards, split_in_half, unique_name,
};
use kcl::lease::{Checkpoint, Lease, LeaseTable};
use serde_json::Value;

fn kinesis_cat(args: &[&str]) -> Output {
    kinesis_cat_with_input(args, "")
}

fn kinesis_cat_with_input(args: &[&str], stdin: &str) -> Output {
    run_with_input(common::kinesis_cat(args), stdin)
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("utf-8")
}

/// The exit code, with the output in the message when it is not `expected`.
fn assert_exit(output: &Output, expected: i32) {
    assert_eq!(
        output.status.code(),
        Some(expected),
        "stdout:\n{}\nstderr:\n{}",
        stdout(output),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn json(output: &Output) -> Value {
    serde_json::from_str(&stdout(output)).expect("one JSON document")
}

/// Puts one plain record on the shard owning hash key `hash_key`; its sequence number.
async fn put(stream: &str, hash_key: &str, data: &str) -> String {
    kinesis_client()
        .await
        .put_record()
        .stream_name(stream)
        .partition_key("k")
        .explicit_hash_key(hash_key)
        .data(aws_sdk_kinesis::primitives::Blob::new(data.as_bytes()))
        .send()
        .await
        .expect("PutRecord")
        .sequence_number
}

/// A lease table with `rows`: (shard, owner, checkpoint), written as the Java KCL writes them.
async fn lease_table(rows: &[(&str, Option<&str>, Checkpoint)]) -> (String, LeaseTable) {
    let client = dynamodb_client().await;
    let name = unique_name("cat-ops-app");
    let table = LeaseTable::new(client.clone(), name.as_str())
        .with_poll_interval(integration_tests::POLL_INTERVAL)
        .with_active_timeout(integration_tests::ACTIVE_TIMEOUT);
    table.create_if_missing().await.expect("table");
    for (shard, owner, checkpoint) in rows {
        let mut item = HashMap::from([
            ("leaseKey".to_owned(), AttributeValue::S((*shard).into())),
            ("leaseCounter".to_owned(), AttributeValue::N("7".into())),
            (
                "checkpoint".to_owned(),
                AttributeValue::S(checkpoint.stored_value().into()),
            ),
            (
                "checkpointSubSequenceNumber".to_owned(),
                AttributeValue::N(checkpoint.stored_sub_sequence_number().to_string()),
            ),
            (
                "ownerSwitchesSinceCheckpoint".to_owned(),
                AttributeValue::N("0".into()),
            ),
        ]);
        if let Some(owner) = owner {
            item.insert("leaseOwner".into(), AttributeValue::S((*owner).into()));
        }
        client
            .put_item()
            .table_name(&name)
            .set_item(Some(item))
            .send()
            .await
            .expect("PutItem");
    }
    (name, table)
}

async fn stored(table: &LeaseTable, shard: &str) -> Lease {
    table.get(shard).await.expect("get").expect("lease")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_after_a_split_shows_the_parent_closed_and_the_children_open() {
    let client = kinesis_client().await;
    let stream = unique_name("cat-describe");
    create_stream(&client, &stream, 1).await;
    let parent = list_shards(&client, &stream).await.remove(0);
    split_in_half(&client, &stream, &parent).await;

    let arn = client
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await
        .expect("DescribeStreamSummary")
        .stream_description_summary
        .expect("summary")
        .stream_arn;
    client
        .register_stream_consumer()
        .stream_arn(&arn)
        .consumer_name("fan-out-app")
        .send()
        .await
        .expect("RegisterStreamConsumer");

    let output = kinesis_cat(&["describe", &stream, "--json"]);
    assert_exit(&output, 0);
    let description = json(&output);
    assert_eq!(description["stream_name"], stream.as_str());
    assert_eq!(description["stream_arn"], arn.as_str());
    assert_eq!(description["status"], "ACTIVE");
    assert_eq!(description["retention_hours"], 24);
    assert_eq!(description["open_shards"], 2);
    assert!(
        description["encryption"]["type"].is_string(),
        "{description}"
    );
    let consumers = description["consumers"].as_array().expect("consumers");
    assert_eq!(consumers.len(), 1, "{description}");
    assert_eq!(consumers[0]["name"], "fan-out-app");
    let shards = description["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), 3, "{description}");
    let parent_id = parent.shard_id();
    let closed: Vec<&Value> = shards.iter().filter(|s| s["open"] == false).collect();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0]["shard_id"], parent_id);
    assert!(closed[0]["ending_sequence_number"].is_string());
    let children: Vec<&Value> = shards.iter().filter(|s| s["open"] == true).collect();
    assert!(children.iter().all(|c| c["parent_shard_id"] == parent_id));
    // The children's hash ranges cover the parent's, end to end.
    let mut ranges: Vec<(u128, u128)> = children
        .iter()
        .map(|c| {
            (
                c["starting_hash_key"]
                    .as_str()
                    .expect("start")
                    .parse()
                    .expect("decimal"),
                c["ending_hash_key"]
                    .as_str()
                    .expect("end")
                    .parse()
                    .expect("decimal"),
            )
        })
        .collect();
    ranges.sort();
    assert_eq!(ranges[0].0, 0);
    assert_eq!(ranges[0].1 + 1, ranges[1].0);
    assert_eq!(ranges[1].1, u128::MAX);

    // The readable form says the same.
    let readable = kinesis_cat(&["describe", &stream]);
    assert_exit(&readable, 0);
    let text = stdout(&readable);
    assert!(text.contains("2 open, 1 closed"), "{text}");
    assert!(text.contains("consumers   fan-out-app"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with(parent_id) && l.contains("closed")),
        "{text}"
    );

    // A stream that does not exist: exit 3.
    assert_exit(
        &kinesis_cat(&["describe", &unique_name("no-such-stream")]),
        3,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_across_a_split_reads_the_parent_then_the_children_deaggregated() {
    let client = kinesis_client().await;
    let stream = unique_name("cat-tail");
    create_stream(&client, &stream, 1).await;
    produce_lines(&stream, 0..200, 5, 0).await;
    let parent = list_shards(&client, &stream).await.remove(0);
    split_in_half(&client, &stream, &parent).await;
    produce_lines(&stream, 200..400, 5, 0).await;

    let output = kinesis_cat(&[
        "tail",
        &stream,
        "--from",
        "trim-horizon",
        "--exit-at-end",
        "--json",
    ]);
    assert_exit(&output, 0);
    let records: Vec<Value> = stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let data: Vec<String> = records
        .iter()
        .map(|r| {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(r["data"].as_str().expect("data"))
                .expect("base64");
            String::from_utf8(bytes).expect("utf-8")
        })
        .collect();
    let mut sorted = data.clone();
    sorted.sort();
    let mut expected: Vec<String> = (0..400).map(|i| format!("line {i}")).collect();
    expected.sort();
    assert_eq!(sorted, expected, "every record exactly once");
    // Deaggregated: the producer aggregated, the lines are user records.
    assert!(
        records.iter().any(|r| r["sub_sequence_number"].is_u64()),
        "no aggregated record read"
    );
    // Every record of the parent comes before any record of a child.
    let parent_id = parent.shard_id();
    let last_parent = records
        .iter()
        .rposition(|r| r["shard_id"] == parent_id)
        .expect("parent records");
    let first_child = records
        .iter()
        .position(|r| r["shard_id"] != parent_id)
        .expect("child records");
    assert_eq!(last_parent, 199);
    assert_eq!(first_child, 200);
    // Each key's lines in the order they were sent.
    let mut last_per_key: HashMap<usize, usize> = HashMap::new();
    for line in &data {
        let i: usize = line["line ".len()..].parse().expect("number");
        if let Some(previous) = last_per_key.insert(i % 5, i) {
            assert!(previous < i, "{previous} after {i}");
        }
    }

    // --count stops after that many; --shard reads one shard.
    let counted = kinesis_cat(&["tail", &stream, "--from", "trim-horizon", "--count", "7"]);
    assert_exit(&counted, 0);
    assert_eq!(stdout(&counted).lines().count(), 7);
    let one = kinesis_cat(&[
        "tail",
        &stream,
        "--from",
        "trim-horizon",
        "--shard",
        parent_id,
        "--exit-at-end",
    ]);
    assert_exit(&one, 0);
    assert_eq!(stdout(&one).lines().count(), 200);
    assert!(String::from_utf8_lossy(&one.stderr).contains("ended; its children"));

    // Bad --from: exit 2; a shard that does not exist: exit 3.
    assert_exit(&kinesis_cat(&["tail", &stream, "--from", "yesterday"]), 2);
    assert_exit(
        &kinesis_cat(&["tail", &stream, "--shard", "shardId-000000000099"]),
        3,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_is_nonzero_behind_the_tip_and_zero_at_it() {
    let client = kinesis_client().await;
    let stream = unique_name("cat-lag");
    create_stream(&client, &stream, 2).await;
    let shards = list_shards(&client, &stream).await;
    let behind = shards[0].shard_id().to_owned();
    let at_tip = shards[1].shard_id().to_owned();
    let behind_key = shards[0]
        .hash_key_range()
        .expect("range")
        .starting_hash_key();
    let tip_key = shards[1]
        .hash_key_range()
        .expect("range")
        .starting_hash_key();
    let checkpoint = put(&stream, behind_key, "first").await;
    // MillisBehindLatest is the time between records: let some pass before the rest.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    for i in 0..9 {
        put(&stream, behind_key, &format!("later {i}")).await;
    }
    let mut last = String::new();
    for i in 0..3 {
        last = put(&stream, tip_key, &format!("tip {i}")).await;
    }
    let (application, _table) = lease_table(&[
        (
            behind.as_str(),
            Some("worker-1"),
            Checkpoint::sequence(checkpoint, 0),
        ),
        (at_tip.as_str(), None, Checkpoint::sequence(last, 0)),
    ])
    .await;

    let output = kinesis_cat(&[
        "lag",
        "--application",
        &application,
        "--stream",
        &stream,
        "--json",
    ]);
    assert_exit(&output, 0);
    let report = json(&output);
    let rows = report["shards"].as_array().expect("shards");
    let row = |shard: &str| {
        rows.iter()
            .find(|r| r["shard_id"] == shard)
            .unwrap_or_else(|| panic!("{shard} in {report}"))
    };
    assert_eq!(row(&behind)["owner"], "worker-1");
    assert_eq!(row(&behind)["records_behind"], 9, "{report}");
    let millis = row(&behind)["millis_behind"].as_i64().expect("millis");
    assert!(millis >= 1_000, "{report}");
    assert_eq!(row(&at_tip)["records_behind"], 0, "{report}");
    assert!(
        row(&at_tip)["millis_behind"].as_i64().expect("millis") < 1_000,
        "{report}"
    );
    assert_eq!(report["worst"]["shard_id"], behind.as_str());

    // The readable form, and the threshold's exit code.
    let readable = kinesis_cat(&["lag", "--application", &application, "--stream", &stream]);
    assert_exit(&readable, 0);
    assert!(stdout(&readable).contains(&format!("worst: {behind} is")));
    let above = kinesis_cat(&[
        "lag",
        "--application",
        &application,
        "--stream",
        &stream,
        "--fail-above-ms",
        "500",
    ]);
    assert_exit(&above, 5);
    // Counting stops at the limit: the count is then a lower bound.
    let limited = kinesis_cat(&[
        "lag",
        "--application",
        &application,
        "--stream",
        &stream,
        "--count-limit",
        "2",
        "--json",
    ]);
    assert_exit(&limited, 0);
    let limited = json(&limited);
    let row = limited["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .find(|r| r["shard_id"] == behind.as_str())
        .expect("row")
        .clone();
    assert!(row["records_behind"].is_null());
    assert!(row["records_behind_at_least"].as_u64().expect("at least") >= 2);
    // No such table: exit 3.
    assert_exit(
        &kinesis_cat(&["lag", "--application", &unique_name("none")]),
        3,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_reset_refuses_a_held_lease_without_force_and_moves_an_unowned_one() {
    let (application, table) = lease_table(&[
        (
            "shardId-000000000000",
            Some("worker-1"),
            Checkpoint::TrimHorizon,
        ),
        ("shardId-000000000001", None, Checkpoint::TrimHorizon),
        ("shardId-000000000002", None, Checkpoint::ShardEnd),
    ])
    .await;
    let held_before = stored(&table, "shardId-000000000000").await;

    let output = kinesis_cat(&[
        "leases",
        "reset",
        "--application",
        &application,
        "--to",
        "latest",
    ]);
    assert_exit(&output, 4);
    let text = stdout(&output);
    assert!(
        text.contains("shardId-000000000000: not moved: held by worker-1"),
        "{text}"
    );
    assert!(
        text.contains("shardId-000000000001: moved TRIM_HORIZON -> LATEST (counter 7 -> 8)"),
        "{text}"
    );
    assert!(
        text.contains("shardId-000000000002: left alone: finished"),
        "{text}"
    );
    assert_eq!(stored(&table, "shardId-000000000000").await, held_before);
    let moved = stored(&table, "shardId-000000000001").await;
    assert_eq!(moved.checkpoint, Checkpoint::Latest);
    assert_eq!(moved.lease_counter, 8);
    assert_eq!(
        stored(&table, "shardId-000000000002").await.checkpoint,
        Checkpoint::ShardEnd
    );

    // A dry run writes nothing.
    let dry = kinesis_cat(&[
        "leases",
        "reset",
        "--application",
        &application,
        "--to",
        "latest",
        "--force",
        "--dry-run",
    ]);
    assert_exit(&dry, 0);
    assert!(stdout(&dry).contains("would move TRIM_HORIZON -> LATEST, taking it from worker-1"));
    assert_eq!(stored(&table, "shardId-000000000000").await, held_before);

    // --force takes the held lease: counter bumped (its holder's next write is fenced), owner
    // removed.
    let forced = kinesis_cat(&[
        "leases",
        "reset",
        "--application",
        &application,
        "--to",
        "49590338271490256608559692538361571095921575989136588898/2",
        "--shard",
        "shardId-000000000000",
        "--force",
        "--json",
    ]);
    assert_exit(&forced, 0);
    let report = json(&forced);
    let row = &report["leases"][0];
    assert_eq!(row["result"], "moved");
    assert_eq!(row["owner"], "worker-1");
    assert_eq!(row["counter_before"], 7);
    assert_eq!(row["counter_after"], 8);
    let taken = stored(&table, "shardId-000000000000").await;
    assert_eq!(taken.lease_owner, None);
    assert_eq!(
        taken.checkpoint,
        Checkpoint::sequence(
            "49590338271490256608559692538361571095921575989136588898",
            2
        )
    );

    // Again: nothing to do, nothing written.
    let again = kinesis_cat(&[
        "leases",
        "reset",
        "--application",
        &application,
        "--to",
        "latest",
        "--shard",
        "shardId-000000000001",
    ]);
    assert_exit(&again, 0);
    assert!(stdout(&again).contains("shardId-000000000001: unchanged at LATEST"));
    assert_eq!(
        stored(&table, "shardId-000000000001").await.lease_counter,
        8
    );

    // Usage: a sequence number for every shard; a TIMESTAMP without the stream.
    assert_exit(
        &kinesis_cat(&[
            "leases",
            "reset",
            "--application",
            &application,
            "--to",
            "123",
        ]),
        2,
    );
    assert_exit(
        &kinesis_cat(&[
            "leases",
            "reset",
            "--application",
            &application,
            "--to",
            "2026-01-01T00:00:00Z",
        ]),
        2,
    );
    // A lease that does not exist: exit 3.
    assert_exit(
        &kinesis_cat(&[
            "leases",
            "reset",
            "--application",
            &application,
            "--to",
            "latest",
            "--shard",
            "shardId-000000000099",
        ]),
        3,
    );
    // The listing still works beside the subcommand.
    let listing = kinesis_cat(&["leases", "--application", &application]);
    assert_exit(&listing, 0);
    assert!(stdout(&listing).contains("shardId-000000000001"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_reset_to_a_time_checkpoints_the_last_record_before_it() {
    let client = kinesis_client().await;
    let stream = unique_name("cat-reset-at");
    create_stream(&client, &stream, 1).await;
    let shard = list_shards(&client, &stream).await.remove(0);
    let mut before = String::new();
    for i in 0..5 {
        before = put(&stream, "0", &format!("before {i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let at = std::time::SystemTime::now();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    for i in 0..5 {
        put(&stream, "0", &format!("after {i}")).await;
    }
    let (application, table) =
        lease_table(&[(shard.shard_id(), None, Checkpoint::TrimHorizon)]).await;
    let at = aws_sdk_kinesis::primitives::DateTime::from(at)
        .fmt(aws_sdk_kinesis::primitives::DateTimeFormat::DateTime)
        .expect("RFC 3339");
    let output = kinesis_cat(&[
        "leases",
        "reset",
        "--application",
        &application,
        "--to",
        &at,
        "--stream",
        &stream,
    ]);
    assert_exit(&output, 0);
    assert_eq!(
        stored(&table, shard.shard_id()).await.checkpoint,
        Checkpoint::sequence(before, 0)
    );
    // Before every record: the oldest.
    let output = kinesis_cat(&[
        "leases",
        "reset",
        "--application",
        &application,
        "--to",
        "2020-01-01T00:00:00Z",
        "--stream",
        &stream,
    ]);
    assert_exit(&output, 0);
    assert_eq!(
        stored(&table, shard.shard_id()).await.checkpoint,
        Checkpoint::TrimHorizon
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_takes_the_producers_settings() {
    let client = kinesis_client().await;
    let stream = unique_name("cat-settings");
    create_stream(&client, &stream, 1).await;
    let input: String = (0..100).map(|i| format!("{i:0>40}\n")).collect();
    let output = kinesis_cat_with_input(
        &[
            "produce",
            &stream,
            "--partition-key",
            "k",
            "--aggregation-max-size",
            "500",
            "--linger-ms",
            "50",
            "--record-ttl-ms",
            "20000",
            "--rate-limit-percent",
            "100",
            "--max-outstanding-bytes",
            "8388608",
            "--max-outstanding-records",
            "1000",
            "--max-concurrent-requests",
            "4",
        ],
        &input,
    );
    assert_exit(&output, 0);
    let summary: Value =
        serde_json::from_str(stdout(&output).lines().last().expect("summary")).expect("JSON");
    assert_eq!(summary["succeeded"], 100);
    // 100 records of 41 bytes in aggregates of at most 500 bytes: at least 9 of them.
    assert!(
        summary["kinesis_records"].as_u64().expect("count") >= 9,
        "{summary}"
    );
    // A budget too small for one record is refused.
    let refused = kinesis_cat_with_input(
        &["produce", &stream, "--max-outstanding-bytes", "10"],
        "x\n",
    );
    assert!(!refused.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_reset_under_a_running_worker_makes_it_lose_the_lease_and_replay() {
    let client = kinesis_client().await;
    let stream = unique_name("cat-force");
    let application = unique_name("cat-force-app");
    create_stream(&client, &stream, 1).await;
    produce_lines(&stream, 0..50, 5, 0).await;
    let shard = list_shards(&client, &stream).await.remove(0);
    let shard_id = shard.shard_id().to_owned();
    let worker = common::kinesis_cat(&[
        "consume",
        &stream,
        "--application",
        &application,
        "--from",
        "trim-horizon",
        "--json",
        "--events",
        "--idle-millis",
        "100",
        "--failover-seconds",
        "2",
        "--idle-exit",
        "4",
    ])
    .spawn()
    .expect("kinesis-cat consume starts");
    // Wait until the worker holds the lease and checkpointed every record.
    let table = LeaseTable::new(dynamodb_client().await, application.as_str());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(lease)) = table.get(&shard_id).await
            && lease.lease_owner.is_some()
            && matches!(lease.checkpoint, Checkpoint::Sequence { .. })
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never checkpointed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Without --force the held lease is refused (exit 4); with it, it is taken.
    let refused = kinesis_cat(&[
        "leases",
        "reset",
        "--application",
        &application,
        "--to",
        "trim-horizon",
    ]);
    assert_exit(&refused, 4);
    let forced = kinesis_cat(&[
        "leases",
        "reset",
        "--application",
        &application,
        "--to",
        "trim-horizon",
        "--force",
    ]);
    assert_exit(&forced, 0);
    assert!(stdout(&forced).contains("moved"), "{}", stdout(&forced));

    // The worker loses the lease, takes it again, and reads from the oldest record: every line
    // twice, the second holding starting at TRIM_HORIZON; nothing of the first holding's
    // checkpoints overwrote the reset.
    let output = worker.wait_with_output().expect("the worker ends");
    assert_exit(&output, 0);
    let lines: Vec<Value> = stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let events: Vec<(&str, u64, Option<&str>)> = lines
        .iter()
        .filter_map(|l| {
            Some((
                l["event"].as_str()?,
                l["holding"].as_u64()?,
                l["checkpoint"].as_str(),
            ))
        })
        .collect();
    assert!(
        events.contains(&("lease_lost", 1, None)),
        "the first holding lost the lease: {events:?}"
    );
    assert!(
        events.contains(&("initialize", 2, Some("TRIM_HORIZON"))),
        "the next holding starts at the reset: {events:?}"
    );
    let records = lines.iter().filter(|l| l.get("event").is_none()).count();
    assert_eq!(records, 100, "every record twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_from_latest_prints_only_new_records_and_help_lists_the_exit_codes() {
    let client = kinesis_client().await;
    let stream = unique_name("cat-latest");
    create_stream(&client, &stream, 2).await;
    produce_lines(&stream, 0..20, 5, 0).await;
    let output = kinesis_cat(&["tail", &stream, "--exit-at-end"]);
    assert_exit(&output, 0);
    assert_eq!(stdout(&output), "", "--from latest skips what was there");
    for command in ["describe", "tail", "lag"] {
        let help = kinesis_cat(&[command, "--help"]);
        assert_exit(&help, 0);
        assert!(stdout(&help).contains("Exit codes: 0 done;"), "{command}");
    }
    let help = kinesis_cat(&["leases", "reset", "--help"]);
    assert!(stdout(&help).contains("Exit code 4"));
}
