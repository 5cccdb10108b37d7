//! Polling retrieval against kinesis-mock (`./scripts/emulators.sh start`), with the
//! fault-injecting proxy in front of it for throttling and call counting.
//!
//! Every test works in its own stream and polls for the states it expects instead of sleeping
//! fixed guesses, so the tests run in parallel. Measured figures are printed (`--nocapture`).
//! Expired iterators cannot be produced here (kinesis-mock's iterators live for 5 minutes and
//! the proxy cannot fake one), so re-positioning is covered by the unit tests in
//! `src/retrieval/tests.rs`.

// Only `stream_arn` of the shared test support is used here.
#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant, SystemTime};

use aggregation_proto::{Aggregator, AggregatorConfig, DeaggregatedRecord, HashRange, UserRecord};
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use fault_proxy::{FaultProxy, Faults, Upstream};
use kcl::StreamId;
use kcl::retrieval::{
    PollingConfig, PollingSource, RecordSource, RetrievalError, ShardBatch, StartingPosition,
};
use support::stream_arn;

const DEADLINE: Duration = Duration::from_secs(30);
const HALF: u128 = 1 << 127;

/// Fast pacing for the emulator, which never throttles.
fn config() -> PollingConfig {
    PollingConfig::default()
        .idle_time_between_reads(Duration::from_millis(50))
        .min_time_between_calls(Duration::ZERO)
        .throttle_backoff(Duration::from_millis(10), Duration::from_millis(200))
}

async fn new_stream(prefix: &str, shards: i32) -> (Client, String) {
    let client = integration_tests::kinesis_client().await;
    let stream = integration_tests::unique_name(prefix);
    integration_tests::create_stream(&client, &stream, shards).await;
    (client, stream)
}

async fn first_shard(client: &Client, stream: &str) -> String {
    integration_tests::list_shards(client, stream).await[0]
        .shard_id()
        .to_owned()
}

/// Puts one Kinesis record; returns its sequence number.
async fn put(
    client: &Client,
    stream: &str,
    key: &str,
    hash_key: Option<String>,
    data: Vec<u8>,
) -> String {
    client
        .put_record()
        .stream_name(stream)
        .partition_key(key)
        .set_explicit_hash_key(hash_key)
        .data(Blob::new(data))
        .send()
        .await
        .unwrap_or_else(|err| panic!("PutRecord failed: {err:?}"))
        .sequence_number
}

/// Puts a plain record; returns its sequence number.
async fn put_plain(
    client: &Client,
    stream: &str,
    key: &str,
    data: &str,
    hash_key: Option<u128>,
) -> String {
    let hash_key = hash_key.map(|k| k.to_string());
    put(client, stream, key, hash_key, data.as_bytes().to_vec()).await
}

/// Puts an aggregate of `users` (key, data, explicit hash key); returns its sequence number.
async fn put_aggregate(
    client: &Client,
    stream: &str,
    users: &[(&str, &str, Option<u128>)],
) -> String {
    let mut aggregator = Aggregator::new(AggregatorConfig::default());
    for (key, data, hash_key) in users {
        let mut user = UserRecord::new(*key, data.to_string());
        if let Some(hash_key) = hash_key {
            user = user.with_explicit_hash_key(hash_key.to_string());
        }
        aggregator.try_add(&user).unwrap();
    }
    let record = aggregator.finish().unwrap();
    let data = record.data.to_vec();
    put(
        client,
        stream,
        &record.partition_key,
        record.explicit_hash_key,
        data,
    )
    .await
}

/// Puts "plain-1" (key "k1"), an aggregate of "agg-a", "agg-b", "agg-c" (keys "a", "b", "c")
/// and "plain-3" (key "k3"); returns their sequence numbers.
async fn put_plain_aggregate_plain(client: &Client, stream: &str) -> (String, String, String) {
    let s1 = put_plain(client, stream, "k1", "plain-1", None).await;
    let s2 = put_aggregate(
        client,
        stream,
        &[
            ("a", "agg-a", None),
            ("b", "agg-b", None),
            ("c", "agg-c", None),
        ],
    )
    .await;
    let s3 = put_plain(client, stream, "k3", "plain-3", None).await;
    (s1, s2, s3)
}

