//! Children that fail, and what the daemon does about it: a crash mid-batch, garbage on
//! stdout, a child that never answers (timeoutInSeconds), invalid checkpoints, SIGTERM during
//! a batch, a split while children run.

use std::time::Duration;

use integration_tests::{create_stream, kinesis_client, unique_name};
use kcl::lease::Checkpoint;
use serde_json::Value;

use crate::support::{
    alive, checkpoints, delivered_keys, events, last_positions, produce, start_recorder,
    wait_events, with_action,
};

const LIMIT: Duration = Duration::from_secs(60);

fn keys(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

fn all_delivered(expected: &[String]) -> impl Fn(&[Value]) -> bool + '_ {
    move |events| {
        let delivered = delivered_keys(events);
        expected.iter().all(|k| delivered.contains(k))
    }
}

/// Every checkpoint written: each lease at its shard's last record.
async fn assert_all_checkpointed(stream: &str, application: &str) {
    assert_eq!(checkpoints(application).await, last_positions(stream).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_crashes_mid_batch_is_restarted_from_the_checkpoint_and_the_daemon_lives_on() {
    let stream = unique_name("ml-crash");
    let application = unique_name("ml-crash-app");
    create_stream(&kinesis_client().await, &stream, 1).await;
    let expected = keys("crash", 20);
    produce(&stream, &expected).await;
    let (mut daemon, path) = start_recorder(&stream, &application, "crash", &[], &[]);
    wait_events(
        &mut daemon,
        &path,
        "the batch redelivered after the crash",
        LIMIT,
        |events| {
            let crashed = with_action(events, "crash");
            let Some(crash) = crashed.first() else {
                return false;
            };
            // A new child got the whole batch again and checkpointed it.
            with_action(events, "checkpointReply")
                .iter()
                .any(|e| e["pid"] != crash["pid"] && e["reply"]["error"].is_null())
                && all_delivered(&expected)(events)
        },
    )
    .await;
    let events = events(&path);
    let inits = with_action(&events, "initialize");
    assert_eq!(inits.len(), 2, "{inits:?}");
    // Nothing was checkpointed before the crash: the new child starts where the first did.
    assert_eq!(inits[1]["message"]["sequenceNumber"], "TRIM_HORIZON");
    assert!(daemon.stderr().contains("the record processor failed"));
    let (status, _) = daemon.terminate(LIMIT).await;
    assert!(status.success(), "{status}");
    assert_all_checkpointed(&stream, &application).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_blank_lines_from_children_are_skipped() {
    let stream = unique_name("ml-garbage");
    let application = unique_name("ml-garbage-app");
    create_stream(&kinesis_client().await, &stream, 2).await;
    let expected = keys("garbage", 30);
    produce(&stream, &expected).await;
    let (mut daemon, path) = start_recorder(&stream, &application, "garbage", &[], &[]);
    wait_events(
        &mut daemon,
        &path,
        "every record",
        LIMIT,
        all_delivered(&expected),
    )
    .await;
    let (status, _) = daemon.terminate(LIMIT).await;
    assert!(status.success(), "{status}");
    let events = events(&path);
    assert!(
        with_action(&events, "checkpointReply")
            .iter()
            .all(|e| e["reply"]["error"].is_null()),
        "{events:?}"
    );
    assert_eq!(
        with_action(&events, "initialize").len(),
        2,
        "no child restarted"
    );
    assert_all_checkpointed(&stream, &application).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_never_answers_is_killed_after_timeout_in_seconds_and_restarted() {
    let stream = unique_name("ml-hang");
    let application = unique_name("ml-hang-app");
    create_stream(&kinesis_client().await, &stream, 1).await;
    let expected = keys("hang", 10);
    produce(&stream, &expected).await;
    let (mut daemon, path) = start_recorder(
        &stream,
        &application,
        "hang",
        &[("timeoutInSeconds", "2")],
        &[],
    );
    wait_events(
        &mut daemon,
        &path,
        "a second child's checkpoint",
        LIMIT,
        |events| {
            with_action(events, "initialize").len() == 2
                && with_action(events, "checkpointReply")
                    .iter()
                    .any(|e| e["reply"]["error"].is_null())
        },
    )
    .await;
    let events = events(&path);
    let hang = with_action(&events, "hang")[0].clone();
    let second = with_action(&events, "initialize")[1].clone();
    let waited = second["t"].as_f64().unwrap() - hang["t"].as_f64().unwrap();
    assert!(
        waited >= 2.0,
        "restarted {waited} s after the hang, before the timeout"
    );
    assert!(
        !alive(hang["pid"].as_u64().unwrap()),
        "the hung child was killed"
    );
    assert!(
        daemon.stderr().contains("within timeoutInSeconds"),
        "the timeout is named in the log"
    );
    assert_eq!(delivered_keys(&events), expected.iter().cloned().collect());
    let (status, _) = daemon.terminate(LIMIT).await;
    assert!(status.success(), "{status}");
    assert_all_checkpointed(&stream, &application).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_checkpoints_are_answered_with_illegal_argument_exception() {
    let stream = unique_name("ml-badcp");
    let application = unique_name("ml-badcp-app");
    create_stream(&kinesis_client().await, &stream, 1).await;
    let expected = keys("badcp", 5);
    produce(&stream, &expected).await;
    let (mut daemon, path) = start_recorder(&stream, &application, "bad_checkpoint", &[], &[]);
    wait_events(
        &mut daemon,
        &path,
        "four checkpoint replies",
        LIMIT,
        |events| with_action(events, "checkpointReply").len() >= 4,
    )
    .await;
    let events = events(&path);
    let replies: Vec<Value> = with_action(&events, "checkpointReply")
        .iter()
        .map(|e| e["reply"].clone())
        .collect();
    // Not a number; past the last record delivered; a negative sub-sequence number.
    for reply in &replies[..3] {
        assert_eq!(reply["error"], "IllegalArgumentException", "{replies:?}");
        assert_eq!(reply["action"], "checkpoint");
    }
    assert_eq!(replies[0]["sequenceNumber"], "not-a-number", "echoed");
    assert_eq!(replies[2]["subSequenceNumber"], -1, "echoed");
    assert!(replies[3]["error"].is_null(), "{replies:?}");
    let (status, _) = daemon.terminate(LIMIT).await;
    assert!(status.success(), "{status}");
    assert_all_checkpointed(&stream, &application).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_batch_finishes_it_asks_for_shutdown_checkpoints_and_hands_back() {
    let stream = unique_name("ml-term");
    let application = unique_name("ml-term-app");
    create_stream(&kinesis_client().await, &stream, 2).await;
    let expected = keys("term", 20);
    produce(&stream, &expected).await;
    let (mut daemon, path) = start_recorder(
        &stream,
        &application,
        "",
        &[],
        &[("FAULT", "slow"), ("SLOW", "3")],
    );
    wait_events(
        &mut daemon,
        &path,
        "both shards in a batch",
        LIMIT,
        |events| with_action(events, "processRecords").len() >= 2,
    )
    .await;
    let (status, took) = daemon.terminate(LIMIT).await;
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(15), "stopped in {took:?}");
    let events = events(&path);
    for shard in ["shardId-000000000000", "shardId-000000000001"] {
        let actions: Vec<&str> = events
            .iter()
            .filter(|e| e["shard"] == shard)
            .filter_map(|e| e["action"].as_str())
            .collect();
        // The batch in progress completes (checkpointed), then shutdownRequested (its
        // checkpoint), then leaseLost, then stdin closes.
        assert_eq!(
            actions,
            [
                "initialize",
                "processRecords",
                "checkpointReply",
                "shutdownRequested",
                "checkpointReply",
                "leaseLost",
                "eof"
            ],
            "{shard}: {events:?}"
        );
    }
    assert_all_checkpointed(&stream, &application).await;
    let table = kcl::lease::LeaseTable::new(
        integration_tests::dynamodb_client().await,
        application.as_str(),
    );
    let leases = table.scan().await.unwrap().leases;
    assert!(
        leases.iter().all(|lease| lease.lease_owner.is_none()),
        "leases handed back: {leases:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_while_children_run_ends_the_parent_before_its_children_start() {
    let stream = unique_name("ml-split");
    let application = unique_name("ml-split-app");
    let kinesis = kinesis_client().await;
    create_stream(&kinesis, &stream, 1).await;
    let before = keys("before", 10);
    produce(&stream, &before).await;
    let (mut daemon, path) = start_recorder(&stream, &application, "", &[], &[]);
    wait_events(
        &mut daemon,
        &path,
        "the parent's records",
        LIMIT,
        all_delivered(&before),
    )
    .await;
    let shards = integration_tests::list_shards(&kinesis, &stream).await;
    let parent = shards[0].shard_id().to_owned();
    let range = shards[0].hash_key_range().expect("range");
    let start: u128 = range.starting_hash_key().parse().unwrap();
    let end: u128 = range.ending_hash_key().parse().unwrap();
    kinesis
        .split_shard()
        .stream_name(&stream)
        .shard_to_split(&parent)
        .new_starting_hash_key((start + (end - start) / 2).to_string())
        .send()
        .await
        .expect("split");
    integration_tests::wait_for_stream_active(&kinesis, &stream).await;
    let after = keys("after", 30);
    produce(&stream, &after).await;
    wait_events(
        &mut daemon,
        &path,
        "the children's records",
        LIMIT,
        all_delivered(&after),
    )
    .await;
    let events = events(&path);
    let parent_events: Vec<&Value> = events
        .iter()
        .filter(|e| e["shard"] == parent.as_str())
        .collect();
    let ended = parent_events
        .iter()
        .position(|e| e["action"] == "shardEnded")
        .expect("shardEnded reached the parent's child");
    assert_eq!(parent_events[ended + 1]["action"], "checkpointReply");
    assert!(parent_events[ended + 1]["reply"]["error"].is_null());
    let ended_at = parent_events[ended]["t"].as_f64().unwrap();
    let children: Vec<&Value> = with_action(&events, "initialize")
        .into_iter()
        .filter(|e| e["shard"] != parent.as_str())
        .collect();
    assert_eq!(children.len(), 2, "{events:?}");
    for child in &children {
        assert!(
            child["t"].as_f64().unwrap() > ended_at,
            "a child started before its parent ended"
        );
    }
    // The parent's child process exited once its stdin closed.
    assert!(parent_events.iter().any(|e| e["action"] == "eof"));
    let stored = checkpoints(&application).await;
    assert_eq!(stored[&parent], Checkpoint::ShardEnd);
    let (status, _) = daemon.terminate(LIMIT).await;
    assert!(status.success(), "{status}");
}
