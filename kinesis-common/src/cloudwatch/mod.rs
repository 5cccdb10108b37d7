//! Publishing the producer's and the consumer's metrics to Amazon CloudWatch, with the
//! reference libraries' semantics (feature `cloudwatch`).
//!
//! A [`CloudWatchRecorder`] is a `metrics` recorder: install it (or hand it to a layer of
//! recorders) and every counter, gauge and histogram the libraries publish through the facade
//! is kept, per CloudWatch series, as one statistic set per minute (SampleCount, Sum, Minimum,
//! Maximum). A background task ([`Publisher`]) sends the finished minutes every
//! [`upload_delay`](Builder::upload_delay) (60 s, as the KPL) with batched `PutMetricData`
//! calls that respect the API's limits ([`MAX_DATUMS_PER_CALL`], [`MAX_PAYLOAD_BYTES`],
//! [`MAX_DIMENSIONS`]).
//!
//! Recording never waits for the network: it is a lookup and an update of the series' current
//! minute under its own short lock. A CloudWatch that hangs, throttles or rejects costs the
//! uploader time (each call is bounded by [`call_timeout`](Builder::call_timeout), retried
//! [`max_attempts`](Builder::max_attempts) times with jittered exponential waits) and, past
//! the memory bounds, data: series beyond [`max_series`](Builder::max_series), minutes beyond
//! [`max_buffered_minutes`](Builder::max_buffered_minutes) per series and statistic sets
//! beyond [`max_pending`](Builder::max_pending) waiting for upload are dropped and counted in
//! [`PublisherStats`]; failures are logged with `tracing`.
//!
//! Which metrics go, and with which dimensions, is one table per library:
//!
//! - [`Builder::producer`]: the KPL's. Namespace `KinesisProducerLibrary`, [`Level`]
//!   none/summary/detailed (default detailed) and [`Granularity`] global/stream/shard
//!   (default shard): a metric is published for every prefix of its dimensions
//!   `[ErrorCode], StreamName, [ShardId]` whose granularity is within the setting, so one
//!   stream's `UserRecordsPut` is one series for the stream and one overall.
//! - [`Builder::consumer`]: the KCL's. Namespace the application name, levels
//!   NONE/SUMMARY/DETAILED, dimensions `Operation` (always), `ShardId` (per-shard metrics),
//!   `WorkerIdentifier` (worker metrics: leases), `StreamId` (off by default, as the Java KCL
//!   in single-stream mode), each one that can be turned off with
//!   [`Builder::dimensions`].
//!
//! Metric names the table does not know (an application's own) are not published: install a
//! layer of recorders to send those elsewhere.
//!
//! ```no_run
//! # async fn run(sdk: aws_sdk_cloudwatch::Client) {
//! use kinesis_common::cloudwatch::{Builder, Level};
//! let publisher = Builder::producer().level(Level::Summary).spawn(sdk);
//! publisher.install().expect("no other recorder installed");
//! // ... build the producer, send records ...
//! publisher.shutdown().await; // sends what is buffered, the current minute included
//! # }
//! ```

mod recorder;
mod table;
mod upload;

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use recorder::CloudWatchRecorder;
pub use table::Dimension;
pub use upload::{BoxPut, PutError, PutMetricData};

/// Metric data per `PutMetricData` call (the API's limit).
pub const MAX_DATUMS_PER_CALL: usize = 1000;
/// Bytes of one `PutMetricData` request body (the API's limit is 1 MB; the estimate of the
/// form-encoded body stays below this, with room for the estimate's error).
pub const MAX_PAYLOAD_BYTES: usize = 900_000;
/// Dimensions per metric (the API's limit).
pub const MAX_DIMENSIONS: usize = 30;
/// Characters of a dimension value (the API's limit).
pub const MAX_DIMENSION_VALUE: usize = 1024;

/// How much the publisher sends: metrics above the level are not published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Level {
    /// Nothing.
    None,
    /// The metrics an operator watches.
    Summary,
    /// Every metric (the KPL's and the KCL's default).
    #[default]
    Detailed,
}

/// How fine the KPL's metrics go: each metric is also published at every coarser
/// granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Granularity {
    /// No stream or shard dimension.
    Global,
    /// Per stream (`StreamName`), and overall.
    Stream,
    /// Per shard (`StreamName`, `ShardId`) where the metric has a shard, per stream, and
    /// overall (the KPL's default).
    #[default]
    Shard,
}

/// A level or granularity that is not one of the words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {given:?} (expected one of {expected})")]
pub struct ParseError {
    what: &'static str,
    given: String,
    expected: &'static str,
}

impl FromStr for Level {
    type Err = ParseError;