type Seen = (String, Option<u64>, String, String);

fn seen(record: &DeaggregatedRecord) -> Seen {
    (
        record.sequence_number().unwrap_or_default().to_owned(),
        record.sub_sequence_number(),
        record.partition_key().to_owned(),
        String::from_utf8_lossy(record.data()).into_owned(),
    )
}

fn seen_all(records: &[DeaggregatedRecord]) -> Vec<Seen> {
    records.iter().map(seen).collect()
}

/// Reads until `expected` records arrived and then a caught-up empty batch (or the shard's
/// end) proves there is nothing more; returns the records and the last batch.
async fn read_exactly(
    source: &mut PollingSource,
    expected: usize,
) -> (Vec<DeaggregatedRecord>, ShardBatch) {
    let deadline = Instant::now() + DEADLINE;
    let mut records = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "only {} of {expected} records after {DEADLINE:?}",
            records.len()
        );
        let mut batch = source.next_batch().await.expect("next_batch");
        records.append(&mut batch.records);
        assert!(
            records.len() <= expected,
            "more than {expected} records: {:?}",
            seen_all(&records)
        );
        let caught_up = batch.kinesis_records == 0 && batch.millis_behind_latest == Some(0);
        if records.len() == expected && (caught_up || batch.shard_end.is_some()) {
            return (records, batch);
        }
    }
}

fn source(
    client: &Client,
    stream: &str,
    shard: &str,
    position: StartingPosition,
    config: PollingConfig,
) -> PollingSource {
    PollingSource::new(
        client.clone(),
        StreamId::from(stream),
        shard.to_owned(),
        None,
        position,
        config,
    )
}

#[tokio::test]
async fn trim_horizon_reads_plain_and_aggregated_records_in_order() {
    let (client, stream) = new_stream("kcl-retrieval-order", 1).await;
    let shard = first_shard(&client, &stream).await;
    let (s1, s2, s3) = put_plain_aggregate_plain(&client, &stream).await;
    let s4 = put_aggregate(
        &client,
        &stream,
        &[("d", "agg-d", None), ("e", "agg-e", None)],
    )
    .await;
    let expected = vec![
        (s1.clone(), None, "k1".into(), "plain-1".into()),
        (s2.clone(), Some(0), "a".into(), "agg-a".into()),
        (s2.clone(), Some(1), "b".into(), "agg-b".into()),
        (s2.clone(), Some(2), "c".into(), "agg-c".into()),
        (s3.clone(), None, "k3".into(), "plain-3".into()),
        (s4.clone(), Some(0), "d".into(), "agg-d".into()),
        (s4.clone(), Some(1), "e".into(), "agg-e".into()),
    ];
    for (prefetch, max_records) in [(true, 10_000), (false, 10_000), (true, 1), (false, 2)] {
        let config = config().prefetch(prefetch).max_records(max_records);
        let mut source = source(
            &client,
            &stream,
            &shard,
            StartingPosition::TrimHorizon,
            config,
        );
        let (records, _) = read_exactly(&mut source, expected.len()).await;
        assert_eq!(
            seen_all(&records),
            expected,
            "prefetch {prefetch}, max_records {max_records}"
        );
        assert!(
            records
                .iter()
                .all(|r| r.approximate_arrival_timestamp().is_some())
        );
        let stats = source.stats();
        assert_eq!(stats.kinesis_records, 4);
        assert_eq!(stats.records_delivered, 7);
        assert_eq!(stats.throttled + stats.transient_errors, 0);
    }
    integration_tests::delete_stream(&client, &stream).await;
}

