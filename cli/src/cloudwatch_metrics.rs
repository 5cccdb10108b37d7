//! `--cloudwatch-metrics LEVEL` of `produce` and `consume`: the libraries' CloudWatch
//! publisher, with the KPL's table for the producer (namespace `KinesisProducerLibrary`,
//! granularity shard) and the KCL's for the consumer (namespace the application name,
//! `WorkerIdentifier` the worker id). The endpoint, region and credentials come from the
//! standard AWS settings, `AWS_ENDPOINT_URL_CLOUDWATCH` included.

use std::time::Duration;

use clap::Args;
use kpl::cloudwatch::{Builder, Level, Publisher};
use tokio::runtime::Runtime;
use tracing::warn;

use crate::jsonl::CliError;
use crate::metrics_export::{MetricsArgs, MetricsExport};

/// How long the last upload may take when the command ends (three attempts of 10 s, and
/// their waits).
const LAST_UPLOAD: Duration = Duration::from_secs(45);

/// The CloudWatch flag shared by `produce` and `consume`.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Metrics")]
pub(crate) struct CloudWatchArgs {
    /// Publish the metrics to CloudWatch as the KPL and the KCL do, at this level: none
    /// (default), summary or detailed. The producer's namespace is KinesisProducerLibrary, the
    /// consumer's the application name. Endpoint, region and credentials from the standard
    /// AWS settings (AWS_ENDPOINT_URL_CLOUDWATCH included). One upload a minute, and one when
    /// the command ends.
    #[arg(long, value_name = "LEVEL", default_value = "none")]
    cloudwatch_metrics: Level,
}

impl CloudWatchArgs {
    /// Whether anything is to be published.
    pub(crate) fn enabled(&self) -> bool {
        self.cloudwatch_metrics != Level::None
    }
}

/// Starts the publisher on `runtime` (none at level none); its recorder is to be installed
/// before the producer or the consumer is built.
pub(crate) fn start(
    runtime: &Runtime,
    args: &CloudWatchArgs,
    builder: Builder,
) -> Option<Publisher> {
    if !args.enabled() {
        return None;
    }
    let config = runtime.block_on(aws_config::load_from_env());
    let _entered = runtime.enter();
    Some(
        builder
            .level(args.cloudwatch_metrics)
            .spawn(aws_sdk_cloudwatch::Client::new(&config)),
    )
}

/// Sends what is buffered, the current minute included, and stops the publisher.
pub(crate) fn finish(runtime: &Runtime, publisher: Option<Publisher>) {
    let Some(publisher) = publisher else {
        return;
    };
    let stats = runtime.block_on(async {
        if tokio::time::timeout(LAST_UPLOAD, publisher.flush())
            .await
            .is_err()
        {
            warn!("the last CloudWatch metrics upload did not finish in time");
        }
        publisher.stats()
    });
    // Dropping the publisher stops its uploader.
    drop(publisher);
    if stats.datums_failed + stats.datums_overflowed + stats.minutes_dropped > 0 {
        warn!(?stats, "some CloudWatch metrics were not published");
    }
}

/// What the metrics flags started for one command: the global recorder's exports
/// (`--metrics-listen`, `--otlp-endpoint`) and the CloudWatch publisher.
pub(crate) struct Telemetry {
    export: MetricsExport,
    cloudwatch: Option<Publisher>,
}

impl Telemetry {
    /// Starts what `metrics` and `cloudwatch` ask for on `runtime`, with `builder`'s table
    /// for CloudWatch. Call before building the producer or the consumer: their handles are
    /// registered with the recorder present at that time.
    pub(crate) fn start(
        runtime: &Runtime,
        metrics: &MetricsArgs,
        cloudwatch: &CloudWatchArgs,
        builder: Builder,
    ) -> Result<Self, CliError> {
        let cloudwatch = start(runtime, cloudwatch, builder);
        let recorder = cloudwatch.as_ref().map(|p| Box::new(p.recorder()) as _);
        let export = crate::metrics_export::start_with(runtime, metrics, recorder)?;
        Ok(Self { export, cloudwatch })
    }

    /// The last exports and the last CloudWatch upload, when the command ends.
    pub(crate) fn finish(self, runtime: &Runtime) {
        self.export.finish();
        finish(runtime, self.cloudwatch);
    }
}