    /// `none`, `summary` or `detailed`, in any case (the KPL writes them in lower case, the
    /// KCL in upper case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(Self::None),
            "summary" => Ok(Self::Summary),
            "detailed" => Ok(Self::Detailed),
            _ => Err(ParseError {
                what: "metrics level",
                given: s.to_owned(),
                expected: "none, summary, detailed",
            }),
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Summary => "summary",
            Self::Detailed => "detailed",
        })
    }
}

impl FromStr for Granularity {
    type Err = ParseError;

    /// `global`, `stream` or `shard`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "global" => Ok(Self::Global),
            "stream" => Ok(Self::Stream),
            "shard" => Ok(Self::Shard),
            _ => Err(ParseError {
                what: "metrics granularity",
                given: s.to_owned(),
                expected: "global, stream, shard",
            }),
        }
    }
}

/// What the publisher did and dropped since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PublisherStats {
    /// `PutMetricData` calls CloudWatch accepted.
    pub calls: u64,
    /// Statistic sets (one series, one minute) CloudWatch accepted.
    pub datums_sent: u64,
    /// Attempts that failed (throttled, timed out, refused, rejected).
    pub failed_attempts: u64,
    /// Attempts made again after a failure.
    pub retries: u64,
    /// Statistic sets given up after their call's last attempt, or rejected as invalid.
    pub datums_failed: u64,
    /// Statistic sets dropped because more than `max_pending` waited for upload.
    pub datums_overflowed: u64,
    /// Minutes of a series dropped because more than `max_buffered_minutes` were waiting.
    pub minutes_dropped: u64,
    /// Metric handles refused because the publisher held `max_series` series: their
    /// samples are not published.
    pub series_refused: u64,
    /// Distinct series held now.
    pub series: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    calls: AtomicU64,
    datums_sent: AtomicU64,
    failed_attempts: AtomicU64,
    retries: AtomicU64,
    datums_failed: AtomicU64,
    datums_overflowed: AtomicU64,
    minutes_dropped: AtomicU64,
    series_refused: AtomicU64,
    series: AtomicU64,
}

impl Counters {
    fn add(cell: &AtomicU64, n: usize) {
        cell.fetch_add(n as u64, Relaxed);
    }

    fn snapshot(&self) -> PublisherStats {
        PublisherStats {
            calls: self.calls.load(Relaxed),
            datums_sent: self.datums_sent.load(Relaxed),
            failed_attempts: self.failed_attempts.load(Relaxed),
            retries: self.retries.load(Relaxed),
            datums_failed: self.datums_failed.load(Relaxed),
            datums_overflowed: self.datums_overflowed.load(Relaxed),
            minutes_dropped: self.minutes_dropped.load(Relaxed),
            series_refused: self.series_refused.load(Relaxed),
            series: self.series.load(Relaxed),
        }
    }
}

/// Wall-clock minutes that follow tokio's clock (so paused time moves them in tests): the
/// wall clock is read once, at the start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    wall_ms: i64,
    start: tokio::time::Instant,
}

impl Clock {
    fn new() -> Self {
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Self {
            wall_ms,
            start: tokio::time::Instant::now(),
        }
    }

    /// The current minute, counted from the Unix epoch.
    pub(crate) fn minute(&self) -> i64 {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.start);
        (self.wall_ms + elapsed.as_millis() as i64).div_euclid(60_000)
    }
}

/// The settings of a publisher, with the KPL's or the KCL's defaults.
#[derive(Debug, Clone)]
pub struct Builder {
    table: table::Table,
    namespace: String,
    level: Level,
    upload_delay: Duration,
    call_timeout: Duration,
    max_attempts: u32,
    backoff_min: Duration,
    backoff_max: Duration,
    max_series: usize,
    max_buffered_minutes: usize,
    max_pending: usize,
}

impl Builder {
    fn new(table: table::Table, namespace: String) -> Self {
        Self {
            table,
            namespace,
            level: Level::Detailed,
            upload_delay: Duration::from_secs(60),
            call_timeout: Duration::from_secs(10),
            max_attempts: 3,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(10),
            max_series: 10_000,
            max_buffered_minutes: 10,
            max_pending: 20_000,
        }
    }

    /// The producer's metrics with the KPL's table: namespace `KinesisProducerLibrary`,
    /// level detailed, granularity shard.
    pub fn producer() -> Self {
        Self::new(
            table::Table::producer(Granularity::Shard),
            "KinesisProducerLibrary".to_owned(),
        )
    }