#[tokio::test]
async fn after_sequence_resumes_inside_an_aggregate_and_after_a_plain_record() {
    let (client, stream) = new_stream("kcl-retrieval-resume", 1).await;
    let shard = first_shard(&client, &stream).await;
    let (s1, s2, s3) = put_plain_aggregate_plain(&client, &stream).await;

    let after = |sequence_number: &str, sub_sequence_number| StartingPosition::AfterSequence {
        sequence_number: sequence_number.to_owned(),
        sub_sequence_number,
    };
    // Checkpointed at sub-record 1 of the aggregate: resume at sub-record 2.
    let mut inside = source(&client, &stream, &shard, after(&s2, 1), config());
    let (records, _) = read_exactly(&mut inside, 2).await;
    assert_eq!(
        seen_all(&records),
        vec![
            (s2.clone(), Some(2), "c".into(), "agg-c".into()),
            (s3.clone(), None, "k3".into(), "plain-3".into()),
        ]
    );
    assert_eq!(inside.stats().records_skipped, 2);

    // Checkpointed at a plain record: resume at the next record.
    let mut plain = source(&client, &stream, &shard, after(&s1, 0), config());
    let (records, _) = read_exactly(&mut plain, 4).await;
    assert_eq!(
        seen_all(&records)[0],
        (s2.clone(), Some(0), "a".into(), "agg-a".into())
    );

    // Checkpointed at the last record: nothing until something new arrives.
    let mut tip = source(&client, &stream, &shard, after(&s3, 0), config());
    let (records, _) = read_exactly(&mut tip, 0).await;
    assert!(records.is_empty());
    let s4 = put_plain(&client, &stream, "k4", "plain-4", None).await;
    let (records, _) = read_exactly(&mut tip, 1).await;
    assert_eq!(
        seen_all(&records),
        vec![(s4, None, "k4".into(), "plain-4".into())]
    );
    integration_tests::delete_stream(&client, &stream).await;
}

#[tokio::test]
async fn latest_and_at_timestamp() {
    let (client, stream) = new_stream("kcl-retrieval-latest", 1).await;
    let shard = first_shard(&client, &stream).await;
    put_plain(&client, &stream, "old", "before", None).await;

    // LATEST: the first call creates the iterator; only records put after it are seen.
    let mut latest = source(&client, &stream, &shard, StartingPosition::Latest, config());
    let (records, _) = read_exactly(&mut latest, 0).await;
    assert!(records.is_empty());
    let s2 = put_plain(&client, &stream, "new", "after", None).await;
    let (records, _) = read_exactly(&mut latest, 1).await;
    assert_eq!(
        seen_all(&records),
        vec![(s2.clone(), None, "new".into(), "after".into())]
    );

    // AT_TIMESTAMP of the second record's arrival: the second and later records. Wait until
    // the clock has moved past it so the third record arrives strictly later.
    let all = integration_tests::read_all_records(&client, &stream).await;
    let second_arrival: SystemTime = all[1]
        .approximate_arrival_timestamp()
        .map(|t| SystemTime::try_from(*t).unwrap())
        .unwrap();
    while SystemTime::now() <= second_arrival + Duration::from_millis(2) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let s3 = put_plain(&client, &stream, "newer", "third", None).await;
    let mut at = source(
        &client,
        &stream,
        &shard,
        StartingPosition::AtTimestamp(second_arrival),
        config(),
    );
    let (records, _) = read_exactly(&mut at, 2).await;
    assert_eq!(
        seen_all(&records),
        vec![
            (s2, None, "new".into(), "after".into()),
            (s3, None, "newer".into(), "third".into()),
        ]
    );
    integration_tests::delete_stream(&client, &stream).await;
}

