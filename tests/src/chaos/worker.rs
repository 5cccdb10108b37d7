//! Worker processes: `kinesis-cat consume --json --events`, each behind its own proxies, its
//! output parsed into the verifier's log as it comes.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

use super::verify::{Event, EventKind, Processed};

/// The data of a chaos record: `<n>:<sent_us>:` then padding.
pub fn record_data(n: u64, sent_us: u64, size: usize) -> String {
    let mut data = format!("{n}:{sent_us}:");
    while data.len() < size {
        data.push('.');
    }
    data
}

/// `(n, sent_us)` from a chaos record's data.
pub fn parse_record_data(data: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(data).ok()?;
    let mut parts = text.splitn(3, ':');
    let n = parts.next()?.parse().ok()?;
    let sent = parts.next()?.parse().ok()?;
    parts.next()?;
    Some((n, sent))
}

/// One parsed output line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A record line.
    Record(Processed),
    /// An event line.
    Event(Event),
}

/// Parses one line of `kinesis-cat consume --json --events` from worker process `worker`.
///
/// # Errors
///
/// What is wrong with the line.
pub fn parse_line(worker: &str, line: &str) -> Result<Line, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {line}"))?;
    let text = |field: &str| {
        value[field]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no {field} in {line}"))
    };
    let number = |field: &str| {
        value[field]
            .as_u64()
            .ok_or_else(|| format!("no {field} in {line}"))
    };
    let shard = text("shard_id")?;
    let holding = number("holding")?;
    let at_us = number("at_us")?;
    if let Some(event) = value["event"].as_str() {
        let kind = match event {
            "initialize" => EventKind::Initialize(text("checkpoint")?),
            "checkpoint" => EventKind::Checkpoint(text("checkpoint")?),
            "lease_lost" => EventKind::LeaseLost,
            "shard_ended" => EventKind::ShardEnded,
            "shutdown_requested" => EventKind::ShutdownRequested,
            other => return Err(format!("unknown event {other:?}: {line}")),
        };
        return Ok(Line::Event(Event {
            worker: worker.to_owned(),
            holding,
            shard,
            kind,
            at_us,
        }));
    }
    let data = base64::engine::general_purpose::STANDARD
        .decode(text("data")?)
        .map_err(|e| format!("data is not base64 ({e}): {line}"))?;
    let (n, _) = parse_record_data(&data).ok_or_else(|| format!("not a chaos record: {line}"))?;
    Ok(Line::Record(Processed {
        worker: worker.to_owned(),
        holding,
        shard,
        sequence: text("sequence_number")?,
        sub: value["sub_sequence_number"].as_u64().unwrap_or(0),
        key: text("partition_key")?,
        n,
        at_us,
    }))
}

/// What every worker's output goes into.
#[derive(Debug, Default)]
pub struct Collected {
    /// Record lines, in each worker's order.
    pub processed: Vec<Processed>,
    /// Event lines, in each worker's order.
    pub events: Vec<Event>,
    /// Lines that did not parse.
    pub malformed: Vec<String>,
}

/// How to start a worker.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// The `kinesis-cat` binary.
    pub binary: PathBuf,
    /// Stream name.
    pub stream: String,
    /// Application name (the lease table).
    pub application: String,
    /// Worker id in the lease table.
    pub worker_id: String,
    /// Kinesis endpoint (its proxy).
    pub kinesis_url: String,
    /// DynamoDB endpoint (its proxy).
    pub dynamodb_url: String,
    /// `--failover-seconds`.
    pub failover: Duration,
    /// `--idle-millis`.
    pub idle_millis: u64,
}

/// A running worker process.
#[derive(Debug)]
pub struct WorkerProcess {
    /// Names this process in the log (a restarted worker gets a new name).
    pub label: String,
    child: Child,
    stdout: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<String>>,
}