    /// The consumer's metrics with the KCL's table: namespace `application` (the Java KCL's
    /// `applicationName`), level DETAILED, dimensions `Operation`, `ShardId` and
    /// `WorkerIdentifier` = `worker` (the scheduler's worker id).
    pub fn consumer(application: impl Into<String>, worker: impl Into<String>) -> Self {
        Self::new(table::Table::consumer(worker.into()), application.into())
    }

    /// The CloudWatch namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Metrics above this level are not published ([`Level::None`]: none, and no call).
    pub fn level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }

    /// The finest granularity of the producer's metrics (no effect on the consumer's).
    pub fn granularity(mut self, granularity: Granularity) -> Self {
        self.table.set_granularity(granularity);
        self
    }

    /// The consumer's dimensions that are published (`Operation` always is); the producer's
    /// follow the granularity instead.
    pub fn dimensions(mut self, enabled: &[Dimension]) -> Self {
        self.table.set_dimensions(enabled);
        self
    }

    /// How often finished minutes are sent (60 s by default, as the KPL's `MetricsUploadDelay`).
    pub fn upload_delay(mut self, delay: Duration) -> Self {
        self.upload_delay = delay.max(Duration::from_millis(1));
        self
    }

    /// How long one `PutMetricData` attempt may take (10 s by default).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Attempts per call before its statistic sets are dropped (3 by default, at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The range of the jittered exponential waits between attempts (500 ms to 10 s).
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max;
        self
    }

    /// Distinct series (name and dimensions) held at most (10 000 by default); handles that
    /// would need more publish nothing.
    pub fn max_series(mut self, series: usize) -> Self {
        self.max_series = series;
        self
    }

    /// Minutes one series holds before upload at most (10 by default); the oldest go first.
    pub fn max_buffered_minutes(mut self, minutes: usize) -> Self {
        self.max_buffered_minutes = minutes.max(1);
        self
    }

    /// Statistic sets waiting for upload at most (20 000 by default); the oldest go first.
    pub fn max_pending(mut self, datums: usize) -> Self {
        self.max_pending = datums;
        self
    }

    /// Starts the uploader on the current tokio runtime, sending with `client` (one attempt
    /// per call: the SDK's own retries are turned off, the publisher retries).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn(self, client: aws_sdk_cloudwatch::Client) -> Publisher {
        self.spawn_with(upload::SdkPut::new(client))
    }

    /// Starts the uploader with any implementation of the call (a test double).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn_with(self, put: impl PutMetricData) -> Publisher {
        let counters = Arc::new(Counters::default());
        let clock = Clock::new();
        let recorder = CloudWatchRecorder::new(
            self.table.clone(),
            self.level,
            self.max_series,
            self.max_buffered_minutes,
            clock,
            counters.clone(),
        );
        let (commands, inbox) = mpsc::channel(8);
        let uploader = upload::Uploader {
            recorder: recorder.clone(),
            put: Box::new(put),
            namespace: self.namespace.clone(),
            upload_delay: self.upload_delay,
            call_timeout: self.call_timeout,
            max_attempts: self.max_attempts,
            backoff: crate::Backoff::new(self.backoff_min, self.backoff_max, crate::Jitter::Full),
            max_pending: self.max_pending,
            counters: counters.clone(),
            pending: Default::default(),
        };
        let task = tokio::spawn(uploader.run(inbox));
        Publisher {
            recorder,
            commands,
            counters,
            task: Some(task),
        }
    }
}

pub(crate) enum Command {
    Flush(oneshot::Sender<()>),
}

/// The running uploader, and the recorder that feeds it.
#[derive(Debug)]
pub struct Publisher {
    recorder: CloudWatchRecorder,
    commands: mpsc::Sender<Command>,
    counters: Arc<Counters>,
    task: Option<JoinHandle<()>>,
}

/// Another recorder was installed first.
#[derive(Debug, thiserror::Error)]
#[error("a global metrics recorder is already installed")]
pub struct InstallError;

impl Publisher {
    /// The recorder (a cheap clone), for a layer of recorders or
    /// `metrics::with_local_recorder`.
    pub fn recorder(&self) -> CloudWatchRecorder {
        self.recorder.clone()
    }

    /// Installs the recorder as the process's global `metrics` recorder.
    pub fn install(&self) -> Result<(), InstallError> {
        metrics::set_global_recorder(self.recorder.clone()).map_err(|_| InstallError)
    }

    /// What the publisher did and dropped so far.
    pub fn stats(&self) -> PublisherStats {
        self.counters.snapshot()
    }

    /// Sends every buffered minute now, the current one included, and returns once the
    /// uploader is done with them (sent, or given up after their attempts).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Flushes, then stops the uploader.
    pub async fn shutdown(mut self) {
        self.flush().await;
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