#[tokio::test]
async fn a_split_parent_ends_with_its_children_and_the_children_read() {
    let (client, stream) = new_stream("kcl-retrieval-split", 1).await;
    let parent = first_shard(&client, &stream).await;
    let before_low = put_plain(&client, &stream, "bl", "before-low", Some(1)).await;
    let before_high = put_plain(&client, &stream, "bh", "before-high", Some(HALF + 1)).await;
    client
        .split_shard()
        .stream_name(&stream)
        .shard_to_split(&parent)
        .new_starting_hash_key(HALF.to_string())
        .send()
        .await
        .expect("SplitShard");
    integration_tests::wait_for_stream_active(&client, &stream).await;
    let after_low = put_plain(&client, &stream, "al", "after-low", Some(2)).await;
    let after_high = put_aggregate(
        &client,
        &stream,
        &[
            ("ah1", "after-high-1", Some(HALF + 2)),
            ("ah2", "after-high-2", Some(u128::MAX)),
        ],
    )
    .await;

    let mut source_parent = PollingSource::new(
        client.clone(),
        StreamId::from(stream.as_str()),
        parent.clone(),
        Some(HashRange::ALL),
        StartingPosition::TrimHorizon,
        config(),
    );
    let (records, last) = read_exactly(&mut source_parent, 2).await;
    assert_eq!(
        seen_all(&records),
        vec![
            (before_low, None, "bl".into(), "before-low".into()),
            (before_high, None, "bh".into(), "before-high".into()),
        ]
    );
    let children = last.shard_end.expect("the parent's end");
    assert_eq!(children.len(), 2, "{children:?}");
    for child in &children {
        assert_eq!(child.parent_shard_ids, vec![parent.clone()]);
    }
    let low = children
        .iter()
        .find(|c| c.hash_range.start() == 0)
        .expect("low child");
    let high = children
        .iter()
        .find(|c| c.hash_range.start() == HALF)
        .expect("high child");
    assert_eq!(low.hash_range.end(), HALF - 1);
    assert_eq!(high.hash_range.end(), u128::MAX);
    // The end repeats, empty.
    let again = source_parent.next_batch().await.unwrap();
    assert!(again.is_empty());
    assert_eq!(again.shard_end.as_ref(), Some(&children));

    let read_child = |child: &kcl::retrieval::ChildShard| {
        PollingSource::new(
            client.clone(),
            StreamId::from(stream.as_str()),
            child.shard_id.clone(),
            Some(child.hash_range),
            StartingPosition::TrimHorizon,
            config(),
        )
    };
    let (records, _) = read_exactly(&mut read_child(low), 1).await;
    assert_eq!(
        seen_all(&records),
        vec![(after_low, None, "al".into(), "after-low".into())]
    );
    let (records, _) = read_exactly(&mut read_child(high), 2).await;
    assert_eq!(
        seen_all(&records),
        vec![
            (
                after_high.clone(),
                Some(0),
                "ah1".into(),
                "after-high-1".into()
            ),
            (after_high, Some(1), "ah2".into(), "after-high-2".into()),
        ]
    );
    integration_tests::delete_stream(&client, &stream).await;
}

#[tokio::test]
async fn hash_range_filtering_drops_exactly_the_sub_records_outside() {
    let (client, stream) = new_stream("kcl-retrieval-range", 2).await;
    let shards = integration_tests::list_shards(&client, &stream).await;
    let low = shards
        .iter()
        .find(|s| {
            s.hash_key_range()
                .is_some_and(|r| r.starting_hash_key() == "0")
        })
        .expect("the low shard");
    let range = low.hash_key_range().unwrap();
    let low_range =
        HashRange::from_decimal(range.starting_hash_key(), range.ending_hash_key()).unwrap();
    // The aggregate goes to the low shard (its first record's hash key), with records of both
    // halves, as a producer that aggregated before a split would have written it.
    let sequence = put_aggregate(
        &client,
        &stream,
        &[
            ("l1", "low-1", Some(0)),
            ("h1", "high-1", Some(low_range.end() + 1)),
            ("l2", "low-2", Some(low_range.end())),
            ("h2", "high-2", Some(u128::MAX)),
            ("l3", "low-3", Some(12_345)),
        ],
    )
    .await;
    let plain = put_plain(&client, &stream, "p", "plain-low", Some(7)).await;
    let mut source = PollingSource::new(
        client.clone(),
        StreamId::from(stream.as_str()),
        low.shard_id().to_owned(),
        Some(low_range),
        StartingPosition::TrimHorizon,
        config(),
    );
    let (records, _) = read_exactly(&mut source, 4).await;
    assert_eq!(
        seen_all(&records),
        vec![
            (sequence.clone(), Some(0), "l1".into(), "low-1".into()),
            (sequence.clone(), Some(2), "l2".into(), "low-2".into()),
            (sequence, Some(4), "l3".into(), "low-3".into()),
            (plain, None, "p".into(), "plain-low".into()),
        ]
    );
    assert_eq!(source.stats().records_filtered, 2);
    integration_tests::delete_stream(&client, &stream).await;
}

