//! `kinesis-cat produce` against kinesis-mock, configured only through the standard AWS
//! environment, as a user would run it.

mod common;

use std::process::Output;

use aggregation_proto::{ReceivedRecord, deaggregate};
use common::{kinesis_cat, run_with_input};
use integration_tests::{create_stream, kinesis_client, read_all_records, unique_name};
use serde_json::Value;

fn produce(args: &[&str], stdin: &str) -> Output {
    produce_bytes(args, stdin.as_bytes().to_vec())
}

/// `kinesis-cat produce ARGS` with `stdin` as its input, whatever its bytes.
fn produce_bytes(args: &[&str], stdin: Vec<u8>) -> Output {
    let mut command = kinesis_cat(&["produce"]);
    command.args(args);
    run_with_input(command, stdin)
}

fn summary(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last().expect("a summary line")).expect("JSON summary")
}

#[tokio::test]
async fn lines_go_into_the_stream() {
    let client = kinesis_client().await;
    let stream = unique_name("cat-produce");
    create_stream(&client, &stream, 2).await;
    let lines: Vec<String> = (0..1_000).map(|i| format!("line number {i}")).collect();
    let output = produce(&[&stream], &(lines.join("\n") + "\n"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = summary(&output);
    assert_eq!(summary["user_records"], 1_000);
    assert_eq!(summary["succeeded"], 1_000);
    assert_eq!(summary["failed"], 0);
    assert!(
        summary["kinesis_records"].as_u64().expect("count") < 1_000,
        "aggregated: {summary}"
    );
    assert!(summary["put_records_calls"].as_u64().expect("count") >= 1);
    // What the run knows of possible duplicates is in the summary (none here).
    assert_eq!(summary["put_records_timed_out"], 0);
    assert_eq!(summary["possibly_duplicated"], 0);

    let mut stored: Vec<String> = read_all_records(&client, &stream)
        .await
        .iter()
        .flat_map(|r| {
            deaggregate(&ReceivedRecord::new(
                r.partition_key(),
                r.data().as_ref().to_vec(),
            ))
        })
        .map(|u| String::from_utf8(u.data().to_vec()).expect("utf-8"))
        .collect();
    stored.sort();
    let mut expected = lines.clone();
    expected.sort();
    assert_eq!(stored, expected);
}

/// A bad line stops the reading: everything before it is sent and answered, nothing after it,
/// and the run fails naming the line (resume from it).
#[tokio::test]
async fn a_bad_json_line_stops_the_run_after_everything_before_it_is_stored() {
    let client = kinesis_client().await;
    let stream = unique_name("cat-produce-bad");
    create_stream(&client, &stream, 1).await;
    let input = concat!(
        "{\"partition_key\": \"a\", \"data\": \"aGVsbG8=\"}\n",
        "{\"partition_key\": \"c\", \"data\": \"aGk=\"}\n",
        "{\"partition_key\": \"a\", \"data\": \"%%%\"}\n",
        "{\"partition_key\": \"b\", \"explicit_hash_key\": \"7\", \"data\": \"d29ybGQ=\"}\n",
    );
    let output = produce(&[&stream, "--json", "--no-aggregate"], input);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("line 3") && stderr.contains("base64"),
        "{stderr}"
    );
    let summary = summary(&output);
    assert_eq!(
        (
            summary["user_records"].as_u64(),
            summary["succeeded"].as_u64(),
            summary["failed"].as_u64()
        ),
        (Some(2), Some(2), Some(0))
    );
    assert_eq!(summary["stopped_at_line"], 3);
    let stored = read_all_records(&client, &stream).await;
    assert_eq!(stored.len(), 2, "nothing after the bad line");
}

/// A line that is not UTF-8 (an I/O error of the line reader) also stops the run cleanly; it
/// used to end the process with the records before it unanswered.
#[tokio::test]
async fn a_line_that_is_not_utf8_stops_the_run_after_everything_before_it_is_stored() {
    let client = kinesis_client().await;
    let stream = unique_name("cat-produce-utf8");
    create_stream(&client, &stream, 1).await;
    let mut bytes: Vec<u8> = (0..500)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    bytes.extend_from_slice(b"\xff\xfe not utf-8\nafter\n");
    let output = produce_bytes(&[&stream, "--partition-key", "k"], bytes);
    assert!(!output.status.success());
    let summary = summary(&output);
    assert_eq!(summary["stopped_at_line"], 501, "{summary}");
    assert_eq!(summary["succeeded"], 500, "{summary}");
    let stored: usize = read_all_records(&client, &stream)
        .await
        .iter()
        .map(|r| {
            deaggregate(&ReceivedRecord::new(
                r.partition_key(),
                r.data().as_ref().to_vec(),
            ))
            .len()
        })
        .sum();
    assert_eq!(stored, 500);
}

/// One partition key for every line: by default its lines are stored in the order read.
#[tokio::test]
async fn lines_of_one_key_are_stored_in_order() {
    let client = kinesis_client().await;
    let stream = unique_name("cat-produce-order");
    create_stream(&client, &stream, 2).await;
    let lines: Vec<String> = (0..3_000).map(|i| format!("{i}")).collect();
    let output = produce(
        &[&stream, "--partition-key", "one-key"],
        &(lines.join("\n") + "\n"),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stored: Vec<u64> = read_all_records(&client, &stream)
        .await
        .iter()
        .flat_map(|r| {
            deaggregate(&ReceivedRecord::new(
                r.partition_key(),
                r.data().as_ref().to_vec(),
            ))
        })
        .map(|u| String::from_utf8_lossy(u.data()).parse().expect("a number"))
        .collect();
    assert_eq!(stored.len(), 3_000);
    assert!(stored.windows(2).all(|w| w[0] < w[1]), "in order");

    // --unordered is accepted (order is then not promised, so not checked).
    let output = produce(&[&stream, "--unordered"], "a\nb\n");
    assert!(output.status.success());
    assert_eq!(summary(&output)["succeeded"], 2);
}
