//! `kinesis-cat produce` and `consume` publishing their metrics: scraped from the Prometheus
//! endpoint (`--metrics-listen`) while they run, and received by an OTLP/HTTP endpoint of our
//! own (`--otlp-endpoint`) that decodes each ExportMetricsServiceRequest as a collector would.
//! Against kinesis-mock and DynamoDB Local, configured through the standard AWS environment.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use integration_tests::{
    DYNAMODB_ENDPOINT_VAR, KINESIS_ENDPOINT_VAR, create_stream, endpoint_url, kinesis_client,
    unique_name,
};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use prost::Message;

/// How long a test waits for a value to show before it fails.
const PATIENCE: Duration = Duration::from_secs(60);

fn kinesis_cat(args: &[&str]) -> Command {
    let mut command = common::kinesis_cat(args);
    command.env_remove("OTEL_SERVICE_NAME");
    command
}

/// Reads the child's stderr on a thread: returns the metrics address it prints first, and
/// keeps the rest for a failure message.
fn metrics_address(child: &mut Child) -> (SocketAddr, Arc<Mutex<String>>) {
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let kept = log.clone();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("metrics on http://")
                && let Some(addr) = rest.strip_suffix("/metrics")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(addr.parse::<SocketAddr>().expect("an address"));
            }
            let mut kept = kept.lock().expect("log");
            kept.push_str(&line);
            kept.push('\n');
        }
    });
    let addr = rx
        .recv_timeout(PATIENCE)
        .unwrap_or_else(|_| panic!("no metrics address on stderr: {}", log.lock().expect("log")));
    (addr, log)
}

/// GET http://addr/path over plain HTTP/1.1: the status line's code and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connects");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status code");
    // The body may come chunked: the lines we look for are whole within a chunk.
    (code, body.to_owned())
}

