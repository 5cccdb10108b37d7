//! Where `produce` and `consume` publish their metrics: a Prometheus endpoint
//! (`--metrics-listen`) and an OpenTelemetry collector over OTLP/HTTP (`--otlp-endpoint`,
//! feature `otlp`).
//!
//! The libraries publish through the `metrics` facade under the KPL's and the KCL's names
//! (`UserRecordsPut`, `RecordsProcessed`, ...); this module only installs the recorder that
//! sees them, before the producer or the consumer is built, and serves or sends what it holds.
//! Both flags together fan each update out to both.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tracing::{debug, warn};

use crate::jsonl::CliError;

/// How often the Prometheus recorder folds its histograms' samples into the summaries (what
/// the crate's own listener does every 5 s): without it samples pile up between scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The metrics flags shared by `produce` and `consume`.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Metrics")]
pub(crate) struct MetricsArgs {
    /// Serve the producer's or consumer's metrics in the Prometheus text format at
    /// http://ADDR/metrics while the command runs (e.g. 0.0.0.0:9090; port 0 takes a free
    /// port). The address is printed on stderr: "metrics on http://ADDR/metrics".
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Send the metrics to an OpenTelemetry collector over OTLP/HTTP (protobuf): its base
    /// address, as in OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://localhost:4318; /v1/metrics is
    /// appended unless the path already ends with it). Plain HTTP only. Sent every
    /// --otlp-interval-ms and once more when the command ends (a collector that does not
    /// answer delays the end by at most 5 s); failed exports are logged, and records never
    /// wait for an export.
    #[cfg(feature = "otlp")]
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Milliseconds between OTLP exports (default: OTEL_METRIC_EXPORT_INTERVAL, else 60000).
    #[cfg(feature = "otlp")]
    #[arg(long, value_name = "MILLIS", requires = "otlp_endpoint")]
    otlp_interval_ms: Option<u64>,
}

/// What runs while the command does; [`MetricsExport::finish`] sends the last OTLP export.
#[derive(Debug, Default)]
pub(crate) struct MetricsExport {
    #[cfg(feature = "otlp")]
    otlp: Option<opentelemetry_sdk::metrics::SdkMeterProvider>,
}

/// Installs the global `metrics` recorder the flags ask for (none without flags) and starts
/// the endpoint on `runtime`. Call before building the producer or the consumer: their
/// handles are registered with the recorder present at that time.
pub(crate) fn start(runtime: &Runtime, args: &MetricsArgs) -> Result<MetricsExport, CliError> {
    start_with(runtime, args, None)
}

/// [`start`], with one more recorder fed alongside the flags' (`--cloudwatch-metrics`).
pub(crate) fn start_with(
    runtime: &Runtime,
    args: &MetricsArgs,
    extra: Option<Box<dyn metrics::Recorder + Send + Sync>>,
) -> Result<MetricsExport, CliError> {
    let mut recorders: Vec<Box<dyn metrics::Recorder + Send + Sync>> = Vec::new();
    recorders.extend(extra);
    #[cfg_attr(not(feature = "otlp"), allow(unused_mut))]
    let mut export = MetricsExport::default();
    if let Some(addr) = args.metrics_listen {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let listener = runtime
            .block_on(TcpListener::bind(addr))
            .map_err(|e| CliError::Usage(format!("--metrics-listen {addr}: {e}")))?;
        let bound = listener.local_addr()?;
        eprintln!("metrics on http://{bound}/metrics");
        runtime.spawn(serve(listener, handle.clone()));
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(UPKEEP_INTERVAL);
            loop {
                ticks.tick().await;
                handle.run_upkeep();
            }
        });
        recorders.push(Box::new(recorder));
    }
    #[cfg(feature = "otlp")]
    if let Some(endpoint) = &args.otlp_endpoint {
        let interval = args.otlp_interval_ms.map(Duration::from_millis);
        let (provider, recorder) = otlp::recorder(runtime, endpoint, interval)?;
        export.otlp = Some(provider);
        recorders.push(Box::new(recorder));
    }
    let installed = match recorders.len() {
        0 => return Ok(export),
        1 => match recorders.pop() {
            Some(recorder) => metrics::set_global_recorder(recorder).is_ok(),
            None => true,
        },
        _ => {
            let fanout = recorders
                .into_iter()
                .fold(
                    metrics_util::layers::FanoutBuilder::default(),
                    |fanout, r| fanout.add_recorder(r),
                )
                .build();
            metrics::set_global_recorder(fanout).is_ok()
        }
    };
    if !installed {
        // The binary installs one recorder per run: a second would be a programming error.
        warn!("a metrics recorder was already installed; the metrics flags are ignored");
    }
    Ok(export)
}

/// The multilang daemon's `--metrics-listen`: its command line is the Java daemon's, so the
/// setting comes from the environment.
pub(crate) const DAEMON_METRICS_LISTEN: &str = "KCL_MULTILANG_METRICS_LISTEN";
/// The multilang daemon's `--otlp-endpoint` (the interval: `OTEL_METRIC_EXPORT_INTERVAL`).
#[cfg(feature = "otlp")]
pub(crate) const DAEMON_OTLP_ENDPOINT: &str = "KCL_MULTILANG_OTLP_ENDPOINT";

