//! The uploader: takes the finished minutes, batches them within the API's limits, sends
//! them with bounded attempts.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_cloudwatch::config::retry::RetryConfig;
use aws_sdk_cloudwatch::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StatisticSet};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use super::recorder::{CloudWatchRecorder, Stats};
use super::table::Series;
use super::{Command, Counters, MAX_DATUMS_PER_CALL, MAX_PAYLOAD_BYTES};
use crate::Backoff;

/// The future of one `PutMetricData` attempt.
pub type BoxPut<'a> = Pin<Box<dyn Future<Output = Result<(), PutError>> + Send + 'a>>;

/// One `PutMetricData` attempt: the SDK client, or a test double.
pub trait PutMetricData: Send + Sync + 'static {
    /// Sends `data` to `namespace`, once.
    fn put<'a>(&'a self, namespace: &'a str, data: Vec<MetricDatum>) -> BoxPut<'a>;
}

/// A failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PutError {
    /// Worth another attempt: throttled, timed out, the connection failed, a server error.
    #[error("PutMetricData failed, to be retried: {0}")]
    Retry(String),
    /// The request itself is wrong (an invalid value, denied): another attempt would fail too.
    #[error("PutMetricData rejected: {0}")]
    Reject(String),
}

impl PutError {
    fn retriable(&self) -> bool {
        matches!(self, Self::Retry(_))
    }
}

/// The codes CloudWatch (awsQuery) answers when a caller goes too fast.
const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "LimitExceededException",
];

pub(crate) struct SdkPut {
    client: aws_sdk_cloudwatch::Client,
}

impl SdkPut {
    pub(crate) fn new(client: aws_sdk_cloudwatch::Client) -> Self {
        Self { client }
    }
}

impl PutMetricData for SdkPut {
    fn put<'a>(&'a self, namespace: &'a str, data: Vec<MetricDatum>) -> BoxPut<'a> {
        Box::pin(async move {
            self.client
                .put_metric_data()
                .namespace(namespace)
                .set_metric_data(Some(data))
                .customize()
                // One attempt per call: the uploader retries with its own bounds.
                .config_override(
                    aws_sdk_cloudwatch::Config::builder().retry_config(RetryConfig::disabled()),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(classify)
        })
    }
}

fn classify<E, R>(error: SdkError<E, R>) -> PutError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let retriable = match &error {
        SdkError::ServiceError(context) => {
            let code = context.err().code().unwrap_or_default();
            THROTTLING.contains(&code) || code == "InternalServiceError" || code.is_empty()
        }
        SdkError::ConstructionFailure(_) => false,
        _ => true,
    };
    let message = DisplayErrorContext(&error).to_string();
    if retriable {
        PutError::Retry(message)
    } else {
        PutError::Reject(message)
    }
}

pub(crate) struct Uploader {
    pub(crate) recorder: CloudWatchRecorder,
    pub(crate) put: Box<dyn PutMetricData>,
    pub(crate) namespace: String,
    pub(crate) upload_delay: Duration,
    pub(crate) call_timeout: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) max_pending: usize,
    pub(crate) counters: Arc<Counters>,
    pub(crate) pending: VecDeque<(MetricDatum, usize)>,
}

fn datum(series: &Series, minute: i64, stats: Stats) -> MetricDatum {
    MetricDatum::builder()
        .metric_name(series.name.clone())
        .set_dimensions((!series.dimensions.is_empty()).then(|| {
            series
                .dimensions
                .iter()
                .map(|(name, value)| Dimension::builder().name(name).value(value).build())
                .collect()
        }))
        .timestamp(DateTime::from_millis(minute * 60_000))
        .unit(series.unit.clone())
        .statistic_values(
            StatisticSet::builder()
                .sample_count(stats.count as f64)
                .sum(stats.sum)
                .minimum(stats.min)
                .maximum(stats.max)
                .build(),
        )
        .build()
}

/// Bytes of a form-encoded string, as the query serializer percent-encodes it.
fn encoded(s: &str) -> usize {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                1
            } else {
                3
            }
        })
        .sum()
}

