//! Sink mode through a real `aws-sdk-kinesis` client: ListShards, DescribeStreamSummary and
//! PutRecords answered locally, with shard ids that match the MD5 hash-key ranges.
//!
//! Only `sink_layout_matches_create_stream` needs the emulators.

mod common;

use std::collections::BTreeMap;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, Shard, StreamStatus};
use common::client_with_attempts;
use fault_proxy::{FaultProxy, Faults, Upstream};
use integration_tests::{create_stream, delete_stream, kinesis_client, list_shards, unique_name};
use md5::{Digest, Md5};

async fn sink(shards: u32) -> FaultProxy {
    FaultProxy::start(Upstream::Sink { shards }, Faults::default())
        .await
        .expect("start the sink")
}

/// `(start, end, shard id)` of every shard, from a ListShards answer.
fn ranges(shards: &[Shard]) -> Vec<(u128, u128, String)> {
    shards
        .iter()
        .map(|shard| {
            let range = shard.hash_key_range().expect("a hash key range");
            (
                range.starting_hash_key().parse().expect("decimal start"),
                range.ending_hash_key().parse().expect("decimal end"),
                shard.shard_id().to_owned(),
            )
        })
        .collect()
}

fn md5_hash_key(partition_key: &str) -> u128 {
    let digest: [u8; 16] = Md5::digest(partition_key.as_bytes()).into();
    u128::from_be_bytes(digest)
}

#[tokio::test]
async fn sink_answers_put_records_on_the_hash_key_shards() {
    let proxy = sink(4).await;
    let client = client_with_attempts(&proxy.endpoint_url(), 1).await;
    let stream = "any-stream-name";

    let shards = list_shards(&client, stream).await;
    let ranges = ranges(&shards);
    assert_eq!(ranges.len(), 4);
    assert_eq!(ranges[0].0, 0);
    assert_eq!(ranges[3].1, u128::MAX);
    for pair in ranges.windows(2) {
        assert_eq!(pair[0].1 + 1, pair[1].0, "contiguous ranges");
    }

    let summary = client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .expect("DescribeStreamSummary");
    let summary = summary.stream_description_summary().expect("a summary");
    assert_eq!(summary.stream_status(), &StreamStatus::Active);
    assert_eq!(summary.open_shard_count(), 4);
    assert_eq!(summary.stream_name(), stream);

    // 500 entries of 100 bytes; every 10th one routed by an explicit hash key.
    let entries: Vec<_> = (0..500u128)
        .map(|i| {
            let builder = PutRecordsRequestEntry::builder()
                .partition_key(format!("key-{i}"))
                .data(Blob::new(vec![b'x'; 100]));
            let builder = if i % 10 == 0 {
                builder.explicit_hash_key((u128::MAX / 500 * i).to_string())
            } else {
                builder
            };
            builder.build().expect("complete entry")
        })
        .collect();
    let out = client
        .put_records()
        .stream_name(stream)
        .set_records(Some(entries.clone()))
        .send()
        .await
        .expect("PutRecords");
    assert_eq!(out.failed_record_count(), Some(0));
    assert_eq!(out.records().len(), 500);

    let mut last_sequence: BTreeMap<String, u128> = BTreeMap::new();
    for (entry, result) in entries.iter().zip(out.records()) {
        let hash = match entry.explicit_hash_key() {
            Some(key) => key.parse().expect("decimal key"),
            None => md5_hash_key(entry.partition_key()),
        };
        let expected = ranges
            .iter()
            .find(|(start, end, _)| (*start..=*end).contains(&hash))
            .map(|(_, _, id)| id.as_str());
        assert_eq!(result.shard_id(), expected, "{entry:?}");
        let sequence: u128 = result
            .sequence_number()
            .expect("a sequence number")
            .parse()
            .expect("a decimal sequence number");
        let shard = expected.unwrap_or_default().to_owned();
        if let Some(previous) = last_sequence.insert(shard, sequence) {
            assert!(previous < sequence, "increasing within a shard");
        }
    }
    assert_eq!(last_sequence.len(), 4, "500 keys reach every shard");

    let stats = proxy.stats();
    assert_eq!(
        (stats.entries_received, stats.entries_forwarded),
        (500, 500)
    );
    assert_eq!(stats.requests_for("PutRecords"), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn sink_refuses_requests_over_the_limits() {
    let proxy = sink(1).await;
    let client = client_with_attempts(&proxy.endpoint_url(), 1).await;
    let entry = PutRecordsRequestEntry::builder()
        .partition_key("k")
        .data(Blob::new("d"))
        .build()
        .expect("complete entry");
    let err = client
        .put_records()
        .stream_name("limits")
        .set_records(Some(vec![entry; 501]))
        .send()
        .await
        .expect_err("501 entries are refused");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));
    assert_eq!(
        err.as_service_error()
            .and_then(aws_sdk_kinesis::error::ProvideErrorMetadata::code),
        Some("ValidationException")
    );

    let big = PutRecordsRequestEntry::builder()
        .partition_key("k")
        .data(Blob::new(vec![0u8; 1024 * 1024]))
        .build()
        .expect("complete entry");
    let err = client
        .put_records()
        .stream_name("limits")
        .set_records(Some(vec![big; 6]))
        .send()
        .await
        .expect_err("6 MiB is refused");
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_invalid_argument_exception()),
        "{err:?}"
    );
    assert_eq!(proxy.stats().invalid_requests, 2);
    proxy.shutdown().await;
}

/// The sink splits the hash space like the service's CreateStream: shard `i` starts at
/// `i * floor(2^128 / n)`. kinesis-mock uses `floor((2^128 - 1) / n)` instead, which is the
/// same number unless `n` is a power of two (for 4 shards its boundaries are 1 to 3 lower), so
/// only other shard counts are compared with it.
#[tokio::test]
async fn sink_layout_matches_create_stream() {
    let kinesis = kinesis_client().await;
    for shards in [1u32, 3, 5, 7] {
        let stream = unique_name("fp-layout");
        create_stream(&kinesis, &stream, shards as i32).await;
        let emulator = ranges(&list_shards(&kinesis, &stream).await);
        let proxy = sink(shards).await;
        let client = client_with_attempts(&proxy.endpoint_url(), 1).await;
        let ours = ranges(&list_shards(&client, &stream).await);
        assert_eq!(ours, emulator, "{shards} shards");
        proxy.shutdown().await;
        delete_stream(&kinesis, &stream).await;
    }
}
