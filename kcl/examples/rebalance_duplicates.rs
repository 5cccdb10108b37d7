//! Records printed twice when two `kinesis-cat consume` workers start together on a stream
//! that already holds records (the second takes half the leases while the first is reading
//! them from TRIM_HORIZON), against kinesis-mock and DynamoDB Local
//! (`scripts/emulators.sh start`).
//!
//! Give it a `kinesis-cat` binary, so an older build can be measured the same way:
//!
//! ```text
//! cargo build --release -p kinesis-cat
//! cargo run --release -p kinesis-kcl --example rebalance_duplicates -- --cat target/release/kinesis-cat
//!     [--runs 5] [--records 3000] [--shards 4] [--idle-exit 10]
//! ```
//!
//! Both workers' outputs are read as they come. Prints one line per run and a summary.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use integration_tests::{
    DYNAMODB_ENDPOINT_VAR, KINESIS_ENDPOINT_VAR, create_stream, delete_stream, delete_table,
    dynamodb_client, endpoint_url, kinesis_client, unique_name,
};
use kpl::{Producer, UserRecord};

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Options {
    cat: String,
    runs: usize,
    records: usize,
    shards: i32,
    idle_exit: String,
}

fn options() -> Result<Options, Error> {
    let mut options = Options {
        cat: String::new(),
        runs: 5,
        records: 3_000,
        shards: 4,
        idle_exit: "10".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--cat" => options.cat = value,
            "--runs" => options.runs = value.parse()?,
            "--records" => options.records = value.parse()?,
            "--shards" => options.shards = value.parse()?,
            "--idle-exit" => options.idle_exit = value,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if options.cat.is_empty() {
        return Err("--cat PATH (a kinesis-cat binary) is required".into());
    }
    Ok(options)
}

fn worker(
    options: &Options,
    stream: &str,
    application: &str,
) -> Result<std::process::Child, Error> {
    Ok(Command::new(&options.cat)
        .args([
            "consume",
            stream,
            "--application",
            application,
            "--from",
            "trim-horizon",
            "--idle-exit",
            &options.idle_exit,
        ])
        .env(KINESIS_ENDPOINT_VAR, endpoint_url(KINESIS_ENDPOINT_VAR))
        .env(DYNAMODB_ENDPOINT_VAR, endpoint_url(DYNAMODB_ENDPOINT_VAR))
        .env("AWS_REGION", integration_tests::REGION)
        .env("AWS_ACCESS_KEY_ID", integration_tests::ACCESS_KEY_ID)
        .env(
            "AWS_SECRET_ACCESS_KEY",
            integration_tests::SECRET_ACCESS_KEY,
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?)
}

/// One run: (records printed twice, records never printed, seconds).
async fn run_once(options: &Options) -> Result<(usize, usize, f64), Error> {
    let kinesis = kinesis_client().await;
    let stream = unique_name("rebalance-dups");
    let application = unique_name("rebalance-dups-app");
    create_stream(&kinesis, &stream, options.shards).await;
    let producer = Producer::builder(stream.as_str())
        .client(kinesis.clone())
        .build()
        .await?;
    let mut receipts = Vec::new();
    for i in 0..options.records {
        receipts.push(
            producer
                .send(UserRecord::new(
                    format!("key-{}", i % 97),
                    format!("record {i}"),
                ))
                .await?,
        );
    }
    for receipt in receipts {
        receipt.await?;
    }
    producer.shutdown().await;
    let started = Instant::now();
    let mut children = [
        worker(options, &stream, &application)?,
        worker(options, &stream, &application)?,
    ];
    let readers: Vec<_> = children
        .iter_mut()
        .filter_map(|child| child.stdout.take())
        .map(|stdout| {
            std::thread::spawn(move || {
                BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                    .collect::<Vec<String>>()
            })
        })
        .collect();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for reader in readers {
        for line in reader.join().map_err(|_| "reader panicked")? {
            *counts.entry(line).or_default() += 1;
        }
    }
    for child in &mut children {
        child.wait()?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let twice = counts.values().map(|n| n.saturating_sub(1)).sum();
    let missing = options.records.saturating_sub(counts.len());
    delete_stream(&kinesis, &stream).await;
    delete_table(&dynamodb_client().await, &application).await;
    Ok((twice, missing, seconds))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let options = options()?;
    let mut duplicates = Vec::new();
    let mut missing_total = 0;
    for run in 0..options.runs {
        let (twice, missing, seconds) = run_once(&options).await?;
        println!(
            "run {run}: {twice} of {} records printed twice, {missing} missing, {seconds:.1} s",
            options.records
        );
        duplicates.push(twice);
        missing_total += missing;
    }
    let runs_with_duplicates = duplicates.iter().filter(|d| **d > 0).count();
    println!(
        "{}: {} runs, duplicates per run {:?} ({} runs with duplicates, {} in all), {} missing in all",
        options.cat,
        options.runs,
        duplicates,
        runs_with_duplicates,
        duplicates.iter().sum::<usize>(),
        missing_total
    );
    Ok(())
}
