//! Test support for the workspace's integration tests.
//!
//! The integration tests run against local emulators: kinesis-mock for Kinesis and Amazon's
//! DynamoDB Local for the lease table. `./scripts/emulators.sh start` starts both and writes
//! their endpoints to an env file; `./scripts/test.sh` does that (and everything else) for a
//! whole run. This crate finds the emulators from the `AWS_ENDPOINT_URL_KINESIS` /
//! `AWS_ENDPOINT_URL_DYNAMODB` environment variables or, when those are absent, from the env
//! file, and builds SDK clients for them.
//!
//! Tests never skip silently: when an emulator (or the Python venv used for cross-checks
//! against the official aggregation library) is missing, the helpers panic with a message that
//! says how to get it.
//!
//! Everything here is test support: failures are reported by panicking with a clear message.
#![warn(missing_docs)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_config::Region;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};
use aws_sdk_kinesis::config::Credentials;
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::types::{Record, ShardIteratorType, StreamStatus};

pub mod chaos;
pub mod cloudwatch;
pub mod h2c;
pub mod java_kcl;
pub mod relay;

/// The region every test client uses (the emulators accept any; one region keeps them in one
/// namespace).
pub const REGION: &str = "us-east-1";

/// Dummy access key id used by the test clients.
///
/// It must not be a 12-digit number (kinesis-mock would take it as an account id) and must be
/// letters and digits only (DynamoDB Local rejects anything else as an invalid key).
pub const ACCESS_KEY_ID: &str = "testingAccessKey";

/// Dummy secret access key used by the test clients.
pub const SECRET_ACCESS_KEY: &str = "testing-secret";

/// Environment variable naming the Kinesis endpoint (also read by the AWS SDKs themselves).
pub const KINESIS_ENDPOINT_VAR: &str = "AWS_ENDPOINT_URL_KINESIS";

/// Environment variable naming the DynamoDB endpoint (also read by the AWS SDKs themselves).
pub const DYNAMODB_ENDPOINT_VAR: &str = "AWS_ENDPOINT_URL_DYNAMODB";

/// How long [`create_stream`] and [`create_table`] wait for ACTIVE.
pub const ACTIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// Interval between polls while waiting for a resource or for more records.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

const EMULATOR_ADVICE: &str =
    "run `./scripts/emulators.sh start` (or the whole suite with `./scripts/test.sh`)";

/// The workspace root (the parent of this crate's directory).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .unwrap_or_else(|| panic!("{} has no parent directory", manifest.display()))
        .to_path_buf()
}

/// The emulators' cache directory: `$KINESIS_RS_CACHE_DIR`, or `<repo>/.cache/emulators`
/// (the same rule as `scripts/emulators.sh`).
pub fn emulator_cache_dir() -> PathBuf {
    match std::env::var_os("KINESIS_RS_CACHE_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                // The script resolves a relative path against its caller's directory; cargo
                // runs tests from the crate directory, so the repo root is the best guess.
                repo_root().join(dir)
            }
        }
        _ => repo_root().join(".cache").join("emulators"),
    }
}

/// The env file written by `./scripts/emulators.sh start`.
pub fn emulator_env_file() -> PathBuf {
    emulator_cache_dir().join("run").join("env")
}

/// Parses the `export KEY=VALUE` lines of an env file (blank lines and `#` comments are
/// skipped; matching single or double quotes around the value are removed).
pub fn parse_env_file(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
            let (key, value) = line.split_once('=')?;
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            Some((key.trim().to_owned(), value.to_owned()))
        })
        .collect()
}

/// Panics with the "emulator not found" advice and `detail`.
fn no_emulator(service: &str, detail: std::fmt::Arguments<'_>) -> ! {
    panic!("{service} emulator not found: {EMULATOR_ADVICE}. {detail}")
}

/// The service whose endpoint environment variable is `var`, for messages.
fn service_of(var: &str) -> &'static str {
    if var == DYNAMODB_ENDPOINT_VAR {
        "DynamoDB"
    } else {
        "Kinesis"
    }
}

/// The endpoint URL in environment variable `var`, or else in the emulators' env file.
///
/// # Panics
///
/// When neither has it: the emulators are not running.
pub fn endpoint_url(var: &str) -> String {
    if let Ok(url) = std::env::var(var)
        && !url.trim().is_empty()
    {
        return url.trim().to_owned();
    }
    let file = emulator_env_file();
    let text = std::fs::read_to_string(&file).unwrap_or_else(|err| {
        no_emulator(
            service_of(var),
            format_args!(
                "${var} is not set and {} is unreadable: {err}",
                file.display()
            ),
        )
    });
    parse_env_file(&text).remove(var).unwrap_or_else(|| {
        no_emulator(
            service_of(var),
            format_args!(
                "${var} is not set and {} does not define it",
                file.display()
            ),
        )
    })
}

