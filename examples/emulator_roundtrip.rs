//! Produce aggregated records to Kinesis and consume them back: PutRecords of aggregates built
//! by `aggregation-proto`, GetRecords from every shard, deaggregation, and a check that every
//! user record came back in its shard and in order.
//!
//! Runs against whatever `AWS_ENDPOINT_URL_KINESIS` points at (the demo script starts
//! kinesis-mock and sets it), with the standard AWS credential chain and region.
//!
//! `scripts/demo.sh` (or, with an emulator already running:
//! `cargo run -p kinesis-examples --example emulator_roundtrip`)

use std::collections::HashMap;
use std::time::Duration;

use aggregation_proto::{
    AddError, Aggregator, AggregatorConfig, HashRange, KinesisRecord, ReceivedRecord, UserRecord,
    deaggregate,
};
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType, StreamStatus};

const USER_RECORDS: usize = 5_000;
const SHARDS: i32 = 4;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = aws_config::load_from_env().await;
    let client = Client::new(&config);
    let stream = format!("demo-{}", uuid::Uuid::new_v4().simple());

    client
        .create_stream()
        .stream_name(&stream)
        .shard_count(SHARDS)
        .send()
        .await?;
    while client
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await?
        .stream_description_summary()
        .map(|s| s.stream_status().clone())
        != Some(StreamStatus::Active)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let shards = client
        .list_shards()
        .stream_name(&stream)
        .send()
        .await?
        .shards()
        .to_vec();
    println!("stream {stream}: {} shards", shards.len());

    // One aggregator per shard, so no aggregate straddles shards.
    let ranges: Vec<(String, HashRange)> = shards
        .iter()
        .map(|s| {
            let range = s.hash_key_range().ok_or("shard without a hash key range")?;
            Ok::<_, Box<dyn std::error::Error>>((
                s.shard_id().to_owned(),
                HashRange::from_decimal(range.starting_hash_key(), range.ending_hash_key())?,
            ))
        })
        .collect::<Result<_, _>>()?;
    let mut aggregators: Vec<Aggregator> = ranges
        .iter()
        .map(|_| Aggregator::new(AggregatorConfig::default()))
        .collect();
    let mut ready: Vec<KinesisRecord> = Vec::new();
    let mut sent: HashMap<String, Vec<String>> = HashMap::new();
    for i in 0..USER_RECORDS {
        let key = format!("sensor-{}", i % 97);
        let record = UserRecord::new(key.clone(), format!("reading {i} of {key}"));
        let hash = record.hash_key()?;
        let shard = ranges
            .iter()
            .position(|(_, r)| r.contains(hash))
            .ok_or("no shard owns the key")?;
        let aggregator = &mut aggregators[shard];
        match aggregator.try_add(&record) {
            Ok(()) => {}
            Err(AddError::Full) => {
                ready.extend(aggregator.finish());
                aggregator.try_add(&record)?;
            }
            Err(invalid) => return Err(invalid.into()),
        }
        sent.entry(ranges[shard].0.clone())
            .or_default()
            .push(format!("reading {i} of {key}"));
    }
    ready.extend(aggregators.iter_mut().filter_map(Aggregator::finish));

    // Kinesis records in PutRecords calls of at most 500 entries.
    for batch in ready.chunks(500) {
        let entries = batch
            .iter()
            .map(|r| {
                PutRecordsRequestEntry::builder()
                    .partition_key(&r.partition_key)
                    .set_explicit_hash_key(r.explicit_hash_key.clone())
                    .data(Blob::new(r.data.to_vec()))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let response = client
            .put_records()
            .stream_name(&stream)
            .set_records(Some(entries))
            .send()
            .await?;
        if response.failed_record_count().unwrap_or(0) > 0 {
            return Err("some records failed; this demo does not retry".into());
        }
    }
    println!(
        "produced {USER_RECORDS} user records as {} Kinesis records",
        ready.len()
    );

    let mut received_total = 0;
    for (shard_id, _) in &ranges {
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(&stream)
            .shard_id(shard_id)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await?
            .shard_iterator()
            .map(str::to_owned);
        let mut received = Vec::new();
        while let Some(current) = iterator {
            let page = client.get_records().shard_iterator(current).send().await?;
            for record in page.records() {
                let kinesis =
                    ReceivedRecord::new(record.partition_key(), record.data().as_ref().to_vec())
                        .with_sequence_number(record.sequence_number());
                received.extend(
                    deaggregate(&kinesis)
                        .into_iter()
                        .map(|u| String::from_utf8_lossy(u.data()).into_owned()),
                );
            }
            if page.records().is_empty() && page.millis_behind_latest() == Some(0) {
                break;
            }
            iterator = page.next_shard_iterator().map(str::to_owned);
        }
        let expected = sent.remove(shard_id).unwrap_or_default();
        if received != expected {
            return Err(format!(
                "{shard_id}: got {} records, expected {}",
                received.len(),
                expected.len()
            )
            .into());
        }
        println!(
            "{shard_id}: consumed {} user records, in order",
            received.len()
        );
        received_total += received.len();
    }
    client.delete_stream().stream_name(&stream).send().await?;
    println!(
        "consumed {received_total} of {USER_RECORDS} user records: all back, each in its shard"
    );
    Ok(())
}