/// An upper bound of the bytes `series` takes in a request body: each field is
/// `&MetricData.member.NNNN.<field>=<value>`, numbers at most 32 characters.
pub(crate) fn estimate(series: &Series) -> usize {
    const PREFIX: usize = "&MetricData.member.1000.".len();
    const NUMBER: usize = 32;
    let name = PREFIX + "MetricName=".len() + encoded(&series.name);
    let timestamp = PREFIX + "Timestamp=".len() + 40;
    let unit = PREFIX + "Unit=".len() + 24;
    let stats = 4 * (PREFIX + "StatisticValues.SampleCount=".len() + NUMBER);
    let dimensions: usize = series
        .dimensions
        .iter()
        .map(|(name, value)| {
            2 * (PREFIX + "Dimensions.member.30.Value=".len()) + encoded(name) + encoded(value)
        })
        .sum();
    name + timestamp + unit + stats + dimensions
}

impl Uploader {
    pub(crate) async fn run(mut self, mut inbox: mpsc::Receiver<Command>) {
        let mut ticks =
            tokio::time::interval_at(Instant::now() + self.upload_delay, self.upload_delay);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let flush = tokio::select! {
                _ = ticks.tick() => None,
                command = inbox.recv() => match command {
                    Some(Command::Flush(done)) => Some(done),
                    None => return,
                },
            };
            // A tick takes only finished minutes, so a minute goes as one statistic set.
            let before = match flush {
                Some(_) => None,
                None => Some(self.recorder.clock().minute()),
            };
            self.collect(before);
            self.send_pending().await;
            if let Some(done) = flush {
                let _ = done.send(());
            }
        }
    }

    fn collect(&mut self, before: Option<i64>) {
        for cell in self.recorder.cells() {
            for (minute, stats) in cell.take(before) {
                let size = estimate(&cell.series);
                self.pending
                    .push_back((datum(&cell.series, minute, stats), size));
            }
        }
        let excess = self.pending.len().saturating_sub(self.max_pending);
        if excess > 0 {
            self.pending.drain(..excess);
            Counters::add(&self.counters.datums_overflowed, excess);
            tracing::warn!(
                dropped = excess,
                max_pending = self.max_pending,
                "CloudWatch publisher is behind: oldest statistic sets dropped"
            );
        }
    }

    /// The next call's data: at most [`MAX_DATUMS_PER_CALL`], within [`MAX_PAYLOAD_BYTES`].
    fn batch(&mut self) -> Vec<MetricDatum> {
        let mut bytes =
            "Action=PutMetricData&Version=2010-08-01&Namespace=".len() + encoded(&self.namespace);
        let mut batch = Vec::new();
        while let Some((_, size)) = self.pending.front() {
            if batch.len() == MAX_DATUMS_PER_CALL
                || (!batch.is_empty() && bytes + size > MAX_PAYLOAD_BYTES)
            {
                break;
            }
            bytes += size;
            if let Some((datum, _)) = self.pending.pop_front() {
                batch.push(datum);
            }
        }
        batch
    }

    async fn send_pending(&mut self) {
        loop {
            let batch = self.batch();
            if batch.is_empty() {
                return;
            }
            self.send(batch).await;
        }
    }

    async fn send(&mut self, batch: Vec<MetricDatum>) {
        let datums = batch.len();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = match tokio::time::timeout(
                self.call_timeout,
                self.put.put(&self.namespace, batch.clone()),
            )
            .await
            {
                Ok(outcome) => outcome,
                Err(_) => Err(PutError::Retry(format!(
                    "no answer within {:?}",
                    self.call_timeout
                ))),
            };
            let error = match outcome {
                Ok(()) => {
                    Counters::add(&self.counters.calls, 1);
                    Counters::add(&self.counters.datums_sent, datums);
                    return;
                }
                Err(error) => error,
            };
            Counters::add(&self.counters.failed_attempts, 1);
            if !error.retriable() || attempt >= self.max_attempts {
                Counters::add(&self.counters.datums_failed, datums);
                tracing::warn!(
                    %error,
                    attempt,
                    dropped = datums,
                    "CloudWatch publisher gave up a PutMetricData call: its statistic sets are dropped"
                );
                return;
            }
            let wait = self.backoff.delay(attempt);
            Counters::add(&self.counters.retries, 1);
            tracing::debug!(%error, attempt, ?wait, "CloudWatch PutMetricData failed, retrying");
            tokio::time::sleep(wait).await;
        }
    }
}
