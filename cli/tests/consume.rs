//! `kinesis-cat consume` and `kinesis-cat leases` against kinesis-mock and DynamoDB Local,
//! configured through the standard AWS environment.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Output};
use std::time::{Duration, Instant};

mod common;

use common::{kinesis_cat, produce_lines};
use integration_tests::{create_stream, dynamodb_client, kinesis_client, unique_name};
use kcl::lease::LeaseTable;
use serde_json::Value;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_checkpoints_and_resumes() {
    let stream = unique_name("cat-consume");
    let application = unique_name("cat-app");
    create_stream(&kinesis_client().await, &stream, 2).await;
    produce_lines(&stream, 0..300, 37, 0).await;

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
    produce_lines(&stream, 0..400, 37, 0).await;
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

/// Reads a child's stderr to the end in a thread (a full stderr pipe would block it too).
fn drain_stderr(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut stderr = child.stderr.take().expect("stderr piped");
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    })
}

/// Reads a child's stdout to the end in a thread, as lines.
fn read_stdout(child: &mut Child) -> std::thread::JoinHandle<Vec<String>> {
    let stdout = child.stdout.take().expect("stdout piped");
    std::thread::spawn(move || {
        std::io::BufRead::lines(std::io::BufReader::new(stdout))
            .map(|line| line.expect("utf-8 line"))
            .collect()
    })
}

/// Waits for a child that must exit on its own, with its captured stderr in the message.
fn wait_success(mut child: Child, stderr: std::thread::JoinHandle<String>) -> String {
    let status = child.wait().expect("wait");
    let stderr = stderr.join().expect("stderr thread");
    assert!(status.success(), "exit {status:?}: {stderr}");
    stderr
}

fn record_ids(lines: &[String]) -> Vec<usize> {
    lines
        .iter()
        .map(|line| {
            line.split(' ')
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("not a produced record: {line:?}"))
        })
        .collect()
}

