use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{ShardIteratorType, StartingPosition, SubscribeToShardEventStream};
#[tokio::main]
async fn main() {
    let client = integration_tests::kinesis_client().await;
    let stream = integration_tests::unique_name("probe");
    integration_tests::create_stream(&client, &stream, 1).await;
    let desc = client
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await
        .unwrap();
    let arn = desc.stream_description_summary.unwrap().stream_arn;
    let t = std::time::Instant::now();
    let reg = client
        .register_stream_consumer()
        .stream_arn(&arn)
        .consumer_name("c1")
        .send()
        .await
        .unwrap();
    let c = reg.consumer.unwrap();
    println!(
        "registered {:?} {:?} {:?}",
        c.consumer_arn,
        c.consumer_status,
        t.elapsed()
    );
    let reg2 = client
        .register_stream_consumer()
        .stream_arn(&arn)
        .consumer_name("c1")
        .send()
        .await;
    println!(
        "register again: {:?}",
        reg2.map_err(|e| format!("{}", aws_sdk_kinesis::error::DisplayErrorContext(e)))
    );
    loop {
        let d = client
            .describe_stream_consumer()
            .stream_arn(&arn)
            .consumer_name("c1")
            .send()
            .await
            .unwrap();
        let s = d.consumer_description.unwrap();
        println!("status {:?} {:?}", s.consumer_status, t.elapsed());
        if s.consumer_status == aws_sdk_kinesis::types::ConsumerStatus::Active {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for i in 0..5 {
        client
            .put_record()
            .stream_name(&stream)
            .partition_key("k")
            .data(Blob::new(format!("r{i}").into_bytes()))
            .send()
            .await
            .unwrap();
    }
    let shard = integration_tests::list_shards(&client, &stream).await[0]
        .shard_id()
        .to_owned();
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
    println!("subscribed {:?}", t.elapsed());
    let mut n = 0;
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(8), out.event_stream.recv()).await
        {
            Ok(Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(e)))) => {
                println!(
                    "{:?} event: {} records cont={} behind={} children={:?} first={:?}",
                    t.elapsed(),
                    e.records.len(),
                    e.continuation_sequence_number,
                    e.millis_behind_latest,
                    e.child_shards,
                    e.records.first().map(|r| r.sequence_number.clone())
                );
                n += 1;
                if n == 4 {
                    for i in 5..7 {
                        client
                            .put_record()
                            .stream_name(&stream)
                            .partition_key("k")
                            .data(Blob::new(format!("r{i}").into_bytes()))
                            .send()
                            .await
                            .unwrap();
                    }
                }
                if n > 8 {
                    break;
                }
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
    // second subscription while first open
    let out2 = client
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
    println!(
        "second subscribe: {:?}",
        out2.map(|_| ())
            .map_err(|e| format!("{}", aws_sdk_kinesis::error::DisplayErrorContext(e)))
    );
}
