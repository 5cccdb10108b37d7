//! `kinesis-cat`: the kcat of Kinesis.
//!
//! Subcommands so far: `agg encode` / `agg decode` (the KPL aggregation format on JSON lines)
//! and `perf agg` (aggregation throughput on an in-memory workload).

mod agg;
mod jsonl;
mod perf;

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
    /// Measure throughput.
    #[command(subcommand)]
    Perf(perf::PerfCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Agg(command) => agg::run(command),
        Command::Perf(command) => perf::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kinesis-cat: {error}");
            ExitCode::FAILURE
        }
    }
}
