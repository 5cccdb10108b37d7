//! `list_shards_at_build(false)` against kinesis-mock: `build` calls nothing, the records sent
//! before the pipeline's first listing arrives are stored aggregated in the shards that own
//! them, and each receipt names where a consumer reads it.

use std::collections::HashMap;
use std::time::Duration;

use aggregation_proto::{HashRange, ReceivedRecord, deaggregate};
use integration_tests::{
    create_stream, kinesis_client, list_shards, read_records_by_shard, unique_name,
};
use kpl::{Producer, UserRecord};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_sent_before_the_first_map_land_in_their_shards() {
    let client = kinesis_client().await;
    let stream = unique_name("kpl-lazy");
    create_stream(&client, &stream, 4).await;
    let producer = Producer::builder(stream.as_str())
        .client(client.clone())
        .list_shards_at_build(false)
        .build()
        .await
        .expect("producer");
    let count = 500;
    let mut receipts = Vec::new();
    for i in 0..count {
        let record = UserRecord::new(format!("key-{}", i % 40), format!("record-{i}"));
        receipts.push(producer.send(record).await.expect("accepted"));
    }
    producer
        .flush_timeout(Duration::from_secs(30))
        .await
        .expect("flushed");
    let mut stored_at = HashMap::new();
    for (i, receipt) in receipts.into_iter().enumerate() {
        let stored = receipt.await.expect("stored");
        stored_at.insert(
            format!("record-{i}"),
            (
                stored.shard_id.to_string(),
                stored.sequence_number.to_string(),
                stored.sub_sequence_number,
            ),
        );
    }
    producer.shutdown().await;

    let ranges: HashMap<String, HashRange> = list_shards(&client, &stream)
        .await
        .iter()
        .map(|s| {
            let r = s.hash_key_range().expect("range");
            let range = HashRange::from_decimal(r.starting_hash_key(), r.ending_hash_key());
            (s.shard_id().to_owned(), range.expect("decimal"))
        })
        .collect();
    let mut read = 0;
    let mut aggregated = 0;
    for (shard, records) in read_records_by_shard(&client, &stream).await {
        for record in records {
            let received =
                ReceivedRecord::new(record.partition_key(), record.data().as_ref().to_vec())
                    .with_sequence_number(record.sequence_number());
            for user in deaggregate(&received) {
                read += 1;
                aggregated += usize::from(user.is_aggregated());
                let hash = UserRecord::new(user.partition_key(), user.data().to_vec())
                    .hash_key()
                    .expect("valid key");
                assert!(ranges[&shard].contains(hash), "{user:?} outside {shard}");
                let data = String::from_utf8(user.data().to_vec()).expect("utf-8");
                let place = (
                    shard.clone(),
                    record.sequence_number().to_owned(),
                    user.sub_sequence_number(),
                );
                assert_eq!(stored_at.get(&data), Some(&place), "{data}'s receipt");
            }
        }
    }
    assert_eq!(read, count, "every record once");
    assert!(
        aggregated > count / 2,
        "aggregated: {aggregated} of {count}"
    );
}
