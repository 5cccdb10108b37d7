//! A Lambda function's cold start with the producer: the time from `Producer::builder()` to the
//! first record acknowledged (sent, flushed as a handler does before returning, and stored),
//! with the shard listing in `build` (the default) and without it
//! ([`list_shards_at_build(false)`](kpl::ProducerBuilder::list_shards_at_build)). One
//! measurement per process, on a current-thread runtime, so that the thread count shows
//! whether anything runs outside the runtime.
//!
//! ```text
//! cargo run --release -p kpl --example cold_start -- --endpoint URL --stream NAME [--lazy]
//! cargo run --release -p kpl --example cold_start -- --endpoint URL --stream NAME --create 4
//! ```
//!
//! Prints one line of `key=value` figures (milliseconds). `scripts/bench-lambda.sh` runs it
//! against kinesis-mock and `fault-proxy --sink` and takes the medians.

use std::time::{Duration, Instant};

use aws_sdk_kinesis::config::BehaviorVersion;
use kpl::{Producer, UserRecord};

struct Args {
    endpoint: String,
    stream: String,
    lazy: bool,
    create: Option<i32>,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        endpoint: std::env::var("AWS_ENDPOINT_URL_KINESIS").unwrap_or_default(),
        stream: String::new(),
        lazy: false,
        create: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--endpoint" => args.endpoint = it.next().ok_or("--endpoint URL")?,
            "--stream" => args.stream = it.next().ok_or("--stream NAME")?,
            "--lazy" => args.lazy = true,
            "--create" => {
                let shards = it.next().ok_or("--create SHARDS")?;
                args.create = Some(shards.parse().map_err(|_| "--create takes a shard count")?);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.endpoint.is_empty() || args.stream.is_empty() {
        return Err(
            "usage: cold_start --endpoint URL --stream NAME [--lazy | --create SHARDS]".into(),
        );
    }
    Ok(args)
}

fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn ms(duration: Duration) -> String {
    format!("{:.1}", duration.as_secs_f64() * 1000.0)
}

async fn create(client: &aws_sdk_kinesis::Client, stream: &str, shards: i32) -> Result<(), String> {
    client
        .create_stream()
        .stream_name(stream)
        .shard_count(shards)
        .send()
        .await
        .map_err(|e| format!("CreateStream: {e:?}"))?;
    // Poll for the state: kinesis-mock takes a configurable while to make a stream ACTIVE.
    for _ in 0..600 {
        let summary = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .map_err(|e| format!("DescribeStreamSummary: {e:?}"))?;
        let active = summary
            .stream_description_summary()
            .is_some_and(|s| s.stream_status().as_str() == "ACTIVE");
        if active {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("stream {stream} did not become ACTIVE in 30 s"))
}

fn main() -> Result<(), String> {
    let start = Instant::now();
    let args = args()?;
    let threads_at_start = threads();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let config = aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(&args.endpoint)
            .load()
            .await;
        let client = aws_sdk_kinesis::Client::new(&config);
        if let Some(shards) = args.create {
            return create(&client, &args.stream, shards).await;
        }
        let init = start.elapsed();

        let before_build = Instant::now();
        let producer = Producer::builder(args.stream.as_str())
            .client(client)
            .list_shards_at_build(!args.lazy)
            .build()
            .await
            .map_err(|e| format!("build: {e} ({e:?})"))?;
        let build = before_build.elapsed();
        let threads_after_build = threads();
        let receipt = producer
            .send(UserRecord::new("cold-start", "the first record"))
            .await
            .map_err(|e| format!("send: {e}"))?;
        let flush = producer
            .flush_timeout(Duration::from_secs(5))
            .await
            .map_err(|e| format!("flush: {e}"))?;
        let stored = receipt.await.map_err(|e| format!("record failed: {e:?}"))?;
        let first_ack = before_build.elapsed();
        let threads_after_ack = threads();
        producer.shutdown().await;
        println!(
            "mode={} init_ms={} build_ms={} first_ack_ms={} stored={} shard={} threads_start={} threads_after_build={} threads_after_ack={}",
            if args.lazy { "lazy" } else { "eager" },
            ms(init),
            ms(build),
            ms(first_ack),
            flush.stored,
            stored.shard_id,
            threads_at_start,
            threads_after_build,
            threads_after_ack,
        );
        Ok(())
    })
}
