//! Read-sink mode through a real `aws-sdk-kinesis` client: GetShardIterator at every position
//! type, GetRecords pages (Limit, the 10 MiB cap, empty pages at the end), plain and
//! aggregated records that route to the shard they are read from. No emulator is needed.

mod common;

use std::time::{Duration, SystemTime};

use aggregation_proto::{Deaggregator, ReceivedRecord};
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::{Record, ShardIteratorType};
use common::client_with_attempts;
use fault_proxy::{FaultProxy, Faults, StartError, Upstream, partition_key_hash};

const STREAM: &str = "reads";

async fn read_sink(
    shards: u32,
    records_per_shard: u64,
    record_size: usize,
    aggregated: bool,
) -> FaultProxy {
    FaultProxy::start(
        Upstream::ReadSink {
            shards,
            records_per_shard,
            record_size,
            aggregated,
            keys: 100,
        },
        Faults::default(),
    )
    .await
    .expect("start the read sink")
}

async fn iterator(
    client: &Client,
    shard: &str,
    kind: ShardIteratorType,
    sequence_number: Option<&str>,
    timestamp: Option<DateTime>,
) -> String {
    client
        .get_shard_iterator()
        .stream_name(STREAM)
        .shard_id(shard)
        .shard_iterator_type(kind)
        .set_starting_sequence_number(sequence_number.map(str::to_owned))
        .set_timestamp(timestamp)
        .send()
        .await
        .expect("GetShardIterator")
        .shard_iterator
        .expect("an iterator")
}

/// One page: records, next iterator, MillisBehindLatest.
async fn page(client: &Client, iterator: &str, limit: Option<i32>) -> (Vec<Record>, String, i64) {
    let out = client
        .get_records()
        .shard_iterator(iterator)
        .set_limit(limit)
        .send()
        .await
        .expect("GetRecords");
    assert!(out.child_shards.is_none(), "open shards have no children");
    (
        out.records,
        out.next_shard_iterator.expect("a next iterator"),
        out.millis_behind_latest.expect("MillisBehindLatest"),
    )
}

/// Reads from `iterator` until an empty page; checks MillisBehindLatest on the way.
async fn read_to_end(client: &Client, mut iterator: String, limit: Option<i32>) -> Vec<Record> {
    let mut all = Vec::new();
    let mut last_behind = i64::MAX;
    loop {
        let (records, next, behind) = page(client, &iterator, limit).await;
        assert!(behind <= last_behind, "MillisBehindLatest only falls");
        last_behind = behind;
        if records.is_empty() {
            assert_eq!(behind, 0, "an empty page at the end is caught up");
            return all;
        }
        all.extend(records);
        iterator = next;
    }
}

/// `(start, end)` hash-key range of `shard`, from ListShards.
async fn range(client: &Client, shard: &str) -> (u128, u128) {
    let shards = client
        .list_shards()
        .stream_name(STREAM)
        .send()
        .await
        .expect("ListShards")
        .shards
        .unwrap_or_default();
    let found = shards
        .iter()
        .find(|s| s.shard_id() == shard)
        .expect("the shard is listed");
    let range = found.hash_key_range().expect("a range");
    (
        range.starting_hash_key().parse().expect("decimal"),
        range.ending_hash_key().parse().expect("decimal"),
    )
}

fn sequence(record: &Record) -> u128 {
    record.sequence_number().parse().expect("decimal")
}

