//! Forward mode: the proxy in front of kinesis-mock, driven by a real `aws-sdk-kinesis` client,
//! with every record read back directly from the emulator.
//!
//! Needs the emulators (`./scripts/emulators.sh start`, or run everything with
//! `./scripts/test.sh`); fails loudly without them.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_kinesis::operation::put_records::PutRecordsOutput;
use common::{client_with_attempts, dispatch_failure, entries, within};
use fault_proxy::{FaultProxy, Faults, Upstream};
use integration_tests::{
    KINESIS_ENDPOINT_VAR, create_stream, delete_stream, endpoint_url, kinesis_client,
    kinesis_client_at, read_all_records, unique_name,
};

async fn forward_proxy(faults: Faults) -> FaultProxy {
    FaultProxy::start(
        Upstream::Forward(endpoint_url(KINESIS_ENDPOINT_VAR)),
        faults,
    )
    .await
    .expect("start the proxy")
}

/// Data of every record in `stream`, read directly from the emulator, by sequence number.
async fn stored(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> BTreeMap<String, String> {
    read_all_records(kinesis, stream)
        .await
        .iter()
        .map(|record| {
            (
                record.sequence_number().to_owned(),
                String::from_utf8(record.data().as_ref().to_vec()).expect("UTF-8 test data"),
            )
        })
        .collect()
}

/// Sequence number and data of the successful entries of `out` (whose request was `sent`).
fn successes(out: &PutRecordsOutput, sent: &[&str]) -> BTreeMap<String, String> {
    out.records()
        .iter()
        .zip(sent)
        .filter_map(|(result, data)| {
            result
                .sequence_number()
                .map(|seq| (seq.to_owned(), (*data).to_owned()))
        })
        .collect()
}

fn data_of(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-data-{i}")).collect()
}

#[tokio::test]
async fn forwards_unchanged_without_faults() {
    let kinesis = kinesis_client().await;
    let stream = unique_name("fp-forward");
    create_stream(&kinesis, &stream, 2).await;
    let proxy = forward_proxy(Faults::default()).await;
    let client = kinesis_client_at(&proxy.endpoint_url()).await;

    // Other operations pass straight through too.
    let shards = client
        .list_shards()
        .stream_name(&stream)
        .send()
        .await
        .expect("ListShards through the proxy");
    assert_eq!(shards.shards().len(), 2);

    let out = client
        .put_records()
        .stream_name(&stream)
        .set_records(Some(entries("fwd", 20)))
        .send()
        .await
        .expect("PutRecords through the proxy");
    assert_eq!(out.failed_record_count(), Some(0));
    let sent = data_of("fwd", 20);
    let sent: Vec<&str> = sent.iter().map(String::as_str).collect();
    let expected = successes(&out, &sent);
    assert_eq!(expected.len(), 20);
    assert_eq!(stored(&kinesis, &stream).await, expected);

    let stats = proxy.stats();
    assert_eq!(stats.requests_for("PutRecords"), 1);
    assert_eq!(stats.requests_for("ListShards"), 1);
    assert_eq!((stats.entries_received, stats.entries_forwarded), (20, 20));
    assert_eq!(stats.entries_failed_injected, 0);
    proxy.shutdown().await;
    delete_stream(&kinesis, &stream).await;
}

/// The failure pattern of `out`: the error code of every entry, `None` for successes.
fn pattern(out: &PutRecordsOutput) -> Vec<Option<String>> {
    out.records()
        .iter()
        .map(|r| r.error_code().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn partial_failures_fail_exactly_the_reported_entries() {
    let kinesis = kinesis_client().await;
    let stream = unique_name("fp-partial");
    create_stream(&kinesis, &stream, 2).await;
    let faults = Faults {
        partial_failure_rate: 0.5,
        partial_failure_internal_share: 0.3,
        seed: 7,
        ..Faults::default()
    };
    let proxy = forward_proxy(faults.clone()).await;
    let client = client_with_attempts(&proxy.endpoint_url(), 1).await;

    let count = 100;
    let out = client
        .put_records()
        .stream_name(&stream)
        .set_records(Some(entries("part", count)))
        .send()
        .await
        .expect("PutRecords with partial failures is a successful call");
    assert_eq!(out.records().len(), count);
    let failed: Vec<_> = out
        .records()
        .iter()
        .filter(|r| r.error_code().is_some())
        .collect();
    assert_eq!(out.failed_record_count(), Some(failed.len() as i32));
    assert!(
        (20..=80).contains(&failed.len()),
        "{} of {count} failed at rate 0.5",
        failed.len()
    );
    let codes: BTreeSet<_> = failed.iter().filter_map(|r| r.error_code()).collect();
    assert_eq!(
        codes,
        BTreeSet::from(["InternalFailure", "ProvisionedThroughputExceededException"])
    );
    for entry in &failed {
        assert!(entry.sequence_number().is_none() && entry.shard_id().is_none());
        let message = entry.error_message().unwrap_or_default();
        match entry.error_code() {
            Some("InternalFailure") => assert_eq!(message, "Internal service failure."),
            _ => assert!(
                message.starts_with("Rate exceeded for shard") && message.contains(&stream),
                "{message}"
            ),
        }
    }
    for entry in out.records().iter().filter(|r| r.error_code().is_none()) {
        assert!(entry.sequence_number().is_some() && entry.shard_id().is_some());
    }

    // Exactly the successful entries are in the stream, with the reported sequence numbers.
    let sent = data_of("part", count);
    let sent: Vec<&str> = sent.iter().map(String::as_str).collect();
    let expected = successes(&out, &sent);
    assert_eq!(expected.len(), count - failed.len());
    assert_eq!(stored(&kinesis, &stream).await, expected);

    let stats = proxy.stats();
    assert_eq!(stats.entries_received, count as u64);
    assert_eq!(stats.entries_failed_injected, failed.len() as u64);
    assert_eq!(stats.entries_forwarded, (count - failed.len()) as u64);

    // Same seed, same pattern: set_faults re-seeds the generator.
    proxy.set_faults(faults).expect("valid faults");
    let again = client
        .put_records()
        .stream_name(&stream)
        .set_records(Some(entries("part2", count)))
        .send()
        .await
        .expect("second PutRecords");
    assert_eq!(pattern(&again), pattern(&out));

    proxy.shutdown().await;
    delete_stream(&kinesis, &stream).await;
}

#[tokio::test]
async fn every_entry_failed_needs_no_upstream_call() {
    let kinesis = kinesis_client().await;
    let stream = unique_name("fp-allfail");
    create_stream(&kinesis, &stream, 1).await;
    let proxy = forward_proxy(Faults {
        partial_failure_rate: 1.0,
        ..Faults::default()
    })
    .await;
    let client = client_with_attempts(&proxy.endpoint_url(), 1).await;
    let out = client
        .put_records()
        .stream_name(&stream)
        .set_records(Some(entries("none", 5)))
        .send()
        .await
        .expect("a fully failed PutRecords is still a successful call");
    assert_eq!(out.failed_record_count(), Some(5));
    assert!(
        out.records()
            .iter()
            .all(|r| { r.error_code() == Some("ProvisionedThroughputExceededException") })
    );
    assert!(stored(&kinesis, &stream).await.is_empty());
    assert_eq!(proxy.stats().entries_forwarded, 0);
    proxy.shutdown().await;
    delete_stream(&kinesis, &stream).await;
}

/// A response lost after the write: the client sees a dispatch failure although the record
/// landed, and the SDK's own retry then writes it again (a duplicate).
#[tokio::test]
async fn lost_response_after_write_duplicates_on_sdk_retry() {
    let kinesis = kinesis_client().await;
    let stream = unique_name("fp-lost");
    create_stream(&kinesis, &stream, 1).await;
    let proxy = forward_proxy(Faults {
        lose_response_rate: 1.0,
        ..Faults::default()
    })
    .await;

    let once = client_with_attempts(&proxy.endpoint_url(), 1).await;
    let err = within(
        "PutRecords with a lost response",
        once.put_records()
            .stream_name(&stream)
            .set_records(Some(entries("lost", 1)))
            .send(),
    )
    .await
    .expect_err("no answer");
    assert!(dispatch_failure(&err).is_some(), "{err:?}");
    assert_eq!(
        stored(&kinesis, &stream).await.len(),
        1,
        "the write happened"
    );

    let retrying = client_with_attempts(&proxy.endpoint_url(), 3).await;
    let err = within(
        "PutRecords with lost responses and retries",
        retrying
            .put_records()
            .stream_name(&stream)
            .set_records(Some(entries("dup", 1)))
            .send(),
    )
    .await
    .expect_err("no answer on any attempt");
    assert!(dispatch_failure(&err).is_some(), "{err:?}");
    let stored = stored(&kinesis, &stream).await;
    let copies = stored.values().filter(|data| *data == "dup-data-0").count();
    assert_eq!(copies, 3, "one copy per SDK attempt: {stored:?}");
    assert_eq!(proxy.stats().faults.lost_responses, 4);
    proxy.shutdown().await;
    delete_stream(&kinesis, &stream).await;
}

#[tokio::test]
async fn whole_call_faults_never_reach_the_upstream() {
    let kinesis = kinesis_client().await;
    let stream = unique_name("fp-nocall");
    create_stream(&kinesis, &stream, 1).await;
    let proxy = forward_proxy(Faults {
        internal_error_rate: 1.0,
        ..Faults::default()
    })
    .await;
    let client = client_with_attempts(&proxy.endpoint_url(), 2).await;
    let err = client
        .put_records()
        .stream_name(&stream)
        .set_records(Some(entries("x", 3)))
        .send()
        .await
        .expect_err("500 on every attempt");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(500));
    // ListShards is not in fail_operations: it still works.
    client
        .list_shards()
        .stream_name(&stream)
        .send()
        .await
        .expect("ListShards passes through");
    assert!(stored(&kinesis, &stream).await.is_empty());
    let stats = proxy.stats();
    assert_eq!(stats.faults.server_errors, 2);
    assert_eq!(stats.entries_forwarded, 0);
    proxy.shutdown().await;
    delete_stream(&kinesis, &stream).await;
}