#[tokio::test]
async fn throttled_get_records_still_deliver_everything_once_in_order() {
    let (client, stream) = new_stream("kcl-retrieval-throttle", 1).await;
    let shard = first_shard(&client, &stream).await;
    let mut expected = Vec::new();
    for i in 0..20 {
        if i % 4 == 3 {
            let users: Vec<(String, String)> = (0..3)
                .map(|j| (format!("agg-{i}-{j}"), format!("data-{i}-{j}")))
                .collect();
            let refs: Vec<(&str, &str, Option<u128>)> = users
                .iter()
                .map(|(k, d)| (k.as_str(), d.as_str(), None))
                .collect();
            let sequence = put_aggregate(&client, &stream, &refs).await;
            for (j, (key, data)) in users.into_iter().enumerate() {
                expected.push((sequence.clone(), Some(j as u64), key, data));
            }
        } else {
            let (key, data) = (format!("plain-{i}"), format!("data-{i}"));
            let sequence = put_plain(&client, &stream, &key, &data, None).await;
            expected.push((sequence, None, key, data));
        }
    }
    let upstream = integration_tests::endpoint_url(integration_tests::KINESIS_ENDPOINT_VAR);
    let proxy = FaultProxy::start(
        Upstream::Forward(upstream),
        Faults {
            throttle_rate: 0.5,
            fail_operations: vec!["GetRecords".into()],
            seed: 7,
            ..Faults::default()
        },
    )
    .await
    .expect("fault proxy");
    let proxied = integration_tests::kinesis_client_at(&proxy.endpoint_url()).await;
    let started = Instant::now();
    let mut source = source(
        &proxied,
        &stream,
        &shard,
        StartingPosition::TrimHorizon,
        config().max_records(2),
    );
    let (records, _) = read_exactly(&mut source, expected.len()).await;
    assert_eq!(seen_all(&records), expected);
    let stats = source.stats();
    let proxy_stats = proxy.stats();
    assert!(stats.throttled > 0, "{stats:?}");
    assert_eq!(stats.throttled, proxy_stats.faults.throttled);
    assert_eq!(
        stats.get_records_calls,
        proxy_stats.requests_for("GetRecords")
    );
    eprintln!(
        "throttled: {} records through {} GetRecords calls ({} throttled) in {:?}",
        records.len(),
        stats.get_records_calls,
        stats.throttled,
        started.elapsed()
    );
    drop(source);
    proxy.shutdown().await;
    integration_tests::delete_stream(&client, &stream).await;
}

#[tokio::test]
async fn an_idle_shard_is_polled_once_per_idle_time() {
    let (client, stream) = new_stream("kcl-retrieval-idle", 1).await;
    let shard = first_shard(&client, &stream).await;
    let upstream = integration_tests::endpoint_url(integration_tests::KINESIS_ENDPOINT_VAR);
    let proxy = FaultProxy::start(Upstream::Forward(upstream), Faults::default())
        .await
        .expect("fault proxy");
    let proxied = integration_tests::kinesis_client_at(&proxy.endpoint_url()).await;
    let idle = Duration::from_millis(200);
    for prefetch in [true, false] {
        let before = proxy.stats().requests_for("GetRecords");
        let config = config().idle_time_between_reads(idle).prefetch(prefetch);
        let mut source = source(&proxied, &stream, &shard, StartingPosition::Latest, config);
        let window = Duration::from_secs(2);
        let started = Instant::now();
        let mut batches = 0;
        let mut slowest = Duration::ZERO;
        while started.elapsed() < window {
            let call = Instant::now();
            let batch = source.next_batch().await.expect("next_batch");
            if batches > 0 {
                // The first call also creates the iterator (and a connection).
                slowest = slowest.max(call.elapsed());
            }
            assert!(batch.is_empty());
            batches += 1;
        }
        let elapsed = started.elapsed();
        drop(source);
        let calls = proxy.stats().requests_for("GetRecords") - before;
        let per_second = calls as f64 / elapsed.as_secs_f64();
        eprintln!(
            "idle (prefetch {prefetch}): {calls} GetRecords calls in {elapsed:?} ({per_second:.1}/s), \
             {batches} empty batches, slowest later next_batch {slowest:?}"
        );
        // One call per idle time, plus the first and one prefetched ahead.
        let bound = (elapsed.as_millis() / idle.as_millis()) as u64 + 2;
        assert!(calls <= bound, "{calls} calls > {bound}");
        // And it keeps polling: at least one call per idle time plus the slowest call seen
        // (kinesis-mock answers in milliseconds on an idle machine, in a second on a loaded
        // one), up to 5.
        let floor = (elapsed.as_secs_f64() / (idle + slowest).as_secs_f64()) as u64;
        assert!(
            calls + 1 >= floor.min(5),
            "only {calls} calls (slowest {slowest:?})"
        );
        // (That empty batches come back without the idle wait is checked exactly, with paused
        // time, in the unit tests; here the emulator's latency varies with the machine's load.)
    }
    proxy.shutdown().await;
    integration_tests::delete_stream(&client, &stream).await;
}

