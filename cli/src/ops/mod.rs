//! The operator's commands: `describe`, `tail`, `lag` and `leases reset`.
//!
//! Each prints a readable report by default and one JSON document (`tail`: one JSON line per
//! record) with `--json`, for scripts. They stand on the libraries' layers: kinesis-common
//! for Kinesis (ListShards, ReadShard), kcl's retrieval for reading a shard deaggregated
//! (`PollingSource`) and kcl's lease table for leases, its operator's reset included.
//!
//! Exit codes (the same for every operator command, listed in `--help` and the README):
//! 0 done; 1 a call failed (after retries) or output could not be written; 2 bad arguments;
//! 3 not found (stream, lease table, shard or lease); 4 `leases reset` left a lease unmoved
//! (held by a worker and not `--force`d, or changed while being reset); 5 `lag
//! --fail-above-ms`: the worst lag is above the threshold.

pub(crate) mod describe;
pub(crate) mod lag;
pub(crate) mod reset;
pub(crate) mod tail;

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use aws_sdk_kinesis::primitives::{DateTime, DateTimeFormat};
use kcl::lease::{LeaseError, LeaseTable, TableScan};
use kinesis_common::{Backoff, ErrorChain, ErrorClass, Jitter, KinesisError};

/// The exit codes, for `--help`.
pub(crate) const EXIT_CODES: &str = "Exit codes: 0 done; 1 a call failed (after retries) or \
output could not be written; 2 bad arguments; 3 not found (stream, lease table, shard or \
lease); 4 leases reset: a lease was left unmoved (held, no --force, or changed meanwhile); \
5 lag --fail-above-ms: the worst lag is above it.";

/// Why an operator command stopped, and its exit code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpsError {
    /// Exit 1: a call failed after its retries.
    #[error("{0}")]
    Failed(String),
    /// Exit 1: stdout or stderr could not be written.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Exit 2: the arguments cannot work.
    #[error("{0}")]
    Usage(String),
    /// Exit 3: the stream, table, shard or lease does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Exit 4: `leases reset` left leases unmoved (the report says which and why).
    #[error("{0}")]
    NotAllMoved(String),
    /// Exit 5: `lag --fail-above-ms` exceeded (the report was printed).
    #[error("{0}")]
    LagAbove(String),
}

impl OpsError {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::Failed(_) | Self::Io(_) => 1,
            Self::Usage(_) => 2,
            Self::NotFound(_) => 3,
            Self::NotAllMoved(_) => 4,
            Self::LagAbove(_) => 5,
        }
    }

    /// A Kinesis failure: not found (exit 3) or failed (exit 1).
    pub(crate) fn kinesis(context: &str, error: &KinesisError) -> Self {
        let message = format!("{context}: {}", ErrorChain(error));
        match error.class() {
            ErrorClass::NotFound => Self::NotFound(message),
            _ => Self::Failed(message),
        }
    }

    /// A lease table failure: a missing table is not found (exit 3), the rest failed (exit 1).
    pub(crate) fn lease(table: &str, error: &LeaseError) -> Self {
        let message = ErrorChain(error).to_string();
        if matches!(error, LeaseError::TableNotFound { .. }) {
            Self::NotFound(format!("lease table {table:?} not found: {message}"))
        } else {
            Self::Failed(message)
        }
    }
}

/// Prints the error (if any) and turns it into the documented exit code.
pub(crate) fn exit(result: Result<(), OpsError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(OpsError::Io(error)) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            // `kinesis-cat tail ... | head`: the reader had enough.
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("kinesis-cat: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// A runtime for one command.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, OpsError> {
    Ok(tokio::runtime::Runtime::new()?)
}

/// The SDK configuration from the standard AWS settings (region, credentials, endpoints).
pub(crate) async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::load_from_env().await
}

/// A scan of the application's lease table, its leases by lease key.
pub(crate) async fn all_leases(
    config: &aws_config::SdkConfig,
    application: &str,
) -> Result<TableScan, OpsError> {
    let table = LeaseTable::new(aws_sdk_dynamodb::Client::new(config), application);
    let mut scan = table
        .scan()
        .await
        .map_err(|e| OpsError::lease(application, &e))?;
    scan.leases.sort_by(|a, b| a.lease_key.cmp(&b.lease_key));
    Ok(scan)
}

/// Calls `call` until it succeeds, fails with an error retrying cannot fix, or failed
/// `ATTEMPTS` times: the kinesis-common calls make one attempt each, retrying is the caller's.
pub(crate) async fn retried<T, F, Fut>(mut call: F) -> Result<T, KinesisError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, KinesisError>>,
{
    const ATTEMPTS: u32 = 6;
    let mut backoff = Backoff::new(
        Duration::from_millis(100),
        Duration::from_secs(2),
        Jitter::Equal,
    );
    loop {
        match call().await {
            Err(error) if error.is_retryable() && backoff.attempts() + 1 < ATTEMPTS => {
                tokio::time::sleep(backoff.next_delay()).await;
            }
            other => return other,
        }
    }
}

/// Parses a point in time: RFC 3339 (`2026-12-08T00:00:00Z`), optionally written
/// `at-timestamp=...` as `consume --from` takes it.
pub(crate) fn parse_timestamp(value: &str) -> Option<SystemTime> {
    let value = value.strip_prefix("at-timestamp=").unwrap_or(value);
    let parsed = DateTime::from_str(value, DateTimeFormat::DateTime).ok()?;
    SystemTime::try_from(parsed).ok()
}

/// A time as RFC 3339, for output.
pub(crate) fn format_time(time: SystemTime) -> String {
    DateTime::from(time)
        .fmt(DateTimeFormat::DateTime)
        .unwrap_or_else(|_| format!("{time:?}"))
}

/// Writes a JSON document and a newline to stdout.
pub(crate) fn print_json(value: &impl serde::Serialize) -> Result<(), OpsError> {
    use std::io::Write;
    let mut line = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut out = std::io::stdout().lock();
    out.write_all(&line)?;
    out.flush()?;
    Ok(())
}
