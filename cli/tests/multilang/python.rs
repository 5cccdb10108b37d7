//! amazon-kclpy 3.2.0's own `samples/sample_kclpy_app.py`, unmodified, on our daemon.

use std::collections::BTreeSet;
use std::time::Duration;

use integration_tests::{create_stream, kinesis_client, unique_name};

use crate::support::{
    Daemon, Program, checkpoints, kclpy_dir, last_positions, produce, properties, sample_records,
    venv_bin, work_dir,
};

fn keys(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

/// Runs the sample until it printed every key of `expected`, then SIGTERM; returns the keys
/// it printed (each once, or the test fails).
async fn run_sample(
    stream: &str,
    application: &str,
    run: &str,
    expected: &[String],
    extra: &[(&str, &str)],
) -> BTreeSet<String> {
    let kclpy = kclpy_dir();
    let dir = work_dir(&format!("{application}-{run}"));
    std::fs::write(
        dir.join("sample.properties"),
        properties("sample_kclpy_app.py", stream, application, extra),
    )
    .unwrap();
    let pythonpath = kclpy.display().to_string();
    let mut daemon = Daemon::start(
        Program::Subcommand,
        &dir,
        &["--properties-file", "sample.properties"],
        &[kclpy.join("samples"), venv_bin()],
        // Unbuffered: the sample writes its lines to stderr without newlines.
        &[("PYTHONPATH", &pythonpath), ("PYTHONUNBUFFERED", "1")],
    );
    let wanted: BTreeSet<String> = expected.iter().cloned().collect();
    daemon
        .wait_for(
            "every record printed by the sample",
            Duration::from_secs(90),
            |stderr| {
                let printed: BTreeSet<String> = sample_records(stderr)
                    .into_iter()
                    .map(|r| r.partition_key)
                    .collect();
                wanted.is_subset(&printed)
            },
        )
        .await;
    let (status, _) = daemon.terminate(Duration::from_secs(60)).await;
    let stderr = daemon.stderr();
    assert!(status.success(), "exit {status}:\n{stderr}");
    assert!(
        stderr.contains("Shutdown has been requested, checkpointing."),
        "the sample heard shutdownRequested:\n{stderr}"
    );
    assert!(
        !stderr.contains("Traceback") && !stderr.contains("checkpoint failed"),
        "{stderr}"
    );
    let records = sample_records(&stderr);
    let printed: BTreeSet<String> = records.iter().map(|r| r.partition_key.clone()).collect();
    assert_eq!(printed.len(), records.len(), "a record printed twice");
    printed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sample_processes_every_record_checkpoints_and_resumes() {
    let stream = unique_name("ml-py");
    let application = unique_name("ml-py-app");
    create_stream(&kinesis_client().await, &stream, 2).await;
    let first = keys("first", 60);
    produce(&stream, &first).await;

    let printed = run_sample(&stream, &application, "1", &first, &[]).await;
    assert_eq!(printed, first.iter().cloned().collect());
    // shutdownRequested checkpointed everything: each lease at its shard's last user record.
    assert_eq!(
        checkpoints(&application).await,
        last_positions(&stream).await
    );

    // A restart resumes from those checkpoints: only the new records.
    let second = keys("second", 30);
    produce(&stream, &second).await;
    let printed = run_sample(&stream, &application, "2", &second, &[]).await;
    assert_eq!(printed, second.iter().cloned().collect());
    assert_eq!(
        checkpoints(&application).await,
        last_positions(&stream).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sample_reads_through_enhanced_fan_out() {
    let stream = unique_name("ml-efo");
    let application = unique_name("ml-efo-app");
    create_stream(&kinesis_client().await, &stream, 2).await;
    let expected = keys("efo", 30);
    produce(&stream, &expected).await;
    let printed = run_sample(
        &stream,
        &application,
        "1",
        &expected,
        &[("retrievalMode", "FANOUT")],
    )
    .await;
    assert_eq!(printed, expected.iter().cloned().collect());
}