/// Leases per owner in the table.
async fn lease_owners(table: &LeaseTable) -> HashMap<String, Vec<(String, u64)>> {
    let mut owners: HashMap<String, Vec<(String, u64)>> = HashMap::new();
    for lease in table.list().await.unwrap_or_default() {
        if let Some(owner) = lease.lease_owner {
            owners
                .entry(owner)
                .or_default()
                .push((lease.lease_key, lease.lease_counter));
        }
    }
    owners
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_idle_exit_workers_read_everything_when_one_output_waits_for_the_other() {
    let stream = unique_name("cat-slow-reader");
    let application = unique_name("cat-slow-reader-app");
    create_stream(&kinesis_client().await, &stream, 4).await;
    let args = ["--from", "trim-horizon", "--idle-exit", "5"];
    let mut first = consume(&stream, &application, &args);
    let mut second = consume(&stream, &application, &args);
    let (first_err, second_err) = (drain_stderr(&mut first), drain_stderr(&mut second));
    // Only the first worker's output is read until it exits.
    let first_out = read_stdout(&mut first);
    let table = LeaseTable::new(dynamodb_client().await, application.as_str());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(lease_owners(&table)
        .await
        .values()
        .map(Vec::len)
        .collect::<Vec<_>>()
        == [2, 2]
        && table
            .list()
            .await
            .unwrap_or_default()
            .iter()
            .all(|l| l.checkpoint_owner.is_none()))
    {
        assert!(
            Instant::now() < deadline,
            "no 2/2 split: {:?}",
            lease_owners(&table).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 3,000 records of ~200 bytes: far more than a pipe holds, so the second worker's output
    // is full and stays full until the first one has exited.
    let total = 3_000;
    produce_lines(&stream, 0..total, 97, 180).await;
    // Its output blocked, the second worker still renews its leases.
    let owners = lease_owners(&table).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = lease_owners(&table).await;
    for (owner, leases) in &owners {
        for (key, counter) in leases {
            let now = later
                .get(owner)
                .and_then(|l| l.iter().find(|(k, _)| k == key))
                .map(|(_, c)| *c);
            assert!(
                now.is_some_and(|now| now >= counter + 2),
                "{owner}'s {key} not renewed while its output waits: {counter} -> {now:?}"
            );
        }
    }
    let first_lines = first_out.join().expect("first stdout");
    let first_err = wait_success(first, first_err);
    let second_lines = read_stdout(&mut second).join().expect("second stdout");
    let second_err = wait_success(second, second_err);
    assert!(
        !first_lines.is_empty() && !second_lines.is_empty(),
        "both printed: {} and {}",
        first_lines.len(),
        second_lines.len()
    );
    let mut seen = record_ids(&first_lines);
    seen.extend(record_ids(&second_lines));
    let printed = seen.len();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(
        seen,
        (0..total).collect::<Vec<_>>(),
        "every record printed; first: {} lines, second: {} lines\n{first_err}\n---\n{second_err}",
        first_lines.len(),
        second_lines.len()
    );
    println!(
        "slow reader: {} + {} lines, {} printed twice",
        first_lines.len(),
        second_lines.len(),
        printed - total
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_idle_exit_workers_read_everything_through_a_split_and_a_merge() {
    let stream = unique_name("cat-reshard");
    let application = unique_name("cat-reshard-app");
    let kinesis = kinesis_client().await;
    create_stream(&kinesis, &stream, 2).await;
    let args = ["--from", "trim-horizon", "--idle-exit", "8"];
    let mut a = consume(&stream, &application, &args);
    let mut b = consume(&stream, &application, &args);
    let (a_err, b_err) = (drain_stderr(&mut a), drain_stderr(&mut b));
    let (a_out, b_out) = (read_stdout(&mut a), read_stdout(&mut b));
    produce_lines(&stream, 0..800, 97, 20).await;
    let shards = integration_tests::list_shards(&kinesis, &stream).await;
    let parent = &shards[0];
    integration_tests::split_in_half(&kinesis, &stream, parent).await;
    produce_lines(&stream, 800..1_600, 97, 20).await;
    let children = integration_tests::children_of(&kinesis, &stream, parent.shard_id()).await;
    integration_tests::merge_shards(
        &kinesis,
        &stream,
        children[0].shard_id(),
        children[1].shard_id(),
    )
    .await;
    produce_lines(&stream, 1_600..2_400, 97, 20).await;
    let (a_lines, b_lines) = (a_out.join().expect("a"), b_out.join().expect("b"));
    let a_err = wait_success(a, a_err);
    let b_err = wait_success(b, b_err);
    let mut seen = record_ids(&a_lines);
    seen.extend(record_ids(&b_lines));
    let printed = seen.len();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(
        seen,
        (0..2_400).collect::<Vec<_>>(),
        "every record printed; a: {}, b: {}\n{a_err}\n---\n{b_err}",
        a_lines.len(),
        b_lines.len()
    );
    println!(
        "reshard: {} + {} lines, {} printed twice",
        a_lines.len(),
        b_lines.len(),
        printed - 2_400
    );
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_reads_everything_through_a_registered_consumer() {
    let stream = unique_name("cat-fan-out");
    let application = unique_name("cat-fo-app");
    let kinesis = kinesis_client().await;
    create_stream(&kinesis, &stream, 2).await;
    produce_lines(&stream, 0..200, 37, 0).await;
    let output = consume(
        &stream,
        &application,
        &[
            "--from",
            "trim-horizon",
            "--fan-out",
            &application,
            "--idle-exit",
            "3",
        ],
    )
    .wait_with_output()
    .expect("ends");
    let printed = lines(&output);
    assert_eq!(printed.len(), 200, "everything, exactly once");
    let printed: HashSet<String> = printed.into_iter().collect();
    assert_eq!(printed, (0..200).map(|i| format!("line {i}")).collect());
    // The stream consumer exists now, under the name given.
    let arn = kinesis
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await
        .expect("summary")
        .stream_description_summary
        .expect("summary")
        .stream_arn;
    let consumer = kinesis
        .describe_stream_consumer()
        .stream_arn(arn)
        .consumer_name(&application)
        .send()
        .await
        .expect("the consumer was registered");
    assert!(consumer.consumer_description.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_frame_each_holding_with_its_checkpoints() {
    let stream = unique_name("cat-events");
    let application = unique_name("cat-events-app");
    create_stream(&kinesis_client().await, &stream, 1).await;
    produce_lines(&stream, 0..40, 37, 0).await;
    let output = consume(
        &stream,
        &application,
        &[
            "--from",
            "trim-horizon",
            "--json",
            "--events",
            "--worker-id",
            "worker-e",
            "--idle-exit",
            "2",
        ],
    )
    .wait_with_output()
    .expect("ends");
    let values: Vec<Value> = lines(&output)
        .iter()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let events: Vec<&str> = values.iter().filter_map(|v| v["event"].as_str()).collect();
    assert_eq!(events.first(), Some(&"initialize"), "{events:?}");
    assert_eq!(events.last(), Some(&"shutdown_requested"), "{events:?}");
    assert_eq!(values[0]["checkpoint"], "TRIM_HORIZON");
    let records: Vec<&Value> = values.iter().filter(|v| v.get("event").is_none()).collect();
    assert_eq!(records.len(), 40);
    // One holding; times never go back; the last checkpoint is the last record printed.
    assert!(values.iter().all(|v| v["holding"] == 1), "{values:?}");
    let times: Vec<u64> = values
        .iter()
        .map(|v| v["at_us"].as_u64().expect("at_us"))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let last = records.last().expect("records");
    let expected = format!(
        "{}/{}",
        last["sequence_number"].as_str().expect("sequence"),
        last["sub_sequence_number"].as_u64().unwrap_or(0)
    );
    let last_checkpoint = values
        .iter()
        .rev()
        .find(|v| v["event"] == "checkpoint")
        .expect("a checkpoint event");
    assert_eq!(last_checkpoint["checkpoint"], expected.as_str());
    // Handed back at shutdown.
    let table = LeaseTable::new(dynamodb_client().await, application.as_str());
    let lease = table.list().await.expect("leases").pop().expect("a lease");
    assert_eq!(lease.lease_owner, None);
}
