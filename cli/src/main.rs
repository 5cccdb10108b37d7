//! `kinesis-cat`: the kcat of Kinesis.
//!
//! Subcommands so far: `agg encode` / `agg decode` (the KPL aggregation format on JSON lines),
//! `produce` (stdin lines into a stream), `consume` and `multilang` (workers), `perf`
//! (throughput), and the operator's `describe`, `tail`, `lag`, `leases` and `leases reset`
//! (`ops/`, with their own exit codes).

mod agg;
mod cloudwatch_metrics;
mod consume;
mod jsonl;
mod metrics_export;
mod multilang;
mod ops;
mod perf;
mod perf_consume;
mod perf_produce;
mod produce;
mod produce_settings;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "kinesis-cat", version, about = "The kcat of Kinesis")]
struct Cli {
    /// More log output on stderr: -v for info (leases taken, lost, released; shard ends;
    /// retries), -vv for debug. `RUST_LOG` (tracing's env-filter syntax) overrides both.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Aggregate and deaggregate records in the KPL format (JSON lines on stdin and stdout).
    #[command(subcommand)]
    Agg(agg::AggCommand),
    /// Send stdin lines to a stream (aggregated, batched, retried) and print a summary.
    Produce(produce::ProduceArgs),
    /// Run one worker of a consumer application and print its records.
    Consume(consume::ConsumeArgs),
    /// Show an application's leases (`--application APP`), or move their checkpoints
    /// (`leases reset`).
    #[command(after_help = ops::EXIT_CODES)]
    Leases(ops::reset::Leases),
    /// Show a stream: settings, shards (hash ranges, open or closed, parents), enhanced
    /// fan-out consumers.
    #[command(after_help = ops::EXIT_CODES)]
    Describe(ops::describe::DescribeArgs),
    /// Print a stream's records without leases (deaggregated, following reshards: parents
    /// before children), like `kcat -C`. Stops on Ctrl-C, --count or --exit-at-end.
    #[command(after_help = ops::EXIT_CODES)]
    Tail(ops::tail::TailArgs),
    /// Show how far behind the tip each of an application's shards is, and its worst lag.
    #[command(after_help = ops::EXIT_CODES)]
    Lag(ops::lag::LagArgs),
    /// Measure throughput.
    #[command(subcommand)]
    Perf(perf::PerfCommand),
    /// A MultiLangDaemon without a JVM: run Python/Node/... KCL record processors from the
    /// Java daemon's properties file (`kinesis-cat multilang app.properties`; also installed
    /// as `kcl-multilang`, which takes `java`'s place in existing command lines). Metrics:
    /// KCL_MULTILANG_METRICS_LISTEN=ADDR (Prometheus), KCL_MULTILANG_OTLP_ENDPOINT=URL.
    Multilang(multilang::MultilangArgs),
}

/// Logs go to stderr, so they never mix with records on stdout. Without `-v` or `RUST_LOG`
/// only warnings and errors show: a worker that cannot read or renew says so.
fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "warn,kcl=info,kpl=info,kinesis_cat=info",
        _ => "info,kcl=debug,kpl=debug,kinesis_cat=debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // A second subscriber (there is none in this binary) would be an error worth ignoring.
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// The program's name, when it was started as `kcl-multilang` (the alias binary, or a link).
fn started_as_daemon() -> bool {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|path| {
            path.file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .is_some_and(|name| name.starts_with("kcl-multilang"))
}

fn main() -> ExitCode {
    if started_as_daemon() {
        // The Java daemon logs what it does at INFO; so does this one (RUST_LOG overrides).
        init_logging(1);
        let result = metrics_export::with_daemon_metrics(|| {
            multilang::run_daemon(std::env::args().skip(1).collect())
        });
        return exit(result, "kcl-multilang");
    }
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Agg(command) => agg::run(command),
        Command::Perf(command) => perf::run(command),
        Command::Produce(args) => produce::run(args),
        Command::Consume(args) => consume::run(args),
        Command::Leases(ops::reset::Leases {
            command: Some(ops::reset::LeasesCommand::Reset(args)),
            ..
        }) => return ops::exit(ops::reset::run(args)),
        Command::Leases(ops::reset::Leases {
            list: Some(args), ..
        }) => consume::leases(args),
        Command::Leases(_) => Err(jsonl::CliError::Usage(
            "leases: --application APP, or a subcommand (leases reset)".into(),
        )),
        Command::Describe(args) => return ops::exit(ops::describe::run(args)),
        Command::Tail(args) => return ops::exit(ops::tail::run(args)),
        Command::Lag(args) => return ops::exit(ops::lag::run(args)),
        Command::Multilang(args) => metrics_export::with_daemon_metrics(|| multilang::run(args)),
    };
    exit(result, "kinesis-cat")
}

fn exit(result: Result<(), jsonl::CliError>, program: &str) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{program}: {error}");
            ExitCode::FAILURE
        }
    }
}