/// `host:port` of an `http://` or `https://` URL (default ports 80 / 443).
fn host_port(url: &str) -> String {
    let (rest, default_port) = if let Some(rest) = url.strip_prefix("http://") {
        (rest, 80)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (rest, 443)
    } else {
        panic!("endpoint URL {url:?} is not http:// or https://");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let has_port = match authority.rsplit_once(':') {
        // `[::1]` alone has colons but no port.
        Some((_, port)) => !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    };
    if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:{default_port}")
    }
}

/// Panics with the emulator advice unless something accepts TCP connections at `url`.
async fn ensure_reachable(var: &str, url: &str) {
    let addr = host_port(url);
    let connect = tokio::net::TcpStream::connect(addr.as_str());
    match tokio::time::timeout(Duration::from_secs(2), connect).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => no_emulator(
            service_of(var),
            format_args!("{url} (from ${var}) refuses connections: {err}"),
        ),
        Err(_) => no_emulator(
            service_of(var),
            format_args!("{url} (from ${var}) did not accept a connection within 2 s"),
        ),
    }
}

async fn sdk_config(var: &str) -> aws_config::SdkConfig {
    let url = endpoint_url(var);
    ensure_reachable(var, &url).await;
    config_loader(&url).load().await
}

/// The SDK configuration every test client starts from: the test region, the dummy
/// credentials, and `endpoint`.
pub(crate) fn config_loader(endpoint: &str) -> aws_config::ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            None,
            None,
            "integration-tests",
        ))
        .endpoint_url(endpoint)
}

/// A Kinesis client for the local emulator (kinesis-mock).
///
/// # Panics
///
/// When the emulator is not configured or not reachable; the message says how to start it.
pub async fn kinesis_client() -> aws_sdk_kinesis::Client {
    aws_sdk_kinesis::Client::new(&sdk_config(KINESIS_ENDPOINT_VAR).await)
}

/// A Kinesis client for the endpoint at `endpoint` (e.g. a fault-injecting proxy), with the
/// same region and dummy credentials as [`kinesis_client`].
///
/// The endpoint is set in code, so it wins over `$AWS_ENDPOINT_URL_KINESIS`. Nothing is
/// checked: the first call fails if nothing listens there.
pub async fn kinesis_client_at(endpoint: &str) -> aws_sdk_kinesis::Client {
    aws_sdk_kinesis::Client::new(&config_loader(endpoint).load().await)
}

/// A DynamoDB client for the local emulator (DynamoDB Local).
///
/// # Panics
///
/// When the emulator is not configured or not reachable; the message says how to start it.
pub async fn dynamodb_client() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&sdk_config(DYNAMODB_ENDPOINT_VAR).await)
}

/// `prefix` followed by `-` and 12 random hex digits (from a v4 UUID).
///
/// Valid as a stream name and as a table name when `prefix` is made of letters, digits, `-`,
/// `_` and `.` and is at most 115 characters long.
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..12])
}

/// Creates a provisioned stream with `shards` shards and waits until it is ACTIVE.
///
/// # Panics
///
/// When the stream cannot be created or is not ACTIVE within [`ACTIVE_TIMEOUT`].
pub async fn create_stream(client: &aws_sdk_kinesis::Client, name: &str, shards: i32) {
    client
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .unwrap_or_else(|err| panic!("CreateStream {name} ({shards} shards) failed: {err:?}"));
    wait_for_stream_active(client, name).await;
}

/// Waits until stream `name` is ACTIVE (polls DescribeStreamSummary; "not found" counts as not
/// yet created).
///
/// # Panics
///
/// When the stream is not ACTIVE within [`ACTIVE_TIMEOUT`] or DescribeStreamSummary fails.
pub async fn wait_for_stream_active(client: &aws_sdk_kinesis::Client, name: &str) {
    let status = || async move {
        let out = client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await;
        out.map(|out| {
            out.stream_description_summary
                .map(|summary| summary.stream_status)
        })
    };
    wait_until_active(Resource::Stream(name), StreamStatus::Active, status).await;
}

