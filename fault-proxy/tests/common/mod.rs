//! Helpers shared by the fault-proxy integration tests.
#![allow(dead_code)] // each test file uses a different subset

use std::future::Future;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use integration_tests::kinesis_client_at;

/// How long a poll waits for a condition before the test fails.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(10);

/// A client for `endpoint` with the standard retry strategy limited to `max_attempts`
/// attempts (1 = no retries) and a short backoff, so retrying tests stay fast.
pub async fn client_with_attempts(endpoint: &str, max_attempts: u32) -> Client {
    let base = kinesis_client_at(endpoint).await;
    let config = base
        .config()
        .to_builder()
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(max_attempts)
                .with_initial_backoff(Duration::from_millis(5))
                .with_max_backoff(Duration::from_millis(50)),
        )
        .build();
    Client::from_conf(config)
}

/// `count` entries with partition keys `{prefix}-{i}` and data `{prefix}-data-{i}`.
pub fn entries(prefix: &str, count: usize) -> Vec<PutRecordsRequestEntry> {
    (0..count)
        .map(|i| {
            PutRecordsRequestEntry::builder()
                .partition_key(format!("{prefix}-{i}"))
                .data(Blob::new(format!("{prefix}-data-{i}")))
                .build()
                .expect("complete entry")
        })
        .collect()
}

/// Polls `condition` every 10 ms until it holds.
///
/// # Panics
///
/// After [`POLL_TIMEOUT`], with `what` in the message.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + POLL_TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Awaits `future`, failing the test after [`POLL_TIMEOUT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(POLL_TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {POLL_TIMEOUT:?}"))
}

/// How the SDK classified a dispatch failure (the request got no HTTP response): `"io"`,
/// `"timeout"`, `"user"`, `"other(TransientError)"` and so on; `None` for any other error.
pub fn dispatch_failure<E, R>(err: &aws_sdk_kinesis::error::SdkError<E, R>) -> Option<String> {
    match err {
        aws_sdk_kinesis::error::SdkError::DispatchFailure(failure) => Some(if failure.is_io() {
            "io".to_owned()
        } else if failure.is_timeout() {
            "timeout".to_owned()
        } else if failure.is_user() {
            "user".to_owned()
        } else {
            match failure.as_other() {
                Some(kind) => format!("other({kind:?})"),
                None => "other".to_owned(),
            }
        }),
        _ => None,
    }
}
