use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{ShardIteratorType, StartingPosition, SubscribeToShardEventStream};
#[tokio::main]
async fn main() {
    let client = integration_tests::kinesis_client().await;
    let stream = integration_tests::unique_name("probe");
    integration_tests::create_stream(&client, &stream, 1).await;
    let arn = client
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await
        .unwrap()
        .stream_description_summary
        .unwrap()
        .stream_arn;
    let c = client
        .register_stream_consumer()
        .stream_arn(&arn)
        .consumer_name("c1")
        .send()
        .await
        .unwrap()
        .consumer
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for i in 0..3 {
        client
            .put_record()
            .stream_name(&stream)
            .partition_key(format!("k{i}"))
            .data(Blob::new(format!("r{i}").into_bytes()))
            .send()
            .await
            .unwrap();
    }
    let shard = integration_tests::list_shards(&client, &stream).await[0]
        .shard_id()
        .to_owned();
    client
        .split_shard()
        .stream_name(&stream)
        .shard_to_split(&shard)
        .new_starting_hash_key((1u128 << 127).to_string())
        .send()
        .await
        .unwrap();
    integration_tests::wait_for_stream_active(&client, &stream).await;
    let it = client
        .get_shard_iterator()
        .stream_name(&stream)
        .shard_id(&shard)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    let gr = client
        .get_records()
        .shard_iterator(&it)
        .send()
        .await
        .unwrap();
    println!(
        "polling: {} records next={:?} children={:?}",
        gr.records.len(),
        gr.next_shard_iterator.is_some(),
        gr.child_shards.map(|c| c.len())
    );
    let t = std::time::Instant::now();
    let out = client
        .subscribe_to_shard()
        .consumer_arn(&c.consumer_arn)
        .shard_id(&shard)
        .starting_position(
            StartingPosition::builder()
                .r#type(ShardIteratorType::TrimHorizon)
                .build()
                .unwrap(),
        )
        .send()
        .await;
    let mut out = match out {
        Ok(o) => o,
        Err(e) => {
            println!(
                "subscribe err {}",
                aws_sdk_kinesis::error::DisplayErrorContext(e)
            );
            return;
        }
    };
    for _ in 0..5 {
        match tokio::time::timeout(std::time::Duration::from_secs(8), out.event_stream.recv()).await
        {
            Ok(Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(e)))) => {
                println!(
                    "{:?} event: {} records cont={:?} behind={} children={:?}",
                    t.elapsed(),
                    e.records.len(),
                    e.continuation_sequence_number,
                    e.millis_behind_latest,
                    e.child_shards.map(|c| c.len())
                );
            }
            Ok(Ok(Some(other))) => println!("other {other:?}"),
            Ok(Ok(None)) => {
                println!("stream ended {:?}", t.elapsed());
                break;
            }
            Ok(Err(e)) => {
                println!(
                    "recv err {}",
                    aws_sdk_kinesis::error::DisplayErrorContext(e)
                );
                break;
            }
            Err(_) => {
                println!("timeout");
                break;
            }
        }
    }
}
