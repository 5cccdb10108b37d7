//! The producer against kinesis-mock: what was sent is exactly what is in the stream, each user
//! record in the shard its hash key belongs to, and every receipt tells where it went.

use std::collections::HashMap;
use std::time::Duration;

use aggregation_proto::{HashRange, ReceivedRecord, deaggregate};
use integration_tests::{
    create_stream, kinesis_client, list_shards, read_records_by_shard, unique_name,
};
use kpl::{Producer, RecordSuccess, SendError, TrySendError, UserRecord};

/// A user record read back: (shard, partition key, data, sequence number, sub-sequence number).
type ReadBack = (String, String, Vec<u8>, String, Option<u64>);

async fn read_back(client: &aws_sdk_kinesis::Client, stream: &str) -> Vec<ReadBack> {
    let mut out = Vec::new();
    for (shard, records) in read_records_by_shard(client, stream).await {
        for record in records {
            let received =
                ReceivedRecord::new(record.partition_key(), record.data().as_ref().to_vec())
                    .with_sequence_number(record.sequence_number());
            for user in deaggregate(&received) {
                out.push((
                    shard.clone(),
                    user.partition_key().to_owned(),
                    user.data().to_vec(),
                    record.sequence_number().to_owned(),
                    user.sub_sequence_number(),
                ));
            }
        }
    }
    out
}

