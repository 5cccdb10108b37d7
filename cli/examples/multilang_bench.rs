//! Our MultiLangDaemon (`kcl-multilang`) beside the real Java MultiLangDaemon 2.5.8 (through
//! the test harness `integration_tests::java_kcl`), with the same properties file, the same
//! Python processor (`multilang_bench_processor.py` on amazon-kclpy 3.2.0), the same
//! emulators (`scripts/emulators.sh start`) and the same records.
//!
//! ```text
//! cargo build --release -p kinesis-cat --bins --examples
//! target/release/examples/multilang_bench [--impl both|ours|java] [--repeats 3]
//!     [--records 20000] [--max-records 1000] [--ours target/release/kcl-multilang]
//! ```
//!
//! Per run, on a fresh one-shard stream holding `--records` records of 100 bytes and a fresh
//! lease table: the time from starting the daemon to the first record in the processor; the
//! records per second through the one Python child (first record arrived to the last batch
//! processed and checkpointed; `maxRecords` = `--max-records`); the daemon's peak RSS (VmHWM
//! of the daemon process alone, children excluded: they are the same program for both); and
//! SIGTERM to exit, with whether the child heard `shutdownRequested` and the exit status. Prints a markdown table
//! (min / median / max) and a JSON line with every sample.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use integration_tests::java_kcl::{JavaWorker, JavaWorkerBuilder, java_kcl};
use integration_tests::{
    ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, create_stream, delete_stream, delete_table,
    dynamodb_client, kinesis_client, repo_root, unique_name,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

const POLL: Duration = Duration::from_millis(50);
const RUN_LIMIT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Impl {
    Ours,
    Java,
}

impl Impl {
    fn name(self) -> &'static str {
        match self {
            Self::Ours => "ours (kcl-multilang)",
            Self::Java => "Java MultiLangDaemon 2.5.8",
        }
    }
}

#[derive(Debug)]
struct Options {
    impls: Vec<Impl>,
    repeats: usize,
    records: usize,
    max_records: usize,
    ours: PathBuf,
}

#[derive(Debug, Clone)]
struct Sample {
    first_record: Duration,
    records_per_second: f64,
    peak_rss_mib: f64,
    stop: Duration,
    shutdown_requested: bool,
    /// The exit code, or the signal that ended the process.
    exit: String,
}