#[tokio::test]
async fn a_stream_arn_works_and_missing_streams_are_fatal() {
    let (client, stream) = new_stream("kcl-retrieval-arn", 1).await;
    let shard = first_shard(&client, &stream).await;
    let sequence = put_plain(&client, &stream, "k", "by-arn", None).await;
    let arn = stream_arn(&client, &stream).await;
    let id = StreamId::from(arn.clone());
    assert!(matches!(id, StreamId::Arn(_)));
    let mut by_arn = PollingSource::new(
        client.clone(),
        id,
        shard.clone(),
        None,
        StartingPosition::TrimHorizon,
        config(),
    );
    let (records, _) = read_exactly(&mut by_arn, 1).await;
    assert_eq!(
        seen_all(&records),
        vec![(sequence, None, "k".into(), "by-arn".into())]
    );

    for (stream, shard) in [
        (
            integration_tests::unique_name("kcl-retrieval-missing"),
            shard.clone(),
        ),
        (stream.clone(), "shardId-000000000099".to_owned()),
    ] {
        let mut missing = source(
            &client,
            &stream,
            &shard,
            StartingPosition::TrimHorizon,
            config(),
        );
        let error = missing
            .next_batch()
            .await
            .expect_err("a missing stream or shard");
        assert!(
            matches!(
                error,
                RetrievalError::NotFound {
                    operation: "GetShardIterator",
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error.is_fatal());
    }
    integration_tests::delete_stream(&client, &stream).await;
}

#[tokio::test]
async fn read_throughput_from_the_emulator() {
    let (client, stream) = new_stream("kcl-retrieval-throughput", 1).await;
    let shard = first_shard(&client, &stream).await;
    let records = 2_000;
    let payload = "x".repeat(1_000);
    let put_started = Instant::now();
    for chunk in 0..records / 500 {
        let entries = (0..500)
            .map(|i| {
                aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                    .partition_key(format!("k-{chunk}-{i}"))
                    .data(Blob::new(payload.as_bytes().to_vec()))
                    .build()
                    .unwrap()
            })
            .collect();
        let out = client
            .put_records()
            .stream_name(&stream)
            .set_records(Some(entries))
            .send()
            .await
            .expect("PutRecords");
        assert_eq!(out.failed_record_count, Some(0));
    }
    let put_elapsed = put_started.elapsed();
    for (prefetch, max_records) in [(true, 10_000), (true, 500), (false, 500)] {
        let started = Instant::now();
        let mut source = source(
            &client,
            &stream,
            &shard,
            StartingPosition::TrimHorizon,
            config().prefetch(prefetch).max_records(max_records),
        );
        let (read, _) = read_exactly(&mut source, records).await;
        let elapsed = started.elapsed();
        assert_eq!(read.len(), records);
        eprintln!(
            "throughput (prefetch {prefetch}, max_records {max_records}): read {records} records of 1 KB in {elapsed:?} \
             ({:.0} records/s, {} GetRecords calls); put took {put_elapsed:?}",
            records as f64 / elapsed.as_secs_f64(),
            source.stats().get_records_calls
        );
    }
    integration_tests::delete_stream(&client, &stream).await;
}