/// The sum of every sample of `name` whose labels include `label` (`stream="..."`), in the
/// Prometheus text format.
fn prometheus_sum(text: &str, name: &str, label: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let Some(rest) = rest.strip_prefix('{') else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        if labels.split(',').any(|l| l == label)
            && let Ok(value) = value.trim().parse::<f64>()
        {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// Scrapes until `name` summed over `label` reaches `expected`; returns the last scrape.
fn scrape_until(
    addr: SocketAddr,
    name: &str,
    label: &str,
    expected: f64,
    log: &Mutex<String>,
) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (code, text) = get(addr, "/metrics");
        assert_eq!(code, 200, "{text}");
        if prometheus_sum(&text, name, label) == Some(expected) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{{{label}}} never reached {expected}:\n{text}\nstderr:\n{}",
            log.lock().expect("log")
        );
        // Polling a live process: the wait is for its next flush, not a fixed delay.
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn lines(count: usize) -> String {
    (0..count).map(|i| format!("record {i}\n")).collect()
}

#[tokio::test]
async fn produce_serves_its_metrics_to_prometheus_while_it_runs() {
    let client = kinesis_client().await;
    let stream = unique_name("cat-metrics-prom");
    create_stream(&client, &stream, 2).await;
    let mut child = kinesis_cat(&["produce", &stream, "--metrics-listen", "127.0.0.1:0"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kinesis-cat starts");
    let (addr, log) = metrics_address(&mut child);
    // Stdin stays open: the command is still running when it is scraped.
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(lines(300).as_bytes()).expect("written");
    stdin.flush().expect("flushed");

    let label = format!("stream=\"{stream}\"");
    let text = scrape_until(addr, "UserRecordsPut", &label, 300.0, &log);
    assert_eq!(
        prometheus_sum(&text, "UserRecordsReceived", &label),
        Some(300.0)
    );
    let kinesis_records = prometheus_sum(&text, "KinesisRecordsPut", &label).expect("present");
    assert!(
        (1.0..300.0).contains(&kinesis_records),
        "aggregated: {kinesis_records}"
    );
    assert!(
        text.contains("UserRecordsPending{"),
        "the pending gauge: {text}"
    );
    assert!(
        text.contains("RequestTime{"),
        "the request time summary: {text}"
    );
    assert_eq!(get(addr, "/").0, 404);

    drop(stdin);
    let output = child.wait_with_output().expect("kinesis-cat ends");
    assert!(output.status.success(), "{}", log.lock().expect("log"));
}

#[tokio::test]
async fn consume_serves_its_metrics_to_prometheus_while_it_runs() {
    let client = kinesis_client().await;
    let stream = unique_name("cat-metrics-consume");
    create_stream(&client, &stream, 2).await;
    common::produce_lines(&stream, 0..200, 13, 0).await;
    let application = unique_name("cat-metrics-app");
    let mut child = kinesis_cat(&[
        "consume",
        &stream,
        "--application",
        &application,
        "--from",
        "trim-horizon",
        "--idle-millis",
        "100",
        "--failover-seconds",
        "2",
        "--metrics-listen",
        "127.0.0.1:0",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .spawn()
    .expect("kinesis-cat starts");
    let (addr, log) = metrics_address(&mut child);

    let label = format!("stream=\"{stream}\"");
    let text = scrape_until(addr, "RecordsProcessed", &label, 200.0, &log);
    assert!(
        text.contains("MillisBehindLatest{"),
        "the per-shard lag gauge: {text}"
    );
    assert!(
        text.contains("CurrentLeases{"),
        "the worker's leases gauge: {text}"
    );
    child.kill().expect("stopped");
    let _ = child.wait();
}

/// What an OTLP/HTTP endpoint received, decoded.
#[derive(Default)]
struct Received {
    requests: Vec<ExportMetricsServiceRequest>,
    content_types: Vec<String>,
}

/// An OTLP/HTTP metrics endpoint on 127.0.0.1:0 that keeps what it is sent.
async fn otlp_endpoint() -> (SocketAddr, Arc<Mutex<Received>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bound");
    let addr = listener.local_addr().expect("address");
    let received = Arc::new(Mutex::new(Received::default()));
    let kept = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let kept = kept.clone();
                    async move {
                        let status = if request.method() == hyper::Method::POST
                            && request.uri().path() == "/v1/metrics"
                        {
                            let content_type = request
                                .headers()
                                .get(http::header::CONTENT_TYPE)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let body = request.into_body().collect().await?.to_bytes();
                            match ExportMetricsServiceRequest::decode(body) {
                                Ok(decoded) => {
                                    let mut kept = kept.lock().expect("received");
                                    kept.requests.push(decoded);
                                    kept.content_types.push(content_type);
                                    StatusCode::OK
                                }
                                Err(_) => StatusCode::BAD_REQUEST,
                            }
                        } else {
                            StatusCode::NOT_FOUND
                        };
                        // An empty ExportMetricsServiceResponse: full success.
                        let mut response = Response::new(Full::new(Bytes::new()));
                        *response.status_mut() = status;
                        response.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/x-protobuf"),
                        );
                        Ok::<_, hyper::Error>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, received)
}

fn string_value(value: &Option<AnyValue>) -> Option<&str> {
    match value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

fn has_attribute(attributes: &[KeyValue], key: &str, value: &str) -> bool {
    attributes
        .iter()
        .any(|kv| kv.key == key && string_value(&kv.value) == Some(value))
}

/// The last value each sum `name` reported for stream `stream`, summed over its data points
/// (cumulative sums: the last export holds the totals).
fn last_sum(received: &Received, name: &str, stream: &str) -> Option<f64> {
    let mut last = None;
    for request in &received.requests {
        for scope in request
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
        {
            for metric in scope.metrics.iter().filter(|m| m.name == name) {
                let Some(metric::Data::Sum(sum)) = &metric.data else {
                    continue;
                };
                let total: f64 = sum
                    .data_points
                    .iter()
                    .filter(|p| has_attribute(&p.attributes, "stream", stream))
                    .map(|p| match p.value {
                        Some(number_data_point::Value::AsInt(v)) => v as f64,
                        Some(number_data_point::Value::AsDouble(v)) => v,
                        None => 0.0,
                    })
                    .sum();
                last = Some(total);
            }
        }
    }
    last
}

fn metric_names(received: &Received) -> Vec<String> {
    let mut names: Vec<String> = received
        .requests
        .iter()
        .flat_map(|r| &r.resource_metrics)
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|m| m.name.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

// The endpoint's tasks run on other threads while the test blocks on the child and its scrapes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_sends_its_metrics_to_an_otlp_endpoint_and_prometheus_at_once() {
    let client = kinesis_client().await;
    let stream = unique_name("cat-metrics-otlp");
    create_stream(&client, &stream, 2).await;
    let (otlp, received) = otlp_endpoint().await;
    let endpoint = format!("http://{otlp}");
    let mut child = kinesis_cat(&[
        "produce",
        &stream,
        "--otlp-endpoint",
        &endpoint,
        "--otlp-interval-ms",
        "200",
        "--metrics-listen",
        "127.0.0.1:0",
    ])
    .stdin(Stdio::piped())
    .spawn()
    .expect("kinesis-cat starts");
    let (addr, log) = metrics_address(&mut child);
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(lines(250).as_bytes()).expect("written");
    stdin.flush().expect("flushed");

    // Both recorders see every update: Prometheus shows the total while the command runs...
    let label = format!("stream=\"{stream}\"");
    scrape_until(addr, "UserRecordsPut", &label, 250.0, &log);
    // ...and the periodic export sends it without waiting for the end.
    let deadline = Instant::now() + PATIENCE;
    while last_sum(
        &received.lock().expect("received"),
        "UserRecordsPut",
        &stream,
    ) != Some(250.0)
    {
        assert!(
            Instant::now() < deadline,
            "no periodic export with the total: {:?}\nstderr:\n{}",
            metric_names(&received.lock().expect("received")),
            log.lock().expect("log")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    drop(stdin);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("joined")
        .expect("kinesis-cat ends");
    assert!(status.success(), "{}", log.lock().expect("log"));

    let received = received.lock().expect("received");
    assert!(
        received
            .content_types
            .iter()
            .all(|t| t == "application/x-protobuf"),
        "{:?}",
        received.content_types
    );
    let names = metric_names(&received);
    for name in [
        "UserRecordsReceived",
        "UserRecordsPut",
        "KinesisRecordsPut",
        "UserRecordsPending",
        "RequestTime",
        "BufferingTime",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
    }
    assert_eq!(
        last_sum(&received, "UserRecordsReceived", &stream),
        Some(250.0)
    );
    assert_eq!(last_sum(&received, "UserRecordsPut", &stream), Some(250.0));
    let last = received.requests.last().expect("an export");
    let resource = last.resource_metrics[0]
        .resource
        .as_ref()
        .expect("a resource");
    assert!(
        has_attribute(&resource.attributes, "service.name", "kinesis-cat"),
        "{:?}",
        resource.attributes
    );
}

/// `kinesis-cat multilang` takes the Java daemon's command line, so its Prometheus endpoint is
/// set in the environment: `KCL_MULTILANG_METRICS_LISTEN`.
#[tokio::test]
async fn the_multilang_daemon_serves_its_metrics_to_prometheus() {
    let client = kinesis_client().await;
    let stream = unique_name("cat-metrics-ml");
    create_stream(&client, &stream, 2).await;
    for i in 0..40 {
        client
            .put_record()
            .stream_name(&stream)
            .partition_key(format!("key-{i}"))
            .data(aws_sdk_kinesis::primitives::Blob::new(format!("data-{i}")))
            .send()
            .await
            .expect("PutRecord");
    }
    let application = unique_name("cat-metrics-ml-app");
    let dir = std::env::temp_dir().join(&application);
    std::fs::create_dir_all(&dir).expect("a work dir");
    // The multilang tests' processor: it speaks the protocol and checkpoints every batch.
    let recorder = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/multilang/children/recorder.py");
    let properties = format!(
        "executableName = {} {}\n\
         streamName = {stream}\n\
         applicationName = {application}\n\
         AwsCredentialsProvider = DefaultCredentialsProvider\n\
         regionName = {}\n\
         kinesisEndpoint = {}\n\
         dynamoDBEndpoint = {}\n\
         initialPositionInStream = TRIM_HORIZON\n\
         idleTimeBetweenReadsInMillis = 100\n\
         failoverTimeMillis = 3000\n",
        integration_tests::python().display(),
        recorder.display(),
        integration_tests::REGION,
        endpoint_url(KINESIS_ENDPOINT_VAR),
        endpoint_url(DYNAMODB_ENDPOINT_VAR),
    );
    std::fs::write(dir.join("app.properties"), properties).expect("properties written");
    let mut child = kinesis_cat(&["multilang", "app.properties"])
        .current_dir(&dir)
        .env("EVENTS", dir.join("events.jsonl"))
        .env("KCL_MULTILANG_METRICS_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("kinesis-cat starts");
    let (addr, log) = metrics_address(&mut child);

    let label = format!("stream=\"{stream}\"");
    let text = scrape_until(addr, "RecordsProcessed", &label, 40.0, &log);
    assert!(
        text.contains("CurrentLeases{"),
        "the worker's leases gauge: {text}"
    );
    // SIGTERM: the daemon's graceful shutdown, which ends its record processors too.
    let terminated = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(terminated.success());
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A collector that accepts connections and never answers: every record is still stored, and
/// the command ends soon after its input does (the last export gives up after 5 s).
#[tokio::test]
async fn a_silent_otlp_endpoint_neither_loses_records_nor_holds_the_exit() {
    let client = kinesis_client().await;
    let stream = unique_name("cat-metrics-silent");
    create_stream(&client, &stream, 2).await;
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bound");
    let addr = silent.local_addr().expect("address");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            held.push(stream);
        }
    });
    let endpoint = format!("http://{addr}");
    let started = Instant::now();
    let mut child = kinesis_cat(&[
        "produce",
        &stream,
        "--otlp-endpoint",
        &endpoint,
        "--otlp-interval-ms",
        "100",
    ])
    .stdin(Stdio::piped())
    .spawn()
    .expect("kinesis-cat starts");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(lines(200).as_bytes()).expect("written");
    drop(stdin);
    let output = child.wait_with_output().expect("kinesis-cat ends");
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .expect("a summary line"),
    )
    .expect("JSON summary");
    assert_eq!(summary["succeeded"], 200, "{summary}");
    assert!(
        elapsed < Duration::from_secs(20),
        "took {elapsed:?}: {stderr}"
    );
    assert!(
        stderr.contains("the last OTLP metrics export failed"),
        "{stderr}"
    );
}