/// A stream or a table being created, as [`wait_until_active`] names it.
enum Resource<'a> {
    Stream(&'a str),
    Table(&'a str),
}

/// Polls `describe` (the resource's status, `None` when it has none yet) until it says `active`;
/// a ResourceNotFoundException counts as not yet created.
///
/// # Panics
///
/// When the status is not `active` within [`ACTIVE_TIMEOUT`] or `describe` fails otherwise.
async fn wait_until_active<S, E, F, Fut>(resource: Resource<'_>, active: S, mut describe: F)
where
    S: PartialEq + std::fmt::Debug,
    E: ProvideErrorMetadata + std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<S>, E>>,
{
    let (kind, call, name) = match resource {
        Resource::Stream(name) => ("stream", "DescribeStreamSummary", name),
        Resource::Table(name) => ("table", "DescribeTable", name),
    };
    let deadline = Instant::now() + ACTIVE_TIMEOUT;
    let mut last_status = None;
    loop {
        match describe().await {
            Ok(status) => {
                if status.as_ref() == Some(&active) {
                    return;
                }
                last_status = status;
            }
            Err(err) if err.code() == Some("ResourceNotFoundException") => {}
            Err(err) => panic!("{call} {name} failed: {err:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "{kind} {name} not ACTIVE after {ACTIVE_TIMEOUT:?} (last status: {last_status:?})"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Deletes stream `name` (and its consumers), ignoring every error: for test cleanup.
pub async fn delete_stream(client: &aws_sdk_kinesis::Client, name: &str) {
    let _ = client
        .delete_stream()
        .stream_name(name)
        .enforce_consumer_deletion(true)
        .send()
        .await;
}

/// Creates a PAY_PER_REQUEST table whose key is the string hash key `leaseKey` (the KCL lease
/// table's key) and waits until it is ACTIVE.
///
/// # Panics
///
/// When the table cannot be created or is not ACTIVE within [`ACTIVE_TIMEOUT`].
pub async fn create_table(client: &aws_sdk_dynamodb::Client, name: &str) {
    let attribute = AttributeDefinition::builder()
        .attribute_name("leaseKey")
        .attribute_type(ScalarAttributeType::S)
        .build()
        .unwrap_or_else(|err| panic!("bad attribute definition: {err}"));
    let key = KeySchemaElement::builder()
        .attribute_name("leaseKey")
        .key_type(KeyType::Hash)
        .build()
        .unwrap_or_else(|err| panic!("bad key schema: {err}"));
    client
        .create_table()
        .table_name(name)
        .attribute_definitions(attribute)
        .key_schema(key)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap_or_else(|err| panic!("CreateTable {name} failed: {err:?}"));

    let status = || async move {
        let out = client.describe_table().table_name(name).send().await;
        out.map(|out| out.table.and_then(|table| table.table_status))
    };
    wait_until_active(Resource::Table(name), TableStatus::Active, status).await;
}

/// Deletes table `name`, ignoring every error: for test cleanup.
pub async fn delete_table(client: &aws_sdk_dynamodb::Client, name: &str) {
    let _ = client.delete_table().table_name(name).send().await;
}

/// Splits `shard` at the middle of its hash range and waits until the stream is ACTIVE again.
pub async fn split_in_half(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    shard: &aws_sdk_kinesis::types::Shard,
) {
    let range = shard.hash_key_range().expect("the shard has a hash range");
    let start: u128 = range.starting_hash_key().parse().expect("decimal hash key");
    let end: u128 = range.ending_hash_key().parse().expect("decimal hash key");
    client
        .split_shard()
        .stream_name(stream)
        .shard_to_split(shard.shard_id())
        .new_starting_hash_key((start + (end - start) / 2).to_string())
        .send()
        .await
        .expect("SplitShard");
    wait_for_stream_active(client, stream).await;
}

/// Merges two adjacent shards and waits until the stream is ACTIVE again.
pub async fn merge_shards(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    first: &str,
    second: &str,
) {
    client
        .merge_shards()
        .stream_name(stream)
        .shard_to_merge(first)
        .adjacent_shard_to_merge(second)
        .send()
        .await
        .expect("MergeShards");
    wait_for_stream_active(client, stream).await;
}

/// The open children of `parent` (after a split), in listing order.
pub async fn children_of(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    parent: &str,
) -> Vec<aws_sdk_kinesis::types::Shard> {
    list_shards(client, stream)
        .await
        .into_iter()
        .filter(|s| s.parent_shard_id() == Some(parent))
        .collect()
}

/// Every shard of `stream` (ListShards, all pages), as the SDK describes them.
///
/// # Panics
///
/// When ListShards fails.
pub async fn list_shards(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Vec<aws_sdk_kinesis::types::Shard> {
    kinesis_common::list_shards_as_sent(
        client,
        &kinesis_common::StreamId::from(stream),
        &kinesis_common::ShardListing::All,
    )
    .await
    .unwrap_or_else(|err| panic!("ListShards {stream} failed: {err}"))
}

/// Consecutive empty GetRecords answers after which [`read_all_records`] stops reading a shard
/// even though the service does not (yet) report it caught up.
pub const MAX_EMPTY_POLLS: u32 = 20;

/// Every record currently in `stream`: all shards (open and closed), from TRIM_HORIZON, shard
/// by shard in ListShards order, each shard's records in sequence order.
///
/// A shard is finished when a GetRecords call returns no records while `MillisBehindLatest` is
/// 0, when it has no next iterator (a closed shard's end), or after [`MAX_EMPTY_POLLS`]
/// consecutive empty answers. Empty answers are followed by a [`POLL_INTERVAL`] pause; reads
/// that return records continue at once.
///
/// # Panics
///
/// When a Kinesis call fails.
pub async fn read_all_records(client: &aws_sdk_kinesis::Client, stream: &str) -> Vec<Record> {
    read_records_by_shard(client, stream)
        .await
        .into_iter()
        .flat_map(|(_, records)| records)
        .collect()
}

/// Like [`read_all_records`], keeping each shard's records apart: `(shard id, records)` in
/// ListShards order.
///
/// # Panics
///
/// When a Kinesis call fails.
pub async fn read_records_by_shard(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Vec<(String, Vec<Record>)> {
    let mut by_shard = Vec::new();
    for shard in list_shards(client, stream).await {
        let mut records = Vec::new();
        let shard_id = shard.shard_id();
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard_id)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap_or_else(|err| panic!("GetShardIterator {stream}/{shard_id} failed: {err:?}"))
            .shard_iterator()
            .map(str::to_owned);
        let mut empty_polls = 0;
        while let Some(current) = iterator.take() {
            let out = client
                .get_records()
                .shard_iterator(current)
                .send()
                .await
                .unwrap_or_else(|err| panic!("GetRecords {stream}/{shard_id} failed: {err:?}"));
            iterator = out.next_shard_iterator().map(str::to_owned);
            if out.records().is_empty() {
                if out.millis_behind_latest() == Some(0) {
                    break;
                }
                empty_polls += 1;
                if empty_polls >= MAX_EMPTY_POLLS {
                    break;
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            } else {
                empty_polls = 0;
                records.extend_from_slice(out.records());
            }
        }
        by_shard.push((shard_id.to_owned(), records));
    }
    by_shard
}

/// The Python interpreter of the test venv (which has `aws-kinesis-agg`, the official Python
/// aggregation library): `$KINESIS_RS_PYTHON`, or `<repo>/.cache/venv/bin/python`.
///
/// # Panics
///
/// When that interpreter does not exist.
pub fn python() -> PathBuf {
    let path = match std::env::var_os("KINESIS_RS_PYTHON") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => repo_root()
            .join(".cache")
            .join("venv")
            .join("bin")
            .join("python"),
    };
    assert!(
        path.exists(),
        "Python test venv not found at {}: run ./scripts/test.sh (creates the venv with \
         aws-kinesis-agg)",
        path.display()
    );
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_valid_and_distinct() {
        let a = unique_name("smoke");
        let b = unique_name("smoke");
        assert_ne!(a, b);
        assert!(a.starts_with("smoke-"));
        assert_eq!(a.len(), "smoke-".len() + 12);
        // Stream names: [a-zA-Z0-9_.-]+, 1..=128; table names: [a-zA-Z0-9_.-]+, 3..=255.
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        );
    }

    #[test]
    fn env_file_parsing() {
        let vars = parse_env_file(
            "# comment\n\nexport AWS_ENDPOINT_URL_KINESIS=http://127.0.0.1:4568\n\
             AWS_REGION='us-east-1'\nexport X=\"y z\"\n",
        );
        assert_eq!(vars["AWS_ENDPOINT_URL_KINESIS"], "http://127.0.0.1:4568");
        assert_eq!(vars["AWS_REGION"], "us-east-1");
        assert_eq!(vars["X"], "y z");
        assert_eq!(vars.len(), 3);
    }

    #[test]
    fn host_port_of_urls() {
        assert_eq!(host_port("http://127.0.0.1:4568"), "127.0.0.1:4568");
        assert_eq!(host_port("http://localhost:8000/"), "localhost:8000");
        assert_eq!(host_port("https://example.com/x"), "example.com:443");
        assert_eq!(host_port("http://[::1]:9000"), "[::1]:9000");
        assert_eq!(host_port("http://[::1]"), "[::1]:80");
    }

    #[test]
    fn missing_emulator_message() {
        let err = std::panic::catch_unwind(|| {
            no_emulator("Kinesis", format_args!("detail"));
        })
        .unwrap_err();
        let message = err.downcast_ref::<String>().unwrap();
        assert_eq!(
            message,
            "Kinesis emulator not found: run `./scripts/emulators.sh start` (or the whole suite \
             with `./scripts/test.sh`). detail"
        );
    }
}