impl WorkerProcess {
    /// Starts `kinesis-cat consume` for `spec`; its lines go into `sink` as `label`.
    ///
    /// # Panics
    ///
    /// When the process cannot start.
    pub fn spawn(spec: &WorkerSpec, label: &str, sink: Arc<Mutex<Collected>>) -> Self {
        let mut child = Command::new(&spec.binary)
            .args([
                "consume",
                spec.stream.as_str(),
                "--application",
                spec.application.as_str(),
                "--worker-id",
                spec.worker_id.as_str(),
                "--from",
                "trim-horizon",
                "--json",
                "--events",
                "--failover-seconds",
                &spec.failover.as_secs_f64().to_string(),
                "--idle-millis",
                &spec.idle_millis.to_string(),
            ])
            .env(crate::KINESIS_ENDPOINT_VAR, &spec.kinesis_url)
            .env(crate::DYNAMODB_ENDPOINT_VAR, &spec.dynamodb_url)
            .env("AWS_REGION", crate::REGION)
            .env("AWS_ACCESS_KEY_ID", crate::ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", crate::SECRET_ACCESS_KEY)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", spec.binary.display()));
        let stdout = child.stdout.take().map(|out| {
            let label = label.to_owned();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    let parsed = parse_line(&label, &line);
                    let mut sink = sink.lock().unwrap_or_else(|e| e.into_inner());
                    match parsed {
                        Ok(Line::Record(record)) => sink.processed.push(record),
                        Ok(Line::Event(event)) => sink.events.push(event),
                        Err(error) => sink.malformed.push(error),
                    }
                }
            })
        });
        let stderr = child.stderr.take().map(|mut err| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = err.read_to_string(&mut text);
                text
            })
        });
        Self {
            label: label.to_owned(),
            child,
            stdout,
            stderr,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown, no release, whatever was in flight is lost.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
    }

    /// SIGTERM: a graceful shutdown.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "kill -TERM {} failed",
            self.pid()
        );
    }

    /// Waits for the exit (polling) for at most `limit`: the status and the stderr, once
    /// the output is read to its end.
    ///
    /// # Panics
    ///
    /// When the process is still running after `limit`.
    pub fn wait(mut self, limit: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + limit;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    let _ = self.child.kill();
                    panic!("worker {} did not exit within {limit:?}", self.label);
                }
                Err(e) => panic!("waiting for worker {}: {e}", self.label),
            }
        };
        if let Some(stdout) = self.stdout.take() {
            let _ = stdout.join();
        }
        let stderr = self
            .stderr
            .take()
            .and_then(|thread| thread.join().ok())
            .unwrap_or_default();
        (status, stderr)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        // A test that failed half-way leaves no process behind.
        if self.stdout.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_data_round_trips() {
        let data = record_data(42, 1_700_000_000_000_000, 64);
        assert_eq!(data.len(), 64);
        assert_eq!(
            parse_record_data(data.as_bytes()),
            Some((42, 1_700_000_000_000_000))
        );
        assert_eq!(parse_record_data(b"line 7"), None);
    }

    #[test]
    fn parses_records_and_events() {
        let data = base64::engine::general_purpose::STANDARD.encode(record_data(3, 99, 20));
        let record = format!(
            r#"{{"shard_id":"shardId-000000000001","sequence_number":"4955","sub_sequence_number":2,"partition_key":"k7","explicit_hash_key":null,"data":"{data}","holding":4,"at_us":123}}"#
        );
        let Ok(Line::Record(p)) = parse_line("w1", &record) else {
            panic!("a record line");
        };
        assert_eq!(
            (
                p.shard.as_str(),
                p.sequence.as_str(),
                p.sub,
                p.key.as_str(),
                p.n,
                p.holding,
                p.at_us
            ),
            ("shardId-000000000001", "4955", 2, "k7", 3, 4, 123)
        );
        let event = r#"{"event":"initialize","shard_id":"s","holding":1,"checkpoint":"TRIM_HORIZON","at_us":5}"#;
        assert_eq!(
            parse_line("w1", event),
            Ok(Line::Event(Event {
                worker: "w1".into(),
                holding: 1,
                shard: "s".into(),
                kind: EventKind::Initialize("TRIM_HORIZON".into()),
                at_us: 5,
            }))
        );
        assert!(
            parse_line(
                "w1",
                r#"{"event":"bogus","shard_id":"s","holding":1,"at_us":5}"#
            )
            .is_err()
        );
        assert!(parse_line("w1", "not json").is_err());
    }
}