fn parse_args() -> Result<Options, Error> {
    let mut options = Options {
        impls: vec![Impl::Java, Impl::Ours],
        repeats: 3,
        records: 20_000,
        max_records: 1_000,
        ours: std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .ok_or("cannot locate the target directory")?
            .join("kcl-multilang"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--impl" => {
                options.impls = match value()?.as_str() {
                    "both" => vec![Impl::Java, Impl::Ours],
                    "ours" => vec![Impl::Ours],
                    "java" => vec![Impl::Java],
                    other => return Err(format!("--impl {other}: both, ours or java").into()),
                }
            }
            "--repeats" => options.repeats = value()?.parse()?,
            "--records" => options.records = value()?.parse()?,
            "--max-records" => options.max_records = value()?.parse()?,
            "--ours" => options.ours = PathBuf::from(value()?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if options.impls.contains(&Impl::Ours) && !options.ours.is_file() {
        return Err(format!(
            "{} not found: cargo build --release -p kinesis-cat --bins (or pass --ours)",
            options.ours.display()
        )
        .into());
    }
    Ok(options)
}

/// `count` records of 100 bytes, PutRecords 500 at a time, failures retried.
async fn produce(stream: &str, count: usize) -> Result<(), Error> {
    let client = kinesis_client().await;
    let mut entries: Vec<PutRecordsRequestEntry> = (0..count)
        .map(|i| {
            PutRecordsRequestEntry::builder()
                .partition_key(format!("key-{}", i % 1000))
                .data(Blob::new(format!("{i:0>100}")))
                .build()
        })
        .collect::<Result<_, _>>()?;
    while !entries.is_empty() {
        let chunk: Vec<_> = entries.drain(..entries.len().min(500)).collect();
        let output = client
            .put_records()
            .stream_name(stream)
            .set_records(Some(chunk.clone()))
            .send()
            .await?;
        for (entry, result) in chunk.into_iter().zip(output.records()) {
            if result.error_code().is_some() {
                entries.push(entry);
            }
        }
    }
    Ok(())
}

fn epoch(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// The processor's events: (name, count, epoch seconds).
fn read_events(path: &Path) -> Vec<(String, usize, f64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words[..] {
                [name, time] => Some((name.to_owned(), 0, time.parse().ok()?)),
                [name, count, time] => {
                    Some((name.to_owned(), count.parse().ok()?, time.parse().ok()?))
                }
                _ => None,
            }
        })
        .collect()
}

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// A daemon of either kind, started.
enum Running {
    Java(Box<JavaWorker>),
    Ours(std::process::Child),
}

impl Running {
    fn pid(&self) -> u32 {
        match self {
            Self::Java(worker) => worker.pid().unwrap_or(0),
            Self::Ours(child) => child.id(),
        }
    }

    fn alive(&mut self) -> bool {
        match self {
            Self::Java(worker) => worker.is_running(),
            Self::Ours(child) => matches!(child.try_wait(), Ok(None)),
        }
    }

    async fn stop(&mut self) -> (String, Duration) {
        match self {
            Self::Java(worker) => {
                let (status, took) = worker.stop().await;
                (describe(status), took)
            }
            Self::Ours(child) => {
                let asked = Instant::now();
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                loop {
                    if let Ok(Some(status)) = child.try_wait() {
                        return (describe(status), asked.elapsed());
                    }
                    if asked.elapsed() > RUN_LIMIT {
                        let _ = child.kill();
                        return ("killed: no exit".into(), asked.elapsed());
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
        }
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => "unknown".into(),
    }
}

fn start_ours(
    options: &Options,
    builder: &JavaWorkerBuilder,
    dir: &Path,
    env: &[(&str, String)],
) -> Result<Running, Error> {
    std::fs::create_dir_all(dir)?;
    let properties = dir.join("app.properties");
    // The very file the Java daemon gets.
    std::fs::write(&properties, builder.properties_text())?;
    let log = std::fs::File::create(dir.join("daemon.log"))?;
    let child = Command::new(&options.ours)
        .arg("--properties-file")
        .arg(&properties)
        .current_dir(dir)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
        .env("AWS_REGION", REGION)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    Ok(Running::Ours(child))
}

async fn run_once(options: &Options, which: Impl) -> Result<Sample, Error> {
    let stream = unique_name("mlbench");
    let application = unique_name("mlbench-app");
    create_stream(&kinesis_client().await, &stream, 1).await;
    produce(&stream, options.records).await?;
    let dir = std::env::temp_dir()
        .join("kinesis-rs-multilang-bench")
        .join(&application);
    std::fs::create_dir_all(&dir)?;
    let events = dir.join("events.txt");
    let kclpy = repo_root().join(".cache/multilang/amazon_kclpy-3.2.0");
    let processor =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/multilang_bench_processor.py");
    let python = java_kcl().python.clone();
    let env = [
        ("BENCH_EVENTS", events.display().to_string()),
        ("PYTHONPATH", kclpy.display().to_string()),
    ];
    let mut builder = JavaWorker::builder(application.as_str(), stream.as_str())
        .executable(format!("{} {}", python.display(), processor.display()))
        .property("maxRecords", options.max_records.to_string());
    for (key, value) in &env {
        builder = builder.env(*key, value.clone());
    }
    let started_at = SystemTime::now();
    let mut running = match which {
        Impl::Java => Running::Java(Box::new(builder.start())),
        Impl::Ours => start_ours(options, &builder, &dir, &env)?,
    };
    let deadline = Instant::now() + RUN_LIMIT;
    let (first, last) = loop {
        let events = read_events(&events);
        let first = events.iter().find(|e| e.0 == "first").map(|e| e.2);
        let last = events
            .iter()
            .find(|e| e.0 == "batch" && e.1 >= options.records)
            .map(|e| e.2);
        if let (Some(first), Some(last)) = (first, last) {
            break (first, last);
        }
        if !running.alive() || Instant::now() > deadline {
            let _ = running.stop().await;
            return Err(format!(
                "{}: not every record processed (see {})",
                which.name(),
                dir.display()
            )
            .into());
        }
        tokio::time::sleep(POLL).await;
    };
    let peak = peak_rss_mib(running.pid());
    let (exit, stop) = running.stop().await;
    let shutdown_requested = read_events(&events)
        .iter()
        .any(|e| e.0 == "shutdown_requested");
    let _ = delete_stream(&kinesis_client().await, &stream).await;
    let _ = delete_table(&dynamodb_client().await, &application).await;
    Ok(Sample {
        first_record: Duration::from_secs_f64((first - epoch(started_at)).max(0.0)),
        records_per_second: options.records as f64 / (last - first).max(1e-6),
        peak_rss_mib: peak,
        stop,
        shutdown_requested,
        exit,
    })
}

fn summary(values: &mut [f64], unit: &str, digits: usize) -> String {
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    let (min, max) = (values[0], values[values.len() - 1]);
    let unit = if unit.is_empty() {
        String::new()
    } else {
        format!(" {unit}")
    };
    format!("median {median:.digits$}{unit} ({min:.digits$}-{max:.digits$})")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let options = parse_args()?;
    let mut results: Vec<(Impl, Vec<Sample>)> = Vec::new();
    for &which in &options.impls {
        let mut samples = Vec::new();
        for repeat in 0..options.repeats {
            let sample = run_once(&options, which).await?;
            eprintln!("{} run {}: {sample:?}", which.name(), repeat + 1);
            samples.push(sample);
        }
        results.push((which, samples));
    }
    println!(
        "| daemon | start -> first record | records/s, one Python child | peak RSS (daemon) | SIGTERM -> exit | shutdownRequested heard | exit |"
    );
    println!("|---|--:|--:|--:|--:|--:|---|");
    for (which, samples) in &results {
        let pick = |f: fn(&Sample) -> f64| samples.iter().map(f).collect::<Vec<f64>>();
        println!(
            "| {} | {} | {} | {} | {} | {}/{} | {} |",
            which.name(),
            summary(&mut pick(|s| s.first_record.as_secs_f64()), "s", 2),
            summary(&mut pick(|s| s.records_per_second), "", 0),
            summary(&mut pick(|s| s.peak_rss_mib), "MiB", 1),
            summary(&mut pick(|s| s.stop.as_secs_f64()), "s", 2),
            samples.iter().filter(|s| s.shutdown_requested).count(),
            samples.len(),
            samples
                .iter()
                .map(|s| s.exit.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    let json: Vec<serde_json::Value> = results
        .iter()
        .flat_map(|(which, samples)| {
            samples.iter().map(move |s| {
                serde_json::json!({
                    "impl": which.name(),
                    "first_record_s": s.first_record.as_secs_f64(),
                    "records_per_second": s.records_per_second,
                    "peak_rss_mib": s.peak_rss_mib,
                    "stop_s": s.stop.as_secs_f64(),
                    "shutdown_requested": s.shutdown_requested,
                    "exit": s.exit,
                })
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({"records": options.records, "max_records": options.max_records, "samples": json})
    );
    Ok(())
}
