//! `kinesis-cat`: the kcat of Kinesis.
//!
//! Subcommands so far: `agg encode` / `agg decode` (the KPL aggregation format on JSON lines),
//! `produce` (stdin lines into a stream) and `perf agg` / `perf produce` (throughput).

mod agg;
mod consume;
mod jsonl;
mod perf;
mod perf_consume;
mod perf_produce;
mod produce;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "kinesis-cat", version, about = "The kcat of Kinesis")]
struct Cli {
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
    /// Show an application's leases.
    Leases(consume::LeasesArgs),
    /// Measure throughput.
    #[command(subcommand)]
    Perf(perf::PerfCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Agg(command) => agg::run(command),
        Command::Perf(command) => perf::run(command),
        Command::Produce(args) => produce::run(args),
        Command::Consume(args) => consume::run(args),
        Command::Leases(args) => consume::leases(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kinesis-cat: {error}");
            ExitCode::FAILURE
        }
    }
}
