//! What the `kinesis-cat` integration tests share: the binary run as a user runs it (the
//! emulators' endpoints and credentials in the standard AWS environment), its input written on
//! a thread, and records sent through the library producer.
//!
//! Each test file is its own crate and uses part of this module.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

use integration_tests::{
    DYNAMODB_ENDPOINT_VAR, KINESIS_ENDPOINT_VAR, endpoint_url, kinesis_client,
};
use kpl::{Producer, UserRecord};

/// `kinesis-cat ARGS` with no endpoint, region or credentials (commands that call nothing).
pub fn kinesis_cat_offline(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kinesis-cat"));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// `kinesis-cat ARGS` with the region and the test credentials, but no endpoint: the caller
/// names the endpoints it wants.
pub fn kinesis_cat_credentials(args: &[&str]) -> Command {
    let mut command = kinesis_cat_offline(args);
    command
        .env("AWS_REGION", integration_tests::REGION)
        .env("AWS_ACCESS_KEY_ID", integration_tests::ACCESS_KEY_ID)
        .env(
            "AWS_SECRET_ACCESS_KEY",
            integration_tests::SECRET_ACCESS_KEY,
        );
    command
}

/// `kinesis-cat ARGS` against the emulators (kinesis-mock and DynamoDB Local), configured only
/// through the standard AWS environment; stdin empty, stdout and stderr captured.
pub fn kinesis_cat(args: &[&str]) -> Command {
    let mut command = kinesis_cat_credentials(args);
    command
        .env(KINESIS_ENDPOINT_VAR, endpoint_url(KINESIS_ENDPOINT_VAR))
        .env(DYNAMODB_ENDPOINT_VAR, endpoint_url(DYNAMODB_ENDPOINT_VAR));
    command
}

/// Runs `command` to its end with `stdin` as its input, written on a thread so that a command
/// that writes much before it reads all its input cannot deadlock the test.
pub fn run_with_input(mut command: Command, stdin: impl Into<Vec<u8>>) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .spawn()
        .expect("kinesis-cat starts");
    let mut input = child.stdin.take().expect("piped stdin");
    let stdin = stdin.into();
    let writer = std::thread::spawn(move || input.write_all(&stdin));
    let output = child.wait_with_output().expect("kinesis-cat ends");
    writer.join().expect("writer").expect("stdin written");
    output
}

/// Sends each `(partition key, data)` through the library producer (aggregated) and waits
/// until every record is stored.
pub async fn produce_records(stream: &str, records: impl IntoIterator<Item = (String, String)>) {
    let producer = Producer::builder(stream)
        .client(kinesis_client().await)
        .build()
        .await
        .expect("producer");
    let mut receipts = Vec::new();
    for (key, data) in records {
        receipts.push(
            producer
                .send(UserRecord::new(key, data))
                .await
                .expect("accepted"),
        );
    }
    for receipt in receipts {
        receipt.await.expect("stored");
    }
    producer.shutdown().await;
}

/// Sends `line {i}` (then a space and `padding` x's, when `padding` is not 0) for each `i` of
/// `lines`, with the partition key `key-{i % keys}`; see [`produce_records`].
pub async fn produce_lines(
    stream: &str,
    lines: std::ops::Range<usize>,
    keys: usize,
    padding: usize,
) {
    let pad = if padding == 0 {
        String::new()
    } else {
        format!(" {}", "x".repeat(padding))
    };
    let records = lines.map(|i| (format!("key-{}", i % keys), format!("line {i}{pad}")));
    produce_records(stream, records).await;
}
