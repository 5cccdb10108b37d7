//! Enhanced fan-out against polling, on the same kinesis-mock stream in the same run: user
//! records per second and client CPU per user record of each, reading the same records from
//! TRIM_HORIZON (the consumer libraries' own work: calls, decoding, deaggregation, filtering).
//!
//! ```text
//! scripts/emulators.sh start && eval "$(scripts/emulators.sh env)"
//! cargo run --release -p kcl --example fan_out_bench -- [USER_RECORDS] [SHARDS] [ROUNDS]
//! ```
//!
//! Defaults: 40,000 user records of 100 bytes (KPL-aggregated), 2 shards, 2 rounds of each
//! mode, alternating. CPU is this process's user + system time from `/proc/self/stat` (the
//! emulator runs in its own process and is not counted). Both modes are paced by kinesis-mock,
//! not by the client: it answers GetRecords at once but sends a subscription's events about
//! once a second, so records/s says what this emulator allows and CPU per record is the
//! comparison that carries over.

use std::time::{Duration, Instant};

use kcl::retrieval::{
    FanOutConfig, FanOutSource, PollingConfig, PollingSource, RecordSource, StartingPosition,
    register_stream_consumer,
};
use kpl::{Producer, UserRecord};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let records: usize = args.next().map_or(Ok(40_000), |a| a.parse())?;
    let shards: i32 = args.next().map_or(Ok(2), |a| a.parse())?;
    let rounds: usize = args.next().map_or(Ok(2), |a| a.parse())?;

    let client = integration_tests::kinesis_client().await;
    let stream = integration_tests::unique_name("fan-out-bench");
    integration_tests::create_stream(&client, &stream, shards).await;
    let started = Instant::now();
    let producer = Producer::builder(stream.as_str())
        .client(client.clone())
        .build()
        .await?;
    let mut receipts = Vec::with_capacity(records);
    for i in 0..records {
        let data = format!("{i:0>100}");
        receipts.push(
            producer
                .send(UserRecord::new(format!("key-{}", i % 1_000), data))
                .await?,
        );
    }
    for receipt in receipts {
        receipt.await?;
    }
    producer.shutdown().await;
    println!(
        "stream {stream}: {records} user records of 100 B in {shards} shards, produced in {:.1?}",
        started.elapsed()
    );
    let shard_ids: Vec<String> = integration_tests::list_shards(&client, &stream)
        .await
        .iter()
        .map(|shard| shard.shard_id().to_owned())
        .collect();
    let fan_out_config =
        FanOutConfig::default().registration_poll_interval(Duration::from_millis(50));
    let consumer =
        register_stream_consumer(&client, &stream.as_str().into(), "bench", &fan_out_config)
            .await?;

    println!(
        "| mode | round | user records | Kinesis records | wall | records/s | CPU | CPU per record |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for round in 1..=rounds {
        for mode in ["polling", "fan-out"] {
            let cpu_before = cpu_seconds();
            let wall = Instant::now();
            let mut readers = tokio::task::JoinSet::new();
            for shard_id in &shard_ids {
                let (client, stream, shard_id) = (client.clone(), stream.clone(), shard_id.clone());
                let consumer_arn = consumer.consumer_arn.clone();
                let fan_out_config = fan_out_config.clone();
                readers.spawn(async move {
                    if mode == "polling" {
                        let config = PollingConfig::default()
                            .idle_time_between_reads(Duration::from_millis(50))
                            .min_time_between_calls(Duration::ZERO);
                        let source = PollingSource::new(
                            client,
                            stream.into(),
                            shard_id,
                            None,
                            StartingPosition::TrimHorizon,
                            config,
                        );
                        drain(source).await
                    } else {
                        let source = FanOutSource::new(
                            client,
                            stream.into(),
                            consumer_arn,
                            shard_id,
                            None,
                            StartingPosition::TrimHorizon,
                            fan_out_config,
                        );
                        drain(source).await
                    }
                });
            }
            let (mut users, mut kinesis) = (0, 0);
            while let Some(result) = readers.join_next().await {
                let (u, k) = result??;
                users += u;
                kinesis += k;
            }
            let wall = wall.elapsed();
            let cpu = cpu_seconds() - cpu_before;
            println!(
                "| {mode} | {round} | {users} | {kinesis} | {:.2} s | {:.0} | {:.3} s | {:.2} µs |",
                wall.as_secs_f64(),
                users as f64 / wall.as_secs_f64(),
                cpu,
                cpu * 1e6 / users.max(1) as f64,
            );
        }
    }
    integration_tests::delete_stream(&client, &stream).await;
    Ok(())
}

/// Reads a shard until a batch comes back empty and caught up (everything produced read).
async fn drain(
    mut source: impl RecordSource,
) -> Result<(usize, usize), kcl::retrieval::RetrievalError> {
    let (mut users, mut kinesis) = (0, 0);
    loop {
        let batch = source.next_batch().await?;
        users += batch.records.len();
        kinesis += batch.kinesis_records;
        let caught_up =
            batch.records.is_empty() && batch.millis_behind_latest.is_none_or(|ms| ms <= 0);
        if (caught_up && users > 0) || batch.shard_end.is_some() {
            return Ok((users, kinesis));
        }
    }
}

/// This process's user + system CPU seconds (`/proc/self/stat`, fields 14 and 15, in clock
/// ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    (ticks(11) + ticks(12)) / 100.0
}