/// Runs the multilang daemon (`run`) with the metrics endpoints its environment asks for,
/// served from a runtime thread of their own (the daemon builds its runtime inside `run`).
pub(crate) fn with_daemon_metrics(
    run: impl FnOnce() -> Result<(), CliError>,
) -> Result<(), CliError> {
    let setting = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let metrics_listen = setting(DAEMON_METRICS_LISTEN)
        .map(|addr| {
            addr.trim()
                .parse::<SocketAddr>()
                .map_err(|e| CliError::Usage(format!("{DAEMON_METRICS_LISTEN}={addr}: {e}")))
        })
        .transpose()?;
    let args = MetricsArgs {
        metrics_listen,
        #[cfg(feature = "otlp")]
        otlp_endpoint: setting(DAEMON_OTLP_ENDPOINT),
        #[cfg(feature = "otlp")]
        otlp_interval_ms: None,
    };
    #[cfg(feature = "otlp")]
    let wanted = args.metrics_listen.is_some() || args.otlp_endpoint.is_some();
    #[cfg(not(feature = "otlp"))]
    let wanted = args.metrics_listen.is_some();
    if !wanted {
        return run();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("metrics")
        .enable_all()
        .build()?;
    let export = start(&runtime, &args)?;
    let result = run();
    export.finish();
    result
}

impl MetricsExport {
    /// Sends what the OTLP exporter has not sent yet and stops it. Blocks: call it outside
    /// the runtime's tasks, while the runtime still runs (the export goes through it).
    pub(crate) fn finish(self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.otlp
            && let Err(error) = provider.shutdown()
        {
            warn!(%error, "the last OTLP metrics export failed");
        }
    }
}

/// Serves GET /metrics on every connection until the process ends.
async fn serve(listener: TcpListener, handle: PrometheusHandle) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors and the like: try again rather than go silent.
                warn!(%error, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let handle = handle.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&request, &handle)) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%error, "metrics endpoint: connection ended");
            }
        });
    }
}

fn respond(request: &Request<Incoming>, handle: &PrometheusHandle) -> Response<Full<Bytes>> {
    let (status, content_type, body) =
        if request.method() == hyper::Method::GET && request.uri().path() == "/metrics" {
            (
                StatusCode::OK,
                "text/plain; version=0.0.4",
                Bytes::from(handle.render()),
            )
        } else {
            (
                StatusCode::NOT_FOUND,
                "text/plain",
                Bytes::from_static(b"GET /metrics\n"),
            )
        };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(feature = "otlp")]
mod otlp {
    use std::time::Duration;

    use bytes::Bytes;
    use http::{Request, Response};
    use opentelemetry_http::hyper::HyperClient;
    use opentelemetry_http::{HttpClient, HttpError};
    use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
    use tokio::runtime::{Handle, Runtime};

    use crate::jsonl::CliError;

    /// How long one export may take before it is given up (the SDK's default is 10 s).
    const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

    /// The SDK's periodic reader exports from a thread of its own, outside any runtime, while
    /// the hyper client needs tokio's: each request runs as a task on the command's runtime
    /// and the reader's thread only waits for it. (The SDK's alternative, a reader on an async
    /// runtime, is behind an experimental feature; reqwest's blocking client would bring a
    /// second HTTP stack.)
    #[derive(Debug)]
    struct OnRuntime {
        client: HyperClient,
        runtime: Handle,
    }

    #[async_trait::async_trait]
    impl HttpClient for OnRuntime {
        async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
            let client = self.client.clone();
            self.runtime
                .spawn(async move { client.send_bytes(request).await })
                .await?
        }
    }

    /// The endpoint URL for metrics: `base` as in OTEL_EXPORTER_OTLP_ENDPOINT.
    pub(super) fn metrics_url(base: &str) -> String {
        let base = base.trim_end_matches('/');
        if base.ends_with("/v1/metrics") {
            base.to_owned()
        } else {
            format!("{base}/v1/metrics")
        }
    }

    /// A meter provider exporting to `endpoint`, and the `metrics` recorder that feeds it.
    pub(super) fn recorder(
        runtime: &Runtime,
        endpoint: &str,
        interval: Option<Duration>,
    ) -> Result<(SdkMeterProvider, metrics_exporter_opentelemetry::Recorder), CliError> {
        let url = metrics_url(endpoint);
        url.parse::<http::Uri>()
            .map_err(|e| CliError::Usage(format!("--otlp-endpoint {endpoint}: {e}")))?;
        let client = OnRuntime {
            client: HyperClient::with_default_connector(EXPORT_TIMEOUT, None),
            runtime: runtime.handle().clone(),
        };
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url)
            .with_timeout(EXPORT_TIMEOUT)
            .with_http_client(client)
            .build()
            .map_err(|e| CliError::Usage(format!("--otlp-endpoint {endpoint}: {e}")))?;
        let mut reader = PeriodicReader::builder(exporter);
        if let Some(interval) = interval {
            reader = reader.with_interval(interval);
        }
        // OTEL_SERVICE_NAME, when set, names the service (the builder reads it).
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("kinesis-cat");
        }
        let resource = resource.build();
        let (provider, recorder) = metrics_exporter_opentelemetry::Recorder::builder("kinesis-cat")
            .with_meter_provider(|builder| {
                builder.with_resource(resource).with_reader(reader.build())
            })
            .build();
        Ok((provider, recorder))
    }

    #[cfg(test)]
    mod tests {
        use super::metrics_url;

        #[test]
        fn the_endpoint_is_a_base_address_as_in_the_standard_variable() {
            assert_eq!(
                metrics_url("http://localhost:4318"),
                "http://localhost:4318/v1/metrics"
            );
            assert_eq!(
                metrics_url("http://localhost:4318/"),
                "http://localhost:4318/v1/metrics"
            );
            assert_eq!(
                metrics_url("http://c:4318/v1/metrics"),
                "http://c:4318/v1/metrics"
            );
        }
    }
}
