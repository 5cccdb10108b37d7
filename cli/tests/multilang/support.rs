//! Test support: the daemon as a process, the client libraries in `.cache/multilang`, the
//! properties file, the records.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use integration_tests::{
    ACCESS_KEY_ID, DYNAMODB_ENDPOINT_VAR, KINESIS_ENDPOINT_VAR, REGION, SECRET_ACCESS_KEY,
    endpoint_url, kinesis_client, repo_root,
};

const INSTALL_ADVICE: &str = "run ./scripts/test.sh (it installs the pinned amazon-kclpy sdist and aws-kcl into .cache/multilang)";

/// How often files and processes are polled.
const POLL: Duration = Duration::from_millis(100);

/// The unpacked amazon-kclpy 3.2.0 sdist (`$KINESIS_RS_KCLPY`, else `.cache/multilang/...`).
pub fn kclpy_dir() -> PathBuf {
    let dir = std::env::var_os("KINESIS_RS_KCLPY")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache/multilang/amazon_kclpy-3.2.0"));
    assert!(
        dir.join("samples/sample_kclpy_app.py").is_file(),
        "amazon-kclpy 3.2.0 not found at {}: {INSTALL_ADVICE}",
        dir.display()
    );
    dir
}

/// `node_modules` with aws-kcl 2.3.2 (`$KINESIS_RS_AWS_KCL_MODULES`, else `.cache/multilang/node/node_modules`).
pub fn node_modules() -> PathBuf {
    let dir = std::env::var_os("KINESIS_RS_AWS_KCL_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache/multilang/node/node_modules"));
    assert!(
        dir.join("aws-kcl/package.json").is_file(),
        "aws-kcl not found in {}: {INSTALL_ADVICE}",
        dir.display()
    );
    dir
}

/// The test venv's `bin` (its `python` is what `#!/usr/bin/env python` finds).
pub fn venv_bin() -> PathBuf {
    integration_tests::python()
        .parent()
        .expect("the venv's python is in a bin folder")
        .to_path_buf()
}

/// A fresh working directory for one daemon run.
pub fn work_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kcl-multilang-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The properties every test uses (against the emulators, quick timings), then `extra`.
pub fn properties(
    executable: &str,
    stream: &str,
    application: &str,
    extra: &[(&str, &str)],
) -> String {
    let mut text = format!(
        "# written by the multilang tests\n\
         executableName = {executable}\n\
         streamName = {stream}\n\
         applicationName = {application}\n\
         AwsCredentialsProvider = DefaultCredentialsProvider\n\
         processingLanguage = test\n\
         regionName = {REGION}\n\
         kinesisEndpoint = {}\n\
         dynamoDBEndpoint = {}\n\
         initialPositionInStream = TRIM_HORIZON\n\
         idleTimeBetweenReadsInMillis = 100\n\
         shardSyncIntervalMillis = 1000\n\
         parentShardPollIntervalMillis = 200\n\
         failoverTimeMillis = 3000\n\
         shutdownGraceMillis = 20000\n",
        endpoint_url(KINESIS_ENDPOINT_VAR),
        endpoint_url(DYNAMODB_ENDPOINT_VAR),
    );
    for (key, value) in extra {
        text.push_str(&format!("{key} = {value}\n"));
    }
    text
}

/// The program the daemon runs as.
#[derive(Debug, Clone, Copy)]
pub enum Program {
    /// `kinesis-cat multilang ...`
    Subcommand,
    /// `kcl-multilang ...`
    Alias,
}

/// A running daemon, its output in files of its working directory.
pub struct Daemon {
    child: Child,
    pub dir: PathBuf,
}

impl Daemon {
    /// Starts the daemon in `dir` with `args`, PATH starting with `path`, and `env`.
    pub fn start(
        program: Program,
        dir: &Path,
        args: &[&str],
        path: &[PathBuf],
        env: &[(&str, &str)],
    ) -> Self {
        let mut command = match program {
            Program::Subcommand => {
                let mut command = Command::new(env!("CARGO_BIN_EXE_kinesis-cat"));
                command.arg("multilang");
                command
            }
            Program::Alias => Command::new(env!("CARGO_BIN_EXE_kcl-multilang")),
        };
        Self::spawn(command.args(args), dir, path, env)
    }

