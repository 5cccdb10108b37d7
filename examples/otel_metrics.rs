//! The producer's metrics sent to an OpenTelemetry collector (OTLP over HTTP, protobuf): the
//! libraries publish through the `metrics` facade under the KPL's and the KCL's names, so one
//! recorder that bridges the facade to an OpenTelemetry `MeterProvider` is all it takes. The
//! consumer is the same: install the recorder before building the `Scheduler`.
//!
//! ```text
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 cargo run -p kinesis-examples --example otel_metrics -- COUNT
//! ```
//!
//! The collector receives `UserRecordsReceived`, `UserRecordsPut`, `KinesisRecordsPut`,
//! `BufferingTime`, ... with the attribute `stream`, every `OTEL_METRIC_EXPORT_INTERVAL`
//! milliseconds (default 60 s) and once more at the end. The stream is `STREAM_NAME` (default
//! `otel-stream`), created with 2 shards if missing; the AWS endpoints and credentials come from
//! the standard AWS environment. `kinesis-cat produce --otlp-endpoint URL` does the same.
//!
//! Crates: `metrics-exporter-opentelemetry` (the bridge), `opentelemetry_sdk` (`metrics`),
//! `opentelemetry-otlp` (`http-proto`, `metrics`, default features off) and
//! `opentelemetry-http` (`hyper`). The hyper client needs a tokio runtime, while the SDK's
//! periodic reader exports from a thread of its own: [`OnRuntime`] runs each request on the
//! application's runtime. (`opentelemetry-otlp`'s default features take reqwest's blocking
//! client instead, with no glue but a second HTTP stack.)

use std::time::Duration;

use bytes::Bytes;
use kinesis_examples::{BoxError, ensure_stream, stream_name};
use kpl::{Producer, UserRecord};
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::metrics::PeriodicReader;

/// An OTLP HTTP client that sends from any thread through a tokio runtime.
#[derive(Debug)]
struct OnRuntime {
    client: HyperClient,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await?
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let count: u64 = match std::env::args().nth(1) {
        Some(count) => count.parse().map_err(|_| "COUNT must be a number")?,
        None => 1_000,
    };

    // The endpoint, headers and timeout come from the standard OTEL_EXPORTER_OTLP_* variables
    // (default http://localhost:4318/v1/metrics).
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_http_client(OnRuntime {
            client: HyperClient::with_default_connector(Duration::from_secs(10), None),
            runtime: tokio::runtime::Handle::current(),
        })
        .build()?;
    let (provider, recorder) = metrics_exporter_opentelemetry::Recorder::builder("otel_metrics")
        .with_meter_provider(|builder| {
            builder.with_reader(PeriodicReader::builder(exporter).build())
        })
        .build();
    // Before the producer is built: its metric handles are registered with this recorder.
    metrics::set_global_recorder(recorder)?;

    let config = aws_config::load_from_env().await;
    let stream = stream_name("otel-stream");
    ensure_stream(&aws_sdk_kinesis::Client::new(&config), &stream, 2).await?;
    let producer = Producer::builder(stream.as_str())
        .sdk_config(&config)
        .build()
        .await?;
    let mut receipts = Vec::new();
    for i in 0..count {
        receipts.push(
            producer
                .send(UserRecord::new(
                    format!("key-{}", i % 16),
                    format!("record {i}"),
                ))
                .await?,
        );
    }
    for receipt in receipts {
        receipt.await?;
    }
    producer.shutdown().await;

    // The last export, with the final totals. It blocks until sent, and the request runs on
    // this runtime: call it off the runtime's worker threads.
    tokio::task::spawn_blocking(move || provider.shutdown()).await??;
    println!("{count} records stored; metrics sent");
    Ok(())
}
