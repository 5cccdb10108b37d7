//! Enhanced fan-out against polling, on the same kinesis-mock stream in the same run: user
//! records per second and client CPU per user record of each, reading the same records from
//! TRIM_HORIZON (the consumer libraries' own work: calls, decoding, deaggregation, filtering).
//!
//! ```text
//! scripts/emulators.sh start && eval "$(scripts/emulators.sh env)"
//! cargo run --release -p kinesis-kcl --example fan_out_bench -- [AGGREGATED_RECORDS] [PLAIN_RECORDS] [ROUNDS]
//! ```
//!
//! Defaults: 200,000 user records of 100 bytes KPL-aggregated and 10,000 plain ones, each set
//! in its own 2-shard stream, 3 rounds of each mode, alternating. CPU is the run time of this
//! process's threads (`/proc/self/task/*/schedstat`, nanoseconds; the emulator runs in its own
//! process and is not counted). Both modes are paced by kinesis-mock,
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
    let aggregated: usize = args.next().map_or(Ok(200_000), |a| a.parse())?;
    let plain: usize = args.next().map_or(Ok(10_000), |a| a.parse())?;
    let rounds: usize = args.next().map_or(Ok(3), |a| a.parse())?;
    let client = integration_tests::kinesis_client().await;
    println!(
        "| workload | mode | round | user records | Kinesis records | wall | user records/s | client CPU | CPU per user record |"
    );
    println!("|---|---|---|--:|--:|--:|--:|--:|--:|");
    for (workload, records, aggregation) in [
        ("KPL aggregates", aggregated, true),
        ("plain records", plain, false),
    ] {
        if records == 0 {
            continue;
        }
        let (stream, shard_ids) = prepare(&client, records, aggregation).await?;
        let fan_out_config =
            FanOutConfig::default().registration_poll_interval(Duration::from_millis(50));
        let consumer =
            register_stream_consumer(&client, &stream.as_str().into(), "bench", &fan_out_config)
                .await?;
        for round in 1..=rounds {
            for mode in ["polling", "fan-out"] {
                let cpu_before = cpu_seconds();
                let wall = Instant::now();
                let mut readers = tokio::task::JoinSet::new();
                for shard_id in &shard_ids {
                    let (client, stream, shard_id) =
                        (client.clone(), stream.clone(), shard_id.clone());
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
                    "| {workload} | {mode} | {round} | {users} | {kinesis} | {:.2} s | {:.0} | {:.1} ms | {:.2} µs |",
                    wall.as_secs_f64(),
                    users as f64 / wall.as_secs_f64(),
                    cpu * 1e3,
                    cpu * 1e6 / users.max(1) as f64,
                );
                // The emulator keeps a closed subscription "active" for a moment: let it go
                // before the next round subscribes again (the source would back off anyway).
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        integration_tests::delete_stream(&client, &stream).await;
    }
    Ok(())
}

/// A 2-shard stream holding `records` user records of 100 bytes; returns it and its shards.
async fn prepare(
    client: &aws_sdk_kinesis::Client,
    records: usize,
    aggregation: bool,
) -> Result<(String, Vec<String>), Box<dyn std::error::Error>> {
    let stream = integration_tests::unique_name("fan-out-bench");
    integration_tests::create_stream(client, &stream, 2).await;
    let started = Instant::now();
    let producer = Producer::builder(stream.as_str())
        .client(client.clone())
        .aggregation(aggregation)
        .build()
        .await?;
    let mut receipts = Vec::with_capacity(records);
    for i in 0..records {
        let record = UserRecord::new(format!("key-{}", i % 1_000), format!("{i:0>100}"));
        receipts.push(producer.send(record).await?);
    }
    for receipt in receipts {
        receipt.await?;
    }
    producer.shutdown().await;
    eprintln!(
        "{stream}: {records} user records of 100 B (aggregation {aggregation}) produced in {:.1?}",
        started.elapsed()
    );
    let shards = integration_tests::list_shards(client, &stream)
        .await
        .iter()
        .map(|shard| shard.shard_id().to_owned())
        .collect();
    Ok((stream, shards))
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

/// CPU seconds spent by this process's threads (the sum of `/proc/self/task/*/schedstat`'s
/// run time, in nanoseconds; the runtime's threads live for the whole run).
fn cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let nanos: u64 = tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    nanos as f64 / 1e9
}
