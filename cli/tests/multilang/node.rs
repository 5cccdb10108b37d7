//! A Node processor on aws-kcl 2.3.2 (`children/node_processor.js`) on our daemon.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use integration_tests::{create_stream, kinesis_client, unique_name};

use crate::support::{
    Daemon, Program, checkpoints, delivered_keys, events, last_positions, node_modules,
    produce_plain, properties, wait_events, with_action, work_dir,
};

const LIMIT: Duration = Duration::from_secs(60);

fn keys(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

async fn run_node(
    stream: &str,
    application: &str,
    run: &str,
    expected: &[String],
) -> Vec<serde_json::Value> {
    let dir = work_dir(&format!("{application}-{run}"));
    let processor =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/multilang/children/node_processor.js");
    std::fs::write(
        dir.join("sample.properties"),
        properties(
            &format!("node {}", processor.display()),
            stream,
            application,
            &[],
        ),
    )
    .unwrap();
    let events_path = dir.join("events.jsonl");
    let events_text = events_path.display().to_string();
    let modules = node_modules().display().to_string();
    let mut daemon = Daemon::start(
        Program::Alias,
        &dir,
        &["--properties-file", "sample.properties"],
        &[],
        &[("EVENTS", &events_text), ("NODE_PATH", &modules)],
    );
    wait_events(&mut daemon, &events_path, "every record", LIMIT, |events| {
        let delivered = delivered_keys(events);
        expected.iter().all(|k| delivered.contains(k))
    })
    .await;
    let (status, _) = daemon.terminate(LIMIT).await;
    assert!(status.success(), "{status}:\n{}", daemon.stderr());
    events(&events_path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_processor_on_aws_kcl_processes_checkpoints_and_resumes() {
    let stream = unique_name("ml-node");
    let application = unique_name("ml-node-app");
    create_stream(&kinesis_client().await, &stream, 2).await;
    let first = keys("first", 30);
    produce_plain(&stream, &first).await;
    let events = run_node(&stream, &application, "1", &first).await;
    assert_eq!(
        delivered_keys(&events),
        first.iter().cloned().collect::<BTreeSet<_>>()
    );
    // The daemon's error reached the Node callback unchanged; every real checkpoint worked.
    let bogus = with_action(&events, "bogusCheckpointReply");
    assert_eq!(bogus.len(), 2, "{events:?}");
    assert!(
        bogus
            .iter()
            .all(|e| e["reply"]["error"] == "IllegalArgumentException")
    );
    assert!(
        with_action(&events, "checkpointReply")
            .iter()
            .all(|e| e["reply"]["error"].is_null()),
        "{events:?}"
    );
    assert_eq!(with_action(&events, "shutdownRequested").len(), 2);
    assert_eq!(
        checkpoints(&application).await,
        last_positions(&stream).await
    );

    let second = keys("second", 10);
    produce_plain(&stream, &second).await;
    let events = run_node(&stream, &application, "2", &second).await;
    assert_eq!(
        delivered_keys(&events),
        second.iter().cloned().collect::<BTreeSet<_>>()
    );
    let inits = with_action(&events, "initialize");
    assert!(
        inits.iter().all(|e| e["sequenceNumber"] != "TRIM_HORIZON"),
        "resumed from the checkpoints: {inits:?}"
    );
    assert_eq!(
        checkpoints(&application).await,
        last_positions(&stream).await
    );
}
