//! `kinesis-cat produce|consume --cloudwatch-metrics LEVEL` publishes to the CloudWatch endpoint
//! of the standard AWS settings (`AWS_ENDPOINT_URL_CLOUDWATCH`), decoded as the service does.
//! The producer's Kinesis is the fault proxy's local sink; the consumer reads kinesis-mock with
//! its leases in DynamoDB Local.

use std::io::Write;
use std::process::Stdio;

mod common;

use common::{kinesis_cat, kinesis_cat_credentials, produce_lines};
use fault_proxy::{FaultProxy, Faults, Upstream};
use integration_tests::cloudwatch::CloudWatchEndpoint;

const RECORDS: usize = 500;

async fn produce(level: &str, kinesis: &str, cloudwatch: &str) -> std::process::Output {
    let mut child =
        kinesis_cat_credentials(&["produce", "cw-stream", "--cloudwatch-metrics", level])
            .env_remove("AWS_ENDPOINT_URL")
            .env("AWS_ENDPOINT_URL_KINESIS", kinesis)
            .env("AWS_ENDPOINT_URL_CLOUDWATCH", cloudwatch)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::piped())
            .spawn()
            .expect("run kinesis-cat");
    let mut stdin = child.stdin.take().expect("stdin");
    let lines: String = (0..RECORDS).map(|i| format!("record {i}\n")).collect();
    stdin.write_all(lines.as_bytes()).expect("write lines");
    drop(stdin);
    tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("kinesis-cat ran")
}

#[tokio::test]
async fn produce_publishes_the_kpl_metrics_to_cloudwatch_at_its_level() {
    let sink = FaultProxy::start(Upstream::Sink { shards: 4 }, Faults::default())
        .await
        .expect("sink");
    let endpoint = CloudWatchEndpoint::start().await;
    for (level, detailed) in [("summary", false), ("detailed", true)] {
        let before = endpoint.calls().len();
        let output = produce(level, &sink.endpoint_url(), &endpoint.url()).await;
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let calls: Vec<_> = endpoint.calls().into_iter().skip(before).collect();
        assert!(!calls.is_empty(), "no PutMetricData call at {level}");
        assert!(calls.iter().all(|c| c.status == 200), "{calls:?}");
        assert!(
            calls
                .iter()
                .all(|c| c.namespace == "KinesisProducerLibrary")
        );
        let data: Vec<_> = calls.into_iter().flat_map(|c| c.data).collect();
        let overall_put: f64 = data
            .iter()
            .filter(|d| d.name == "UserRecordsPut" && d.dimensions.is_empty())
            .filter_map(|d| d.statistics.map(|s| s.sum))
            .sum();
        assert_eq!(overall_put, RECORDS as f64, "{data:?}");
        assert!(data.iter().any(|d| d.name == "UserRecordsPut"
            && d.dimensions == vec![("StreamName".to_owned(), "cw-stream".to_owned())]));
        assert_eq!(
            data.iter().any(|d| d.name == "UserRecordsReceived"),
            detailed,
            "UserRecordsReceived is detailed"
        );
    }
    let before = endpoint.calls().len();
    let output = produce("none", &sink.endpoint_url(), &endpoint.url()).await;
    assert!(output.status.success());
    assert_eq!(endpoint.calls().len(), before, "level none makes no call");
}

#[tokio::test]
async fn consume_publishes_the_kcl_metrics_to_cloudwatch_under_the_application() {
    let client = integration_tests::kinesis_client().await;
    let stream = integration_tests::unique_name("cat-cw-consume");
    let application = integration_tests::unique_name("cat-cw-app");
    integration_tests::create_stream(&client, &stream, 2).await;
    produce_lines(&stream, 0..120, 7, 0).await;
    let endpoint = CloudWatchEndpoint::start().await;
    let mut command = kinesis_cat(&[
        "consume",
        &stream,
        "--application",
        &application,
        "--worker-id",
        "cw-worker",
        "--from",
        "trim-horizon",
        "--idle-millis",
        "100",
        "--idle-exit",
        "2",
        "--cloudwatch-metrics",
        "summary",
    ]);
    command.env("AWS_ENDPOINT_URL_CLOUDWATCH", endpoint.url());
    // Off the test's runtime thread: the endpoint answers on it.
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("kinesis-cat consume ran");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let calls = endpoint.calls();
    assert!(!calls.is_empty(), "no PutMetricData call");
    assert!(calls.iter().all(|c| c.status == 200), "{calls:?}");
    assert!(calls.iter().all(|c| c.namespace == application));
    let data: Vec<_> = calls.into_iter().flat_map(|c| c.data).collect();
    let has = |datum: &integration_tests::cloudwatch::Datum, name: &str, value: &str| {
        datum
            .dimensions
            .iter()
            .any(|(n, v)| n == name && v == value)
    };
    // Every record once, counted per shard under the KCL's operation.
    let processed: f64 = data
        .iter()
        .filter(|d| d.name == "RecordsProcessed" && has(d, "Operation", "ProcessTask"))
        .filter(|d| d.dimensions.iter().any(|(n, _)| n == "ShardId"))
        .filter_map(|d| d.statistics.map(|s| s.sum))
        .sum();
    assert_eq!(processed, 120.0, "{data:?}");
    // The worker's lease metrics name it.
    assert!(
        data.iter()
            .any(|d| d.name == "CurrentLeases" && has(d, "WorkerIdentifier", "cw-worker")),
        "{data:?}"
    );
    // Detailed-only metrics stay home at summary.
    assert!(!data.iter().any(|d| d.name == "TotalLeases"), "{data:?}");
}