    /// Runs `command` as a daemon (in `dir`, with the test environment).
    pub fn spawn(
        command: &mut Command,
        dir: &Path,
        path: &[PathBuf],
        env: &[(&str, &str)],
    ) -> Self {
        let mut search = path.to_vec();
        search.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        let stdout = std::fs::File::create(dir.join("daemon.stdout")).expect("stdout file");
        let stderr = std::fs::File::create(dir.join("daemon.stderr")).expect("stderr file");
        command
            .current_dir(dir)
            .env("PATH", std::env::join_paths(search).expect("PATH"))
            .env("AWS_REGION", REGION)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("the daemon starts");
        Self {
            child,
            dir: dir.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the daemon wrote to stderr so far (its log and the children's stderr).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.stderr")).unwrap_or_default()
    }

    fn tail(&self) -> String {
        let text = self.stderr();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Waits until `done(stderr)` holds; panics with the log's tail when the daemon exits
    /// first or `limit` passes.
    pub async fn wait_for(
        &mut self,
        what: &str,
        limit: Duration,
        done: impl Fn(&str) -> bool,
    ) -> Duration {
        let started = Instant::now();
        loop {
            if done(&self.stderr()) {
                return started.elapsed();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // One last look: the output may have landed just before the exit.
                if done(&self.stderr()) {
                    return started.elapsed();
                }
                panic!(
                    "the daemon exited ({status}) before {what}:\n{}",
                    self.tail()
                );
            }
            assert!(
                started.elapsed() < limit,
                "no {what} within {limit:?}:\n{}",
                self.tail()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits for the daemon's exit, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "the daemon did not exit within {limit:?}:\n{}",
                self.tail()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGTERM, then waits for the exit (at most `limit`); returns the status and how long.
    pub async fn terminate(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -TERM {} failed", self.pid());
        let status = self.wait_exit(limit).await;
        (status, started.elapsed())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends `keys.len()` records (data `data-<key>`), aggregated by the KPL, and waits until
/// every one is stored.
pub async fn produce(stream: &str, keys: &[String]) {
    let records = keys.iter().map(|key| (key.clone(), format!("data-{key}")));
    crate::common::produce_records(stream, records).await;
}

/// One record as the Python sample prints it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SampleRecord {
    pub partition_key: String,
    pub sequence_number: String,
    pub sub_sequence_number: u64,
}

/// Every `Record (Partition Key: K, Sequence Number: S, Subsequence Number: N, Data Size: D`
/// the Python sample wrote (it writes no newline after them).
pub fn sample_records(stderr: &str) -> Vec<SampleRecord> {
    stderr
        .split("Record (Partition Key: ")
        .skip(1)
        .filter_map(|rest| {
            let (key, rest) = rest.split_once(", Sequence Number: ")?;
            let (seq, rest) = rest.split_once(", Subsequence Number: ")?;
            let (sub, _) = rest.split_once(", Data Size: ")?;
            Some(SampleRecord {
                partition_key: key.to_owned(),
                sequence_number: seq.to_owned(),
                sub_sequence_number: sub.trim().parse().ok()?,
            })
        })
        .collect()
}

/// Each shard's last user record position, read from the stream (the checkpoint a consumer
/// that processed everything holds).
pub async fn last_positions(
    stream: &str,
) -> std::collections::BTreeMap<String, kcl::lease::Checkpoint> {
    let client = kinesis_client().await;
    let mut last = std::collections::BTreeMap::new();
    for (shard, records) in integration_tests::read_records_by_shard(&client, stream).await {
        let Some(record) = records.last() else {
            continue;
        };
        let received = aggregation_proto::ReceivedRecord::new(
            record.partition_key().to_owned(),
            record.data().as_ref().to_vec(),
        )
        .with_sequence_number(record.sequence_number().to_owned());
        let users = aggregation_proto::deaggregate(&received);
        let sub = users
            .last()
            .and_then(|user| user.sub_sequence_number())
            .unwrap_or(0);
        last.insert(
            shard,
            kcl::lease::Checkpoint::sequence(record.sequence_number(), sub),
        );
    }
    last
}

/// Every lease's checkpoint.
pub async fn checkpoints(
    application: &str,
) -> std::collections::BTreeMap<String, kcl::lease::Checkpoint> {
    let table =
        kcl::lease::LeaseTable::new(integration_tests::dynamodb_client().await, application);
    let scan = table.scan().await.expect("scan the lease table");
    scan.leases
        .into_iter()
        .map(|lease| (lease.lease_key, lease.checkpoint))
        .collect()
}

/// `children/recorder.py`: a record processor on the raw protocol that records everything.
pub fn recorder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/multilang/children/recorder.py")
}

/// The recorder's events so far (JSON lines).
pub fn events(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The events with this action.
pub fn with_action<'a>(
    events: &'a [serde_json::Value],
    action: &str,
) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["action"] == action).collect()
}

/// Every partition key delivered in a `processRecords`.
pub fn delivered_keys(events: &[serde_json::Value]) -> std::collections::BTreeSet<String> {
    with_action(events, "processRecords")
        .into_iter()
        .flat_map(|e| e["keys"].as_array().cloned().unwrap_or_default())
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect()
}

/// A daemon running the recorder in a fresh directory, with `fault`; returns it and the
/// events file.
pub fn start_recorder(
    stream: &str,
    application: &str,
    fault: &str,
    extra_properties: &[(&str, &str)],
    extra_env: &[(&str, &str)],
) -> (Daemon, PathBuf) {
    let dir = work_dir(application);
    let executable = format!(
        "{} {}",
        integration_tests::python().display(),
        recorder().display()
    );
    std::fs::write(
        dir.join("app.properties"),
        properties(&executable, stream, application, extra_properties),
    )
    .unwrap();
    let events = dir.join("events.jsonl");
    let events_text = events.display().to_string();
    let mut env = vec![("EVENTS", events_text.as_str()), ("FAULT", fault)];
    env.extend_from_slice(extra_env);
    let daemon = Daemon::start(Program::Subcommand, &dir, &["app.properties"], &[], &env);
    (daemon, events)
}

/// Waits until `done(events)`; panics with the daemon's log tail after `limit`.
pub async fn wait_events(
    daemon: &mut Daemon,
    events_path: &Path,
    what: &str,
    limit: Duration,
    done: impl Fn(&[serde_json::Value]) -> bool,
) {
    let path = events_path.to_path_buf();
    daemon
        .wait_for(what, limit, move |_| done(&events(&path)))
        .await;
}

/// Whether a process is alive.
pub fn alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// Sends one plain (not aggregated) record per key, data `data-<key>`.
pub async fn produce_plain(stream: &str, keys: &[String]) {
    let client = kinesis_client().await;
    for key in keys {
        client
            .put_record()
            .stream_name(stream)
            .partition_key(key)
            .data(aws_sdk_kinesis::primitives::Blob::new(format!(
                "data-{key}"
            )))
            .send()
            .await
            .expect("PutRecord");
    }
}
