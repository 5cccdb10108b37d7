//! `kinesis-cat produce --json` against a slow endpoint (kinesis-mock takes about 1 MB/s): how
//! many user records end up stored more than once, how many are out of order per partition key,
//! and how long it takes. The workload of issue 9: 20,000 records of 10 B to 3 KB over 400 keys
//! into a 4-shard stream.
//!
//! ```text
//! eval "$(scripts/emulators.sh env)"
//! cargo run --release -p kpl --example slow_endpoint -- --cat target/release/kinesis-cat \
//!     [--repeats 3] [--records 20000] [--keys 400] [--shards 4] [-- extra produce args]
//! ```
//!
//! Each repeat uses a new stream. Prints one markdown row per repeat (with the Kinesis records
//! stored and PutRecords calls made per million user records: pass `-- --no-aggregate` to see
//! them without aggregation) and, last, the medians.
//! Read-back order is per shard in sequence order (there is no reshard here, so each key lives
//! in one shard); an inversion is a record whose first stored copy comes after the first stored
//! copy of a later record of the same key.

use std::collections::HashMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Instant;

use aggregation_proto::{ReceivedRecord, deaggregate};
use base64::Engine as _;
use integration_tests::{
    create_stream, delete_stream, kinesis_client, read_records_by_shard, unique_name,
};
use rand::{Rng, SeedableRng};

struct Args {
    cat: String,
    repeats: usize,
    records: usize,
    keys: usize,
    shards: i32,
    extra: Vec<String>,
}

fn parse_args() -> Args {
    let mut args = Args {
        cat: "target/release/kinesis-cat".into(),
        repeats: 3,
        records: 20_000,
        keys: 400,
        shards: 4,
        extra: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--cat" => args.cat = value(),
            "--repeats" => args.repeats = value().parse().expect("--repeats N"),
            "--records" => args.records = value().parse().expect("--records N"),
            "--keys" => args.keys = value().parse().expect("--keys N"),
            "--shards" => args.shards = value().parse().expect("--shards N"),
            "--" => {
                args.extra = it.by_ref().collect();
            }
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// The workload as JSON lines: record `i` carries `i` at the start of its data.
fn workload(records: usize, keys: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let engine = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    for i in 0..records {
        let size = rng.random_range(10..=3_000);
        let mut data = format!("{i}:").into_bytes();
        while data.len() < size {
            data.push(b'a' + (rng.random_range(0..26u8)));
        }
        let key = format!("key-{}", rng.random_range(0..keys));
        writeln!(
            out,
            r#"{{"partition_key": "{key}", "data": "{}"}}"#,
            engine.encode(&data)
        )
        .expect("write to memory");
    }
    out
}

struct Outcome {
    seconds: f64,
    stored: usize,
    distinct: usize,
    missing: usize,
    inversions: usize,
    kinesis_records: usize,
    put_records_calls: Option<u64>,
    summary: String,
}

/// A number field of the `kinesis-cat produce` summary line (flat JSON).
fn summary_field(summary: &str, field: &str) -> Option<u64> {
    let at = summary.find(&format!("\"{field}\":"))? + field.len() + 3;
    let digits: String = summary[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

async fn run_once(args: &Args, input: &[u8]) -> Outcome {
    let client = kinesis_client().await;
    let stream = unique_name("slow-endpoint");
    create_stream(&client, &stream, args.shards).await;
    let started = Instant::now();
    let mut child = Command::new(&args.cat)
        .arg("produce")
        .arg(&stream)
        .arg("--json")
        .args(&args.extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", args.cat));
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(input)
        .expect("workload written");
    let output = child.wait_with_output().expect("produce finished");
    let seconds = started.elapsed().as_secs_f64();
    let summary = String::from_utf8_lossy(&output.stdout).trim().to_owned();

    let mut stored = 0;
    let mut first_seen: HashMap<usize, ()> = HashMap::new();
    let mut last_per_key: HashMap<String, usize> = HashMap::new();
    let mut inversions = 0;
    let mut kinesis_records = 0;
    for (_, records) in read_records_by_shard(&client, &stream).await {
        kinesis_records += records.len();
        for record in &records {
            let received =
                ReceivedRecord::new(record.partition_key(), record.data().as_ref().to_vec());
            for user in deaggregate(&received) {
                stored += 1;
                let text = String::from_utf8_lossy(user.data());
                let index: usize = text
                    .split(':')
                    .next()
                    .and_then(|i| i.parse().ok())
                    .expect("a record index");
                if first_seen.insert(index, ()).is_some() {
                    continue;
                }
                let last = last_per_key
                    .entry(user.partition_key().to_owned())
                    .or_insert(index);
                if index < *last {
                    inversions += 1;
                } else {
                    *last = index;
                }
            }
        }
    }
    delete_stream(&client, &stream).await;
    Outcome {
        seconds,
        stored,
        distinct: first_seen.len(),
        missing: args.records - first_seen.len(),
        inversions,
        kinesis_records,
        put_records_calls: summary_field(&summary, "put_records_calls"),
        summary,
    }
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let input = workload(args.records, args.keys);
    println!(
        "| run | seconds | user records stored | distinct | duplicates | duplicates % | missing | key-order inversions | Kinesis records per M user records | PutRecords calls per M user records |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for run in 1..=args.repeats {
        let outcome = run_once(&args, &input).await;
        let duplicates = outcome.stored - outcome.distinct;
        let per_million = |n: f64| n * 1e6 / args.records as f64;
        println!(
            "| {run} | {:.1} | {} | {} | {duplicates} | {:.1} | {} | {} | {:.0} | {} |",
            outcome.seconds,
            outcome.stored,
            outcome.distinct,
            100.0 * duplicates as f64 / args.records as f64,
            outcome.missing,
            outcome.inversions,
            per_million(outcome.kinesis_records as f64),
            outcome
                .put_records_calls
                .map_or("-".to_owned(), |calls| format!(
                    "{:.0}",
                    per_million(calls as f64)
                )),
        );
        eprintln!("run {run} summary: {}", outcome.summary);
        rows.push((outcome.seconds, duplicates, outcome.inversions));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "median: {:.1} s, {:.0} duplicates, {:.0} inversions ({} records/s end to end)",
        median(rows.iter().map(|r| r.0).collect()),
        median(rows.iter().map(|r| r.1 as f64).collect()),
        median(rows.iter().map(|r| r.2 as f64).collect()),
        (args.records as f64 / median(rows.iter().map(|r| r.0).collect())) as u64
    );
}
