//! `kinesis-cat multilang` (also `kcl-multilang`): a MultiLangDaemon without a JVM.
//!
//! It reads the Java daemon's properties file and runs the same record processors (Python
//! `amazon-kclpy`, Node `aws-kcl`, ...) over the same JSON line protocol, one child process per
//! leased shard, with our consumer (`kcl`) holding the leases in the same DynamoDB table.
//!
//! - `args.rs`: the Java daemon's command line, and the JVM's (to stand in for `java`);
//! - `properties.rs`: the `java.util.Properties` format;
//! - `config.rs`: properties to settings; `credentials.rs`: Java provider names to the SDK's;
//! - `protocol.rs`: the messages; `driver.rs`: the protocol state machine over two pipes;
//! - `child.rs`: a child process; `processor.rs`: our processor trait onto a child.
//!
//! Better than the Java daemon, on purpose: a child that exits or stops answering within
//! `timeoutInSeconds` is killed and the shard restarted from its last checkpoint after a
//! backoff (Java exits the whole daemon); SIGTERM is a graceful shutdown with a bounded wait
//! (`shutdownRequested` to every child, checkpoints, leases handed back) even when
//! `shutdownGraceMillis` is unset (Java's default 0 skips it).

mod args;
mod child;
mod config;
mod credentials;
mod driver;
mod processor;
mod properties;
mod protocol;

use std::sync::Arc;

use clap::Args;
use kcl::Scheduler;
use kinesis_common::ErrorChain;
use tracing::{info, warn};

use self::args::{DaemonArgs, USAGE};
use self::config::DaemonConfig;
use self::processor::{ChildProcessor, ChildSettings};
use self::properties::Properties;
use crate::jsonl::CliError;

/// `kinesis-cat multilang ARGS...`: the Java daemon's arguments, passed through.
#[derive(Debug, Args)]
pub(crate) struct MultilangArgs {
    /// `[FILE] [-p|--properties-file FILE] [-l|--log-configuration FILE]`, as the Java
    /// MultiLangDaemon takes them (JVM options `-cp CP`, `-D...`, `-X...` and the daemon's
    /// class name are accepted too).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// Runs `kinesis-cat multilang`.
pub(crate) fn run(args: MultilangArgs) -> Result<(), CliError> {
    run_daemon(args.args)
}

/// Runs the daemon with the Java daemon's (or the JVM's) arguments.
pub(crate) fn run_daemon(args: Vec<String>) -> Result<(), CliError> {
    let args = DaemonArgs::parse(args).map_err(|e| CliError::Usage(format!("{e}\n{USAGE}")))?;
    if args.help {
        println!("{USAGE}");
        return Ok(());
    }
    if !args.skipped_jvm_options.is_empty() {
        info!(options = ?args.skipped_jvm_options, "JVM options skipped: there is no JVM");
    }
    if let Some(file) = &args.log_configuration {
        warn!(
            file,
            "--log-configuration ignored: this daemon logs to stderr; set RUST_LOG (e.g. RUST_LOG=info) instead of a logback file"
        );
    }
    let path = args
        .resolve_properties()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let bytes = std::fs::read(&path).map_err(|e| {
        CliError::Usage(format!(
            "cannot read the properties file {}: {e}",
            path.display()
        ))
    })?;
    let properties = Properties::parse(&bytes)
        .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
    let config = DaemonConfig::from_properties(&properties)
        .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
    for note in &config.notes {
        warn!(file = %path.display(), "{note}");
    }
    tokio::runtime::Runtime::new()?.block_on(daemon(config))
}

async fn sdk_config(config: &DaemonConfig) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = &config.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(provider) = config.credentials.provider().await {
        loader = loader.credentials_provider(provider);
    }
    loader.load().await
}

async fn clients(config: &DaemonConfig) -> (aws_sdk_kinesis::Client, aws_sdk_dynamodb::Client) {
    let sdk = sdk_config(config).await;
    let mut kinesis = aws_sdk_kinesis::config::Builder::from(&sdk);
    if let Some(endpoint) = &config.kinesis_endpoint {
        kinesis = kinesis.endpoint_url(endpoint);
    }
    let mut dynamodb = aws_sdk_dynamodb::config::Builder::from(&sdk);
    if let Some(endpoint) = &config.dynamodb_endpoint {
        dynamodb = dynamodb.endpoint_url(endpoint);
    }
    if let Some(spec) = &config.dynamodb_credentials
        && let Some(provider) = spec.provider().await
    {
        dynamodb = dynamodb.credentials_provider(provider);
    }
    (
        aws_sdk_kinesis::Client::from_conf(kinesis.build()),
        aws_sdk_dynamodb::Client::from_conf(dynamodb.build()),
    )
}

async fn daemon(config: DaemonConfig) -> Result<(), CliError> {
    let (kinesis, dynamodb) = clients(&config).await;
    let settings = Arc::new(ChildSettings {
        command: config.command.clone(),
        timeout: config.timeout,
    });
    let mut polling = kcl::retrieval::PollingConfig::default();
    if let Some(max) = config.max_records {
        polling = polling.max_records(max);
    }
    if let Some(idle) = config.idle_time_between_reads {
        polling = polling.idle_time_between_reads(idle);
    }
    let mut builder = Scheduler::builder(
        config.application_name.as_str(),
        config.stream_name.as_str(),
        move |shard: &str| ChildProcessor::new(shard, settings.clone()),
    )
    .clients(kinesis, dynamodb)
    .initial_position(config.initial_position)
    .polling(polling)
    .call_process_records_even_if_empty(config.process_empty_batches)
    .shutdown_timeout(config.shutdown_grace)
    // timeoutInSeconds bounds the children's answers; a processor call waiting on a child
    // that answers (checkpoints, a long batch) is not hung.
    .processor_timeout(None);
    if let Some(table) = &config.table_name {
        builder = builder.table_name(table.as_str());
    }
    if let Some(consumer) = &config.fan_out {
        builder = builder.fan_out(consumer.as_str());
    }
    if let Some(worker) = &config.worker_id {
        builder = builder.worker_id(worker.as_str());
    }
    if let Some(failover) = config.failover_time {
        builder = builder.failover_time(failover);
    }
    if let Some(interval) = config.shard_sync_interval {
        builder = builder.shard_sync_interval(interval);
    }
    if let Some(interval) = config.parent_poll_interval {
        builder = builder.parent_poll_interval(interval);
    }
    if let Some(max) = config.max_leases_for_worker {
        builder = builder.max_leases_for_worker(max);
    }
    let scheduler = builder
        .build()
        .map_err(|e| CliError::Usage(ErrorChain(&e).to_string()))?;
    info!(
        application = %config.application_name,
        stream = %config.stream_name,
        worker = scheduler.worker_id(),
        executable = %config.command,
        "MultiLangDaemon starting"
    );
    let handle = scheduler.handle();
    let stopper = tokio::spawn(async move {
        crate::consume::terminate_signal().await;
        info!(
            "stop signal: shutting down (shutdownRequested to every record processor, leases handed back)"
        );
        handle.graceful_shutdown().await;
    });
    let result = crate::consume::run_scheduler(scheduler, stopper).await;
    info!("MultiLangDaemon stopped");
    result
}