#[tokio::test]
async fn reads_a_shard_to_the_end() {
    let proxy = read_sink(3, 2_500, 40, false).await;
    let client = client_with_attempts(&proxy.endpoint_url(), 1).await;
    let started = SystemTime::now();
    for shard in ["shardId-000000000000", "shardId-000000000002"] {
        let (start, end) = range(&client, shard).await;
        let first = iterator(&client, shard, ShardIteratorType::TrimHorizon, None, None).await;
        let records = read_to_end(&client, first, None).await;
        assert_eq!(records.len(), 2_500);
        assert!(
            records
                .windows(2)
                .all(|w| sequence(&w[0]) < sequence(&w[1])),
            "increasing sequence numbers"
        );
        let mut arrivals = Vec::new();
        for record in &records {
            assert_eq!(record.data().as_ref().len(), 40);
            assert_eq!(record.partition_key().len(), 16);
            let hash = partition_key_hash(record.partition_key());
            assert!((start..=end).contains(&hash), "the key routes to {shard}");
            let arrival = record
                .approximate_arrival_timestamp()
                .expect("an arrival time");
            arrivals.push(SystemTime::try_from(*arrival).expect("a valid time"));
        }
        assert!(arrivals.windows(2).all(|w| w[0] < w[1]), "1 ms apart");
        assert!(*arrivals.last().expect("records") <= started + Duration::from_secs(1));
    }
    let stats = proxy.stats();
    assert_eq!(stats.records_read, 5_000);
    // 10,000 per page at most: 1 page with everything and 1 empty page per shard.
    assert_eq!(stats.requests_for("GetRecords"), 4);
    assert_eq!(stats.invalid_requests, 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn aggregated_records_deaggregate_to_every_user_record() {
    let proxy = read_sink(2, 3_000, 100, true).await;
    let client = client_with_attempts(&proxy.endpoint_url(), 1).await;
    let shard = "shardId-000000000001";
    let (start, end) = range(&client, shard).await;
    let first = iterator(&client, shard, ShardIteratorType::TrimHorizon, None, None).await;
    let records = read_to_end(&client, first, Some(3)).await;
    assert!(
        records.len() > 3 && records.len() < 20,
        "{} aggregates of up to 51,200 bytes",
        records.len()
    );
    let deaggregator = Deaggregator::new();
    let mut users = Vec::new();
    for record in &records {
        assert!(record.data().as_ref().len() + record.partition_key().len() <= 51_200);
        let received = ReceivedRecord::new(
            record.partition_key().to_owned(),
            record.data().as_ref().to_vec(),
        )
        .with_sequence_number(record.sequence_number().to_owned());
        deaggregator
            .deaggregate_into(&received, &mut users)
            .expect("a valid aggregate");
    }
    assert_eq!(users.len(), 3_000);
    for user in &users {
        assert!(user.is_aggregated());
        assert_eq!(user.data().len(), 100);
        let hash = partition_key_hash(user.partition_key());
        assert!((start..=end).contains(&hash), "every user key routes here");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn iterator_positions() {
    let proxy = read_sink(2, 100, 8, false).await;
    let client = client_with_attempts(&proxy.endpoint_url(), 1).await;
    let shard = "shardId-000000000001";
    let first = iterator(&client, shard, ShardIteratorType::TrimHorizon, None, None).await;
    let all = read_to_end(&client, first, None).await;
    assert_eq!(all.len(), 100);
    let at = |i: usize| all[i].sequence_number().to_owned();

    let it = iterator(
        &client,
        shard,
        ShardIteratorType::AtSequenceNumber,
        Some(&at(40)),
        None,
    )
    .await;
    let (records, _, behind) = page(&client, &it, Some(1)).await;
    assert_eq!(records[0].sequence_number(), at(40));
    assert_eq!(behind, 59, "59 records (1 ms each) after record 40");

    let it = iterator(
        &client,
        shard,
        ShardIteratorType::AfterSequenceNumber,
        Some(&at(40)),
        None,
    )
    .await;
    let (records, _, _) = page(&client, &it, Some(1)).await;
    assert_eq!(records[0].sequence_number(), at(41));

    let it = iterator(
        &client,
        shard,
        ShardIteratorType::AfterSequenceNumber,
        Some(&at(99)),
        None,
    )
    .await;
    let (records, _, behind) = page(&client, &it, None).await;
    assert!(records.is_empty() && behind == 0, "after the last record");

    let arrival = *all[70]
        .approximate_arrival_timestamp()
        .expect("an arrival time");
    let it = iterator(
        &client,
        shard,
        ShardIteratorType::AtTimestamp,
        None,
        Some(arrival),
    )
    .await;
    let (records, _, _) = page(&client, &it, Some(1)).await;
    assert_eq!(records[0].sequence_number(), at(70), "at the arrival time");
    let past = DateTime::from_secs(1_000_000_000);
    let it = iterator(
        &client,
        shard,
        ShardIteratorType::AtTimestamp,
        None,
        Some(past),
    )
    .await;
    let (records, _, _) = page(&client, &it, Some(1)).await;
    assert_eq!(records[0].sequence_number(), at(0));

    // LATEST: nothing now, and nothing later either (the data is fixed).
    let it = iterator(&client, shard, ShardIteratorType::Latest, None, None).await;
    let (records, next, behind) = page(&client, &it, None).await;
    assert!(records.is_empty() && behind == 0);
    let (records, _, _) = page(&client, &next, None).await;
    assert!(records.is_empty());

    // Another shard's sequence number, an unknown shard, garbage iterators.
    let other = client
        .get_shard_iterator()
        .stream_name(STREAM)
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
        .starting_sequence_number(at(5))
        .send()
        .await
        .expect_err("not this shard's sequence number");
    assert_eq!(other.code(), Some("InvalidArgumentException"));
    let missing = client
        .get_shard_iterator()
        .stream_name(STREAM)
        .shard_id("shardId-000000000002")
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .expect_err("no such shard");
    assert!(
        missing
            .as_service_error()
            .is_some_and(|e| e.is_resource_not_found_exception()),
        "{missing:?}"
    );
    let garbage = client
        .get_records()
        .shard_iterator("AAAAnotaniterator")
        .send()
        .await
        .expect_err("not an iterator");
    assert_eq!(garbage.code(), Some("InvalidArgumentException"));
    assert_eq!(proxy.stats().invalid_requests, 3);
    proxy.shutdown().await;
}

#[tokio::test]
async fn limit_and_page_size() {
    let proxy = read_sink(1, 30, 1_000_000, false).await;
    let client = client_with_attempts(&proxy.endpoint_url(), 1).await;
    let shard = "shardId-000000000000";
    let first = iterator(&client, shard, ShardIteratorType::TrimHorizon, None, None).await;
    let (records, next, behind) = page(&client, &first, Some(7)).await;
    assert_eq!(records.len(), 7);
    assert_eq!(behind, 23);
    // 10 MiB of data at most: ten 1 MB records.
    let (records, next, _) = page(&client, &next, None).await;
    assert_eq!(records.len(), 10);
    assert_eq!(records[0].sequence_number().len(), 32);
    let (records, next, _) = page(&client, &next, Some(10_000)).await;
    assert_eq!(records.len(), 10);
    let (records, next, behind) = page(&client, &next, None).await;
    assert_eq!((records.len(), behind), (3, 0));
    // The end: empty pages, again and again, with a usable next iterator.
    let mut iterator = next;
    for _ in 0..3 {
        let (records, next, behind) = page(&client, &iterator, None).await;
        assert!(records.is_empty());
        assert_eq!(behind, 0);
        iterator = next;
    }
    for limit in [0, 10_001] {
        let err = client
            .get_records()
            .shard_iterator(&iterator)
            .limit(limit)
            .send()
            .await
            .expect_err("Limit out of range");
        assert_eq!(err.code(), Some("ValidationException"), "Limit {limit}");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn plain_sink_does_not_serve_reads_and_bad_specs_are_refused() {
    let proxy = FaultProxy::start(Upstream::Sink { shards: 1 }, Faults::default())
        .await
        .expect("start the sink");
    let client = client_with_attempts(&proxy.endpoint_url(), 1).await;
    let err = client
        .get_shard_iterator()
        .stream_name(STREAM)
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .expect_err("a write-only sink");
    assert_eq!(err.code(), Some("UnknownOperationException"));
    proxy.shutdown().await;

    let bad = FaultProxy::start(
        Upstream::ReadSink {
            shards: 1,
            records_per_shard: 1,
            record_size: 1,
            aggregated: false,
            keys: 0,
        },
        Faults::default(),
    )
    .await;
    assert!(
        matches!(bad, Err(StartError::InvalidReadSink(_))),
        "{bad:?}"
    );
}

#[tokio::test]
async fn injected_throttling_applies_to_get_records() {
    let proxy = FaultProxy::start(
        Upstream::ReadSink {
            shards: 1,
            records_per_shard: 10,
            record_size: 10,
            aggregated: false,
            keys: 1,
        },
        Faults {
            throttle_rate: 1.0,
            fail_operations: vec!["GetRecords".to_owned()],
            ..Faults::default()
        },
    )
    .await
    .expect("start the read sink");
    let client = client_with_attempts(&proxy.endpoint_url(), 1).await;
    let it = iterator(
        &client,
        "shardId-000000000000",
        ShardIteratorType::TrimHorizon,
        None,
        None,
    )
    .await;
    let err = client
        .get_records()
        .shard_iterator(&it)
        .send()
        .await
        .expect_err("throttled");
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_provisioned_throughput_exceeded_exception()),
        "{err:?}"
    );
    proxy.set_faults(Faults::default()).expect("valid faults");
    let (records, _, _) = page(&client, &it, None).await;
    assert_eq!(records.len(), 10);
    proxy.shutdown().await;
}
