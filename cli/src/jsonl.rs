//! JSON-lines plumbing shared by the subcommands: numbered input lines, base64 fields, and
//! errors that name the line.

use std::io::{BufRead, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a subcommand stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error("line {line}: {problem}")]
    BadLine { line: usize, problem: String },
    #[error("input: {0}")]
    BadInput(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    pub(crate) fn line(line: usize, problem: impl std::fmt::Display) -> Self {
        Self::BadLine {
            line,
            problem: problem.to_string(),
        }
    }
}

/// Calls `handle` with each non-blank line of `input` parsed as `T`, and its 1-based number.
pub(crate) fn for_each_line<T, F>(input: impl BufRead, mut handle: F) -> Result<(), CliError>
where
    T: DeserializeOwned,
    F: FnMut(usize, T) -> Result<(), CliError>,
{
    for (index, line) in input.lines().enumerate() {
        let number = index + 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let value = serde_json::from_str(&line)
            .map_err(|error| CliError::line(number, format!("invalid JSON: {error}")))?;
        handle(number, value)?;
    }
    Ok(())
}

/// Decodes a base64 field, naming it in the error.
pub(crate) fn decode_base64(field: &str, value: &str) -> Result<Vec<u8>, String> {
    STANDARD
        .decode(value)
        .map_err(|error| format!("field {field:?} is not valid base64: {error}"))
}

pub(crate) fn encode_base64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Writes one JSON object and a newline; a line is written whole or not at all.
pub(crate) fn write_line(out: &mut impl Write, value: &impl Serialize) -> Result<(), CliError> {
    let mut line = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)?;
    Ok(())
}