async fn shard_ranges(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> HashMap<String, HashRange> {
    list_shards(client, stream)
        .await
        .iter()
        .map(|s| {
            let r = s.hash_key_range().expect("range");
            (
                s.shard_id().to_owned(),
                HashRange::from_decimal(r.starting_hash_key(), r.ending_hash_key())
                    .expect("decimal"),
            )
        })
        .collect()
}

fn payload(i: usize) -> Vec<u8> {
    // Mixed sizes, a few past the aggregate limit so they go alone.
    let len = match i % 97 {
        0 => 60_000,
        n if n % 5 == 0 => 0,
        n => 10 + n * 37,
    };
    let mut data = format!("record-{i:06}|").into_bytes();
    data.resize(data.len().max(len), (i % 251) as u8);
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_sent_is_in_the_stream_in_its_shard() {
    let client = kinesis_client().await;
    let stream = unique_name("kpl-basic");
    create_stream(&client, &stream, 4).await;
    let producer = Producer::builder(stream.as_str())
        .client(client.clone())
        .linger(Duration::from_millis(20))
        .ordered(true)
        .build()
        .await
        .expect("producer");

    let count = 3_000;
    let mut receipts = Vec::new();
    for i in 0..count {
        let record = UserRecord::new(format!("key-{}", i % 150), payload(i));
        receipts.push(producer.send(record).await.expect("accepted"));
    }
    let mut results: Vec<RecordSuccess> = Vec::new();
    for receipt in receipts {
        results.push(receipt.await.expect("stored"));
    }
    producer.shutdown().await;

    let ranges = shard_ranges(&client, &stream).await;
    let stored = read_back(&client, &stream).await;
    assert_eq!(
        stored.len(),
        count,
        "exactly the records sent, no duplicates"
    );
    let mut seen_by_key: HashMap<String, Vec<usize>> = HashMap::new();
    for (shard, key, data, _, _) in &stored {
        let hash = UserRecord::new(key.clone(), data.clone())
            .hash_key()
            .expect("valid");
        assert!(
            ranges[shard].contains(hash),
            "{key} stored in {shard}, outside its hash range"
        );
        let index: usize = std::str::from_utf8(&data[7..13])
            .expect("utf-8")
            .parse()
            .expect("index");
        assert_eq!(*data, payload(index));
        seen_by_key.entry(key.clone()).or_default().push(index);
    }
    for (key, indexes) in &seen_by_key {
        assert!(
            indexes.windows(2).all(|w| w[0] < w[1]),
            "{key} out of order: {indexes:?}"
        );
    }
    // Each receipt names the shard, sequence and sub-sequence number it was read back at.
    let position: HashMap<(String, String, Option<u64>), usize> = stored
        .iter()
        .map(|(shard, _, data, seq, sub)| {
            let index = std::str::from_utf8(&data[7..13])
                .expect("utf-8")
                .parse()
                .expect("index");
            ((shard.clone(), seq.clone(), *sub), index)
        })
        .collect();
    for (i, result) in results.iter().enumerate() {
        let key = (
            result.shard_id.to_string(),
            result.sequence_number.to_string(),
            result.sub_sequence_number,
        );
        assert_eq!(position.get(&key), Some(&i), "receipt {i}: {result:?}");
        assert_eq!(result.attempts.len(), 1);
    }
    let metrics = producer.metrics();
    assert_eq!(metrics.user_records_put, count as u64);
    assert!(metrics.user_records_per_kinesis_record > 5.0, "{metrics:?}");
    assert_eq!(metrics.user_records_pending, 0);
}

#[tokio::test]
async fn bad_records_are_refused_with_the_record_back() {
    let client = kinesis_client().await;
    let stream = unique_name("kpl-refuse");
    create_stream(&client, &stream, 1).await;
    let producer = Producer::builder(stream.as_str())
        .client(client)
        .build()
        .await
        .expect("producer");
    match producer.send(UserRecord::new("", "x")).await {
        Err(SendError::Invalid { record, .. }) => assert_eq!(record.data, "x"),
        other => panic!("{other:?}"),
    }
    match producer
        .send(UserRecord::new("k", vec![0u8; 1024 * 1024]))
        .await
    {
        Err(SendError::Invalid { error, .. }) => {
            assert!(error.to_string().contains("1048576"), "{error}")
        }
        other => panic!("{other:?}"),
    }
    producer.shutdown().await;
    match producer.send(UserRecord::new("k", "late")).await {
        Err(SendError::ShuttingDown(record)) => assert_eq!(record.data, "late"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn try_send_reports_full_and_flush_drains() {
    let client = kinesis_client().await;
    let stream = unique_name("kpl-full");
    create_stream(&client, &stream, 1).await;
    let producer = Producer::builder(stream.as_str())
        .client(client.clone())
        .max_outstanding_records(3)
        .linger(Duration::from_secs(3600))
        .build()
        .await
        .expect("producer");
    let receipts: Vec<_> = (0..3)
        .map(|i| {
            producer
                .try_send(UserRecord::new("k", format!("r{i}")))
                .expect("room")
        })
        .collect();
    match producer.try_send(UserRecord::new("k", "r3")) {
        Err(TrySendError::Full(record)) => assert_eq!(record.data, "r3"),
        other => panic!("{other:?}"),
    }
    // The linger is an hour: only flush can send these.
    producer.flush().await.expect("flushed");
    for receipt in receipts {
        let success = receipt.await.expect("stored");
        assert_eq!(success.sub_sequence_number.map(|_| ()), Some(()));
    }
    let last = producer
        .try_send(UserRecord::new("k", "r3"))
        .expect("room again");
    producer.shutdown().await;
    last.await.expect("shutdown sent it");
    assert_eq!(read_back(&client, &stream).await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_during_production_loses_nothing_and_the_map_follows() {
    let client = kinesis_client().await;
    let stream = unique_name("kpl-split");
    create_stream(&client, &stream, 2).await;
    // Only the strays are sent again: a per-record filter then reads each record once, which
    // this test checks. (The default sends the whole aggregate again, for the Java KCL and
    // Lambda; the pipeline's unit tests cover it.)
    let producer = Producer::builder(stream.as_str())
        .client(client.clone())
        .misrouted_records(kpl::MisroutedRecords::ResendOutOfRange)
        .linger(Duration::from_millis(10))
        .shard_map_refresh_interval(Duration::from_millis(200))
        .build()
        .await
        .expect("producer");
    let shards = list_shards(&client, &stream).await;
    let parent = shards[0].clone();
    let range = parent.hash_key_range().expect("range");
    let start: u128 = range.starting_hash_key().parse().expect("decimal");
    let end: u128 = range.ending_hash_key().parse().expect("decimal");

    let mut receipts = Vec::new();
    for i in 0..4_000usize {
        if i == 1_000 {
            client
                .split_shard()
                .stream_name(&stream)
                .shard_to_split(parent.shard_id())
                .new_starting_hash_key((start + (end - start) / 2).to_string())
                .send()
                .await
                .expect("split");
        }
        receipts.push(
            producer
                .send(UserRecord::new(format!("k{}", i % 300), format!("v{i}")))
                .await
                .expect("accepted"),
        );
        if i % 500 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let mut results = Vec::new();
    for receipt in receipts {
        results.push(receipt.await.expect("stored"));
    }
    producer.shutdown().await;
    let children: Vec<String> = list_shards(&client, &stream)
        .await
        .iter()
        .filter(|s| s.parent_shard_id() == Some(parent.shard_id()))
        .map(|s| s.shard_id().to_owned())
        .collect();
    assert_eq!(children.len(), 2);
    assert!(
        results
            .iter()
            .any(|r| children.iter().any(|c| **c == *r.shard_id)),
        "the shard map followed the split"
    );
    let ranges = shard_ranges(&client, &stream).await;
    // Every receipt names a shard that owns the record's hash key.
    for (i, result) in results.iter().enumerate() {
        let hash = aggregation_proto::partition_key_hash(&format!("k{}", i % 300));
        assert!(
            ranges[&*result.shard_id].contains(hash),
            "record {i} reported in {}",
            result.shard_id
        );
    }
    // Every record is in a shard that owns its hash key, which is where a consumer filtering
    // per record reads it; stray copies in a sibling (an aggregate built before the split) are
    // what that filter drops.
    let stored = read_back(&client, &stream).await;
    let mut placed = std::collections::HashSet::new();
    let mut strays = 0;
    for (shard, key, data, ..) in &stored {
        if ranges[shard].contains(aggregation_proto::partition_key_hash(key)) {
            assert!(
                placed.insert(data.clone()),
                "{key} stored twice where it belongs"
            );
        } else {
            strays += 1;
        }
    }
    assert_eq!(placed.len(), 4_000, "nothing lost");
    let misrouted = results
        .iter()
        .filter(|r| {
            r.attempts
                .iter()
                .any(|a| a.error_code.as_deref() == Some("Misrouted"))
        })
        .count();
    assert_eq!(strays, misrouted, "each stray copy was sent again");
    println!("{strays} of 4000 records were stored in a sibling after the split and sent again");
}
