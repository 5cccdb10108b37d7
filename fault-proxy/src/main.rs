//! `fault-proxy`: run a fault-injecting Kinesis endpoint from the command line.
//!
//! Prints the endpoint URL as the first line of stdout, then serves until SIGINT or SIGTERM,
//! and prints the final counters as JSON to stderr. Logs go to stderr (`RUST_LOG`, default
//! `warn`).
//!
//! ```text
//! fault-proxy --sink --shards 4
//! fault-proxy --sink --shards 4 --records-per-shard 100000 --record-size 100 --aggregated
//! fault-proxy --upstream http://127.0.0.1:4567 --throttle-rate 0.1 --partial-failure-rate 0.05
//! ```

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use fault_proxy::{FaultProxy, Faults, ServerError, Upstream};

/// A fault-injecting Kinesis endpoint (or a fast local PutRecords sink) for tests and
/// benchmarks.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Answer PutRecords, PutRecord, ListShards and DescribeStreamSummary locally (no upstream);
    /// with --records-per-shard, also GetShardIterator and GetRecords.
    #[arg(
        long,
        conflicts_with = "upstream",
        required_unless_present = "upstream"
    )]
    sink: bool,
    /// Shards of the sink's stream layout.
    #[arg(long, default_value_t = 4, requires = "sink")]
    shards: u32,
    /// Make the sink a read sink: generate this many user records per shard at start and
    /// answer GetShardIterator and GetRecords over them.
    #[arg(long, value_name = "N", requires = "sink")]
    records_per_shard: Option<u64>,
    /// Bytes of random data per generated user record.
    #[arg(
        long,
        default_value_t = 100,
        value_name = "BYTES",
        requires = "records_per_shard"
    )]
    record_size: usize,
    /// Pack the generated user records into KPL aggregates (51,200 bytes at most).
    #[arg(long, requires = "records_per_shard")]
    aggregated: bool,
    /// Distinct random partition keys of the generated records.
    #[arg(
        long,
        default_value_t = 1_000,
        value_name = "K",
        requires = "records_per_shard"
    )]
    keys: usize,
    /// Forward requests to this Kinesis endpoint (e.g. kinesis-mock's http://127.0.0.1:PORT).
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Seed of the random generator that decides every fault.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Probability that a call is answered HTTP 400 ProvisionedThroughputExceededException.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    throttle_rate: f64,
    /// Probability that a call is answered with a server error (--server-error).
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    internal_error_rate: f64,
    /// The server error --internal-error-rate injects.
    #[arg(long, value_enum, default_value_t = ServerErrorArg::InternalFailure)]
    server_error: ServerErrorArg,
    /// Probability, per PutRecords entry, that the entry fails (not forwarded).
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    partial_failure_rate: f64,
    /// Share of the failed entries answered InternalFailure (the rest:
    /// ProvisionedThroughputExceededException).
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    partial_failure_internal_share: f64,
    /// Delay added before answering, in milliseconds (with probability --delay-rate).
    #[arg(long, default_value_t = 0, value_name = "MS")]
    delay_ms: u64,
    /// Probability that an answer is delayed by --delay-ms (default 1 when --delay-ms is set).
    #[arg(long, value_name = "P")]
    delay_rate: Option<f64>,
    /// Probability that the connection is closed after reading the request, without answering.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    drop_connection_rate: f64,
    /// Probability that the request is processed upstream and then the connection is closed
    /// without answering.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    lose_response_rate: f64,
    /// An operation faults apply to (repeatable; default PutRecords).
    #[arg(long = "fail-operation", value_name = "OPERATION")]
    fail_operations: Vec<String>,
    /// Print the counters as JSON to stderr every this many seconds (0: only at exit).
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    stats_interval: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ServerErrorArg {
    /// HTTP 500 InternalFailure.
    InternalFailure,
    /// HTTP 500 InternalFailureException.
    InternalFailureException,
    /// HTTP 503 ServiceUnavailable.
    ServiceUnavailable,
    /// HTTP 400 ExpiredTokenException.
    ExpiredToken,
    /// HTTP 400 InvalidSignatureException "Signature expired".
    SignatureExpired,
}

impl From<ServerErrorArg> for ServerError {
    fn from(arg: ServerErrorArg) -> Self {
        match arg {
            ServerErrorArg::InternalFailure => Self::InternalFailure,
            ServerErrorArg::InternalFailureException => Self::InternalFailureException,
            ServerErrorArg::ServiceUnavailable => Self::ServiceUnavailable,
            ServerErrorArg::ExpiredToken => Self::ExpiredToken,
            ServerErrorArg::SignatureExpired => Self::SignatureExpired,
        }
    }
}

impl Args {
    fn upstream(&self) -> Upstream {
        match &self.upstream {
            Some(url) if !self.sink => Upstream::Forward(url.clone()),
            _ => match self.records_per_shard {
                Some(records_per_shard) => Upstream::ReadSink {
                    shards: self.shards,
                    records_per_shard,
                    record_size: self.record_size,
                    aggregated: self.aggregated,
                    keys: self.keys,
                },
                None => Upstream::Sink {
                    shards: self.shards,
                },
            },
        }
    }

    fn faults(&self) -> Faults {
        let mut faults = Faults {
            seed: self.seed,
            throttle_rate: self.throttle_rate,
            internal_error_rate: self.internal_error_rate,
            server_error: self.server_error.into(),
            partial_failure_rate: self.partial_failure_rate,
            partial_failure_internal_share: self.partial_failure_internal_share,
            delay: Duration::from_millis(self.delay_ms),
            delay_rate: self
                .delay_rate
                .unwrap_or(if self.delay_ms > 0 { 1.0 } else { 0.0 }),
            drop_connection_rate: self.drop_connection_rate,
            lose_response_rate: self.lose_response_rate,
            ..Faults::default()
        };
        if !self.fail_operations.is_empty() {
            faults.fail_operations = self.fail_operations.clone();
        }
        faults
    }
}

fn print_stats(proxy: &FaultProxy) {
    match serde_json::to_string(&proxy.stats()) {
        Ok(json) => eprintln!("{json}"),
        Err(err) => eprintln!("cannot print the counters: {err}"),
    }
}

async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    let proxy = match FaultProxy::start_on(args.listen, args.upstream(), args.faults()).await {
        Ok(proxy) => proxy,
        Err(err) => {
            let mut message = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                message.push_str(": ");
                message.push_str(&cause.to_string());
                source = cause.source();
            }
            eprintln!("fault-proxy: {message}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout();
    if writeln!(stdout, "{}", proxy.endpoint_url())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        eprintln!("fault-proxy: cannot write the endpoint URL to stdout");
        return ExitCode::FAILURE;
    }

    if args.stats_interval > 0 {
        let mut ticks = tokio::time::interval(Duration::from_secs(args.stats_interval));
        ticks.tick().await;
        let stop = terminated();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = ticks.tick() => print_stats(&proxy),
            }
        }
    } else {
        terminated().await;
    }
    print_stats(&proxy);
    proxy.shutdown().await;
    ExitCode::SUCCESS
}
