//! `kinesis-cat consume` and `kinesis-cat leases` against kinesis-mock and DynamoDB Local,
//! configured through the standard AWS environment.

use std::collections::HashSet;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use integration_tests::{
    DYNAMODB_ENDPOINT_VAR, KINESIS_ENDPOINT_VAR, create_stream, dynamodb_client, endpoint_url,
    kinesis_client, unique_name,
};
use kcl::lease::LeaseTable;
use kpl::{Producer, UserRecord};
use serde_json::Value;

fn kinesis_cat(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kinesis-cat"));
    command
        .args(args)
        .env(KINESIS_ENDPOINT_VAR, endpoint_url(KINESIS_ENDPOINT_VAR))
        .env(DYNAMODB_ENDPOINT_VAR, endpoint_url(DYNAMODB_ENDPOINT_VAR))
        .env("AWS_REGION", integration_tests::REGION)
        .env("AWS_ACCESS_KEY_ID", integration_tests::ACCESS_KEY_ID)
        .env(
            "AWS_SECRET_ACCESS_KEY",
            integration_tests::SECRET_ACCESS_KEY,
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn consume(stream: &str, application: &str, extra: &[&str]) -> Child {
    let mut args = vec![
        "consume",
        stream,
        "--application",
        application,
        "--idle-millis",
        "100",
        "--failover-seconds",
        "2",
    ];
    args.extend_from_slice(extra);
    kinesis_cat(&args).spawn().expect("kinesis-cat starts")
}

fn lines(output: &Output) -> Vec<String> {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone())
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn produce(stream: &str, range: std::ops::Range<usize>) {
    let producer = Producer::builder(stream)
        .client(kinesis_client().await)
        .build()
        .await
        .expect("producer");
    let mut receipts = Vec::new();
    for i in range {
        receipts.push(
            producer
                .send(UserRecord::new(
                    format!("key-{}", i % 37),
                    format!("line {i}"),
                ))
                .await
                .expect("accepted"),
        );
    }
    for receipt in receipts {
        receipt.await.expect("stored");
    }
    producer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_checkpoints_and_resumes() {
    let stream = unique_name("cat-consume");
    let application = unique_name("cat-app");
    create_stream(&kinesis_client().await, &stream, 2).await;
    produce(&stream, 0..300).await;

    // --max-records stops after exactly that many, checkpointed.
    let first = consume(
        &stream,
        &application,
        &["--from", "trim-horizon", "--json", "--max-records", "50"],
    )
    .wait_with_output()
    .expect("ends");
    let first = lines(&first);
    assert_eq!(first.len(), 50);
    let record: Value = serde_json::from_str(&first[0]).expect("JSON line");
    for field in [
        "shard_id",
        "sequence_number",
        "sub_sequence_number",
        "partition_key",
        "explicit_hash_key",
        "data",
    ] {
        assert!(record.get(field).is_some(), "{field} missing in {record}");
    }

    // The next run resumes after the checkpoint and exits when idle.
    let second = consume(
        &stream,
        &application,
        &["--from", "trim-horizon", "--idle-exit", "2"],
    )
    .wait_with_output()
    .expect("ends");
    let second = lines(&second);
    assert_eq!(second.len(), 250, "the rest, exactly once");
    let decoded: HashSet<String> = first
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json");
            let data = base64_decode(v["data"].as_str().expect("data"));
            String::from_utf8(data).expect("utf-8")
        })
        .chain(second.iter().cloned())
        .collect();
    assert_eq!(decoded, (0..300).map(|i| format!("line {i}")).collect());

    // Both runs handed their leases back.
    let leases = kinesis_cat(&["leases", "--application", &application])
        .output()
        .expect("leases");
    let table = String::from_utf8(leases.stdout).expect("utf-8");
    assert!(leases.status.success());
    assert_eq!(
        table.lines().filter(|l| l.starts_with("shardId-")).count(),
        2,
        "{table}"
    );
    assert!(
        table
            .lines()
            .filter(|l| l.starts_with("shardId-"))
            .all(|l| l.ends_with("unowned")),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_split_the_shards() {
    let stream = unique_name("cat-split");
    let application = unique_name("cat-split-app");
    create_stream(&kinesis_client().await, &stream, 4).await;
    // The idle clock starts with the process: long enough for the split and the renewals
    // below on a loaded machine (6 s was not, once).
    let a = consume(
        &stream,
        &application,
        &["--from", "trim-horizon", "--idle-exit", "12"],
    );
    let b = consume(
        &stream,
        &application,
        &["--from", "trim-horizon", "--idle-exit", "12"],
    );
    // Wait until the two workers hold two leases each.
    let table = LeaseTable::new(dynamodb_client().await, application.as_str());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let owners: Vec<String> = table
            .list()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter_map(|l| l.lease_owner)
            .collect();
        let distinct: HashSet<&String> = owners.iter().collect();
        if owners.len() == 4
            && distinct.len() == 2
            && distinct
                .iter()
                .all(|o| owners.iter().filter(|x| x == o).count() == 2)
        {
            break;
        }
        assert!(Instant::now() < deadline, "no 2/2 split: {owners:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A worker whose lease was stolen notices at its next renewal: wait until every lease was
    // renewed twice by its new owner, so both workers agree on the split before records flow
    // (until then a stolen shard may be delivered by both: the steal window every lease-based
    // consumer has).
    let counters = |leases: Vec<kcl::lease::Lease>| {
        leases
            .into_iter()
            .map(|l| (l.lease_key, l.lease_counter))
            .collect::<std::collections::HashMap<_, _>>()
    };
    let at_split = counters(table.list().await.expect("leases"));
    loop {
        let now = counters(table.list().await.expect("leases"));
        if now
            .iter()
            .all(|(key, counter)| *counter >= at_split.get(key).copied().unwrap_or(0) + 2)
        {
            break;
        }
        assert!(Instant::now() < deadline, "leases not renewed: {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    produce(&stream, 0..400).await;
    let a = a.wait_with_output().expect("a ends");
    let b = b.wait_with_output().expect("b ends");
    let stderr = format!(
        "{}\n---\n{}",
        String::from_utf8_lossy(&a.stderr),
        String::from_utf8_lossy(&b.stderr)
    );
    let a = lines(&a);
    let b = lines(&b);
    let dup: Vec<&String> = a.iter().filter(|l| b.contains(l)).take(5).collect();
    assert!(dup.is_empty(), "printed by both: {dup:?}; stderr: {stderr}");
    assert!(
        !a.is_empty() && !b.is_empty(),
        "both printed: {} and {}",
        a.len(),
        b.len()
    );
    assert_eq!(a.len() + b.len(), 400, "each record printed once");
    let all: HashSet<&String> = a.iter().chain(&b).collect();
    assert_eq!(all.len(), 400);
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}
