//! Smoke test: the emulators, the SDK clients and our aggregation format work together.
//!
//! Needs the emulators (`./scripts/emulators.sh start`, or run everything with
//! `./scripts/test.sh`); fails loudly without them.

use std::time::SystemTime;

use aggregation_proto::{
    Aggregator, AggregatorConfig, DeaggregatedRecord, KinesisRecord, ReceivedRecord, UserRecord,
    deaggregate,
};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use bytes::Bytes;
use integration_tests::{
    create_stream, create_table, delete_stream, delete_table, dynamodb_client, kinesis_client,
    read_all_records, unique_name,
};

#[tokio::test]
async fn aggregate_round_trip_and_conditional_write() {
    let kinesis = kinesis_client().await;
    let dynamodb = dynamodb_client().await;
    let stream = unique_name("smoke");
    let table = unique_name("smoke-leases");
    create_stream(&kinesis, &stream, 1).await;
    create_table(&dynamodb, &table).await;

    // --- Kinesis: one aggregate of three user records, written and read back. ---
    let users = [
        ("pk-1", Bytes::from_static(b"hello")),
        ("pk-2", Bytes::from_static(b"world")),
        ("pk-1", Bytes::from(vec![0u8, 1, 2, 255])),
    ];
    let mut aggregator = Aggregator::new(AggregatorConfig::default());
    for (key, data) in &users {
        aggregator
            .try_add(&UserRecord::new(*key, data.clone()))
            .unwrap_or_else(|err| panic!("try_add({key}) failed: {err:?}"));
    }
    let aggregate: KinesisRecord = aggregator
        .finish()
        .expect("an aggregator holding 3 records must produce a Kinesis record");

    let entry = PutRecordsRequestEntry::builder()
        .partition_key(aggregate.partition_key.clone())
        .set_explicit_hash_key(aggregate.explicit_hash_key.clone())
        .data(Blob::new(aggregate.data.to_vec()))
        .build()
        .expect("complete PutRecords entry");
    let put = kinesis
        .put_records()
        .stream_name(&stream)
        .records(entry)
        .send()
        .await
        .expect("PutRecords");
    assert_eq!(put.failed_record_count(), Some(0), "{put:?}");
    let sequence_number = put.records()[0]
        .sequence_number()
        .expect("a successful entry has a sequence number")
        .to_owned();

    let records = read_all_records(&kinesis, &stream).await;
    assert_eq!(records.len(), 1, "one Kinesis record expected: {records:?}");
    let record = &records[0];
    assert_eq!(record.sequence_number(), sequence_number);
    assert_eq!(record.partition_key(), aggregate.partition_key);
    assert_eq!(record.data().as_ref(), aggregate.data.as_ref());

    let arrival = record
        .approximate_arrival_timestamp()
        .map(|t| SystemTime::try_from(*t).expect("arrival time within SystemTime's range"));
    let mut received = ReceivedRecord::new(
        record.partition_key().to_owned(),
        Bytes::copy_from_slice(record.data().as_ref()),
    )
    .with_sequence_number(record.sequence_number().to_owned());
    if let Some(arrival) = arrival {
        received = received.with_arrival_time(arrival);
    }
    let deaggregated: Vec<DeaggregatedRecord> = deaggregate(&received);
    assert_eq!(deaggregated.len(), users.len(), "{deaggregated:?}");
    for (i, (user, (key, data))) in deaggregated.iter().zip(&users).enumerate() {
        assert_eq!(user.partition_key(), *key, "record {i}");
        assert_eq!(user.data(), data.as_ref(), "record {i}");
        assert_eq!(user.explicit_hash_key(), None, "record {i}");
        assert!(user.is_aggregated(), "record {i}");
        assert_eq!(
            user.sequence_number(),
            Some(sequence_number.as_str()),
            "record {i}"
        );
        assert_eq!(user.sub_sequence_number(), Some(i as u64), "record {i}");
        assert_eq!(user.approximate_arrival_timestamp(), arrival, "record {i}");
    }

    // --- DynamoDB: a conditional create succeeds once, then fails the condition. ---
    let put_if_absent = || {
        dynamodb
            .put_item()
            .table_name(&table)
            .item("leaseKey", AttributeValue::S("shardId-000000000000".into()))
            .item("leaseCounter", AttributeValue::N("1".into()))
            .condition_expression("attribute_not_exists(leaseKey)")
            .send()
    };
    put_if_absent().await.expect("first conditional PutItem");
    let err = put_if_absent()
        .await
        .expect_err("second conditional PutItem must fail");
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_conditional_check_failed_exception()),
        "expected ConditionalCheckFailedException, got {err:?}"
    );

    delete_stream(&kinesis, &stream).await;
    delete_table(&dynamodb, &table).await;
}

/// The producer lists open shards only (`AT_LATEST`): after a split, the parent is not in the
/// listing, the children are; the unfiltered listing still has all three.
#[tokio::test]
async fn open_shard_listing_leaves_closed_shards_out() {
    use kinesis_common::{ShardListing, StreamId, list_shards};
    let kinesis = kinesis_client().await;
    let stream = unique_name("smoke-open");
    create_stream(&kinesis, &stream, 1).await;
    let all = integration_tests::list_shards(&kinesis, &stream).await;
    integration_tests::split_in_half(&kinesis, &stream, &all[0]).await;
    let id = StreamId::from(stream.as_str());
    let open = list_shards(&kinesis, &id, &ShardListing::Open)
        .await
        .expect("ListShards AT_LATEST");
    let every = list_shards(&kinesis, &id, &ShardListing::All)
        .await
        .expect("ListShards");
    assert_eq!(every.len(), 3, "{every:?}");
    assert_eq!(open.len(), 2, "{open:?}");
    assert!(open.iter().all(|s| s.open && s.parent_shard_id.is_some()));
    delete_stream(&kinesis, &stream).await;
}
