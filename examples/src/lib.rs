//! Examples live in this folder; run them with `cargo run -p kinesis-examples --example NAME`.
//!
//! This library holds the little each example needs besides the producer and consumer: the
//! stream to write to, created when it is missing (the local emulators start empty).

use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::StreamStatus;

/// The error type of the examples' `main`s.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The stream named by `STREAM_NAME`, or `default`.
pub fn stream_name(default: &str) -> String {
    std::env::var("STREAM_NAME").unwrap_or_else(|_| default.to_owned())
}

/// Makes sure `stream` exists and is ACTIVE, creating it with `shards` shards when it does not
/// exist yet. Waits at most a minute for it to become ACTIVE.
///
/// # Errors
/// The service's error, or a timeout when the stream never becomes ACTIVE.
pub async fn ensure_stream(client: &Client, stream: &str, shards: i32) -> Result<(), BoxError> {
    let exists = client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await;
    if let Err(error) = exists {
        let not_found = error
            .as_service_error()
            .is_some_and(|e| e.is_resource_not_found_exception());
        if !not_found {
            return Err(error.into());
        }
        let created = client
            .create_stream()
            .stream_name(stream)
            .shard_count(shards)
            .send()
            .await;
        // Another process may have created it meanwhile: that is fine.
        if let Err(error) = created {
            let in_use = error
                .as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception());
            if !in_use {
                return Err(error.into());
            }
        }
        eprintln!("created stream {stream} with {shards} shards");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await?
            .stream_description_summary()
            .map(|s| s.stream_status().clone());
        if status == Some(StreamStatus::Active) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("stream {stream} is not ACTIVE after a minute: {status:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value after `--NAME` on the command line, parsed.
///
/// # Errors
/// A message naming the flag when the value is missing or does not parse.
pub fn flag<T: std::str::FromStr>(args: &[String], name: &str) -> Result<Option<T>, BoxError> {
    let Some(at) = args.iter().position(|a| a == name) else {
        return Ok(None);
    };
    let value = args
        .get(at + 1)
        .ok_or_else(|| format!("{name} needs a value"))?;
    value
        .parse()
        .map(Some)
        .map_err(|_| format!("{name}: cannot parse {value:?}").into())
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// The README's Rust snippets, compiled (and run, unless marked `no_run`) by `cargo test --doc`
/// so the code users copy from it stays right. This crate depends on every library the README
/// shows.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
