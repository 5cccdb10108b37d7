//! A local CloudWatch endpoint that decodes `PutMetricData` as the service does, for the
//! publisher's tests through the real SDK code path.
//!
//! The locked `aws-sdk-cloudwatch` speaks the awsQuery protocol: a form-encoded POST
//! (`Action=PutMetricData&Version=2010-08-01&Namespace=...&MetricData.member.1.MetricName=...`),
//! gzip-compressed by the SDK from 10 KiB on (`Content-Encoding: gzip`), answered with XML.
//! This endpoint decompresses and decodes that body into typed [`Datum`]s, checks the
//! service's limits (1 000 metric data per call, 1 MB, 30 dimensions, one kind of value per
//! datum) and answers as the service does: a `PutMetricDataResponse`, the 400 `Throttling`
//! error body when told to throttle, or nothing at all when told to hang.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The service's limit of metric data per call.
pub const MAX_DATUMS: usize = 1000;
/// The service's limit of a request's bytes.
pub const MAX_BYTES: usize = 1_000_000;
/// The service's limit of dimensions per metric.
pub const MAX_DIMENSIONS: usize = 30;

/// One statistic set as sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatisticSet {
    /// SampleCount.
    pub sample_count: f64,
    /// Sum.
    pub sum: f64,
    /// Minimum.
    pub minimum: f64,
    /// Maximum.
    pub maximum: f64,
}

/// One metric datum as the service decodes it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Datum {
    /// MetricName.
    pub name: String,
    /// Dimensions, in the order sent.
    pub dimensions: Vec<(String, String)>,
    /// Timestamp, as sent (ISO 8601).
    pub timestamp: Option<String>,
    /// Unit.
    pub unit: Option<String>,
    /// Value (a single sample).
    pub value: Option<f64>,
    /// StatisticValues.
    pub statistics: Option<StatisticSet>,
    /// StorageResolution.
    pub storage_resolution: Option<i64>,
}

/// One accepted or refused `PutMetricData` call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// Namespace.
    pub namespace: String,
    /// MetricData.
    pub data: Vec<Datum>,
    /// Bytes of the decompressed body.
    pub body_bytes: usize,
    /// Whether the body came gzip-compressed.
    pub gzip: bool,
    /// The HTTP status answered (0: none, the endpoint hung).
    pub status: u16,
    /// Why the endpoint refused the call as invalid.
    pub refusal: Option<String>,
}

/// How the endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Accepts valid calls.
    Accept,
    /// Answers the next `n` calls with the service's 400 `Throttling`, then accepts.
    Throttle(usize),
    /// Never answers (the connection stays open).
    Hang,
}

struct State {
    mode: Mode,
    calls: Vec<Call>,
}

/// The running endpoint; stops when dropped.
pub struct CloudWatchEndpoint {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for CloudWatchEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CloudWatchEndpoint {
    /// Binds 127.0.0.1:0 and serves until dropped.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(State {
            mode: Mode::Accept,
            calls: Vec::new(),
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, request).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, state, task }
    }

    /// The endpoint's URL, for `endpoint_url` or `AWS_ENDPOINT_URL_CLOUDWATCH`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes how the next calls are answered.
    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().expect("state").mode = mode;
    }

    /// Every call so far, refused ones included.
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().expect("state").calls.clone()
    }

    /// The data of the accepted calls.
    pub fn accepted(&self) -> Vec<Datum> {
        self.calls()
            .into_iter()
            .filter(|c| c.status == 200)
            .flat_map(|c| c.data)
            .collect()
    }

    /// An SDK client for this endpoint (test credentials, region us-east-1).
    pub fn client(&self) -> aws_sdk_cloudwatch::Client {
        let config = aws_sdk_cloudwatch::Config::builder()
            .behavior_version(aws_sdk_cloudwatch::config::BehaviorVersion::latest())
            .region(aws_sdk_cloudwatch::config::Region::new(crate::REGION))
            .credentials_provider(aws_sdk_cloudwatch::config::Credentials::new(
                "AKIDTEST", "secret", None, None, "test",
            ))
            .endpoint_url(self.url())
            .build();
        aws_sdk_cloudwatch::Client::from_conf(config)
    }
}

fn xml(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", "text/xml".parse().expect("header"));
    response
        .headers_mut()
        .insert("x-amzn-requestid", "test-request".parse().expect("header"));
    response
}

/// The awsQuery error body the service sends.
fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    xml(
        status,
        format!(
            "<ErrorResponse xmlns=\"http://monitoring.amazonaws.com/doc/2010-08-01/\">\
             <Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>\
             <RequestId>test-request</RequestId></ErrorResponse>"
        ),
    )
}

async fn handle(state: &Mutex<State>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let gzip = request
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip");
    let Ok(body) = request.into_body().collect().await else {
        return error(StatusCode::BAD_REQUEST, "MalformedInput", "unreadable body");
    };
    let body = body.to_bytes();
    let body = if gzip {
        let mut out = Vec::new();
        if flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .is_err()
        {
            return error(StatusCode::BAD_REQUEST, "MalformedInput", "bad gzip");
        }
        out
    } else {
        body.to_vec()
    };
    let decoded = decode(&body);
    let mode = state.lock().expect("state").mode;
    let (status, response) = match (&decoded, mode) {
        (Err(message), _) => (
            400,
            Some(error(
                StatusCode::BAD_REQUEST,
                "InvalidParameterValue",
                message,
            )),
        ),
        (Ok(_), Mode::Hang) => (0, None),
        (Ok(_), Mode::Throttle(n)) if n > 0 => {
            state.lock().expect("state").mode = Mode::Throttle(n - 1);
            (
                400,
                Some(error(
                    StatusCode::BAD_REQUEST,
                    "Throttling",
                    "Rate exceeded",
                )),
            )
        }
        (Ok(_), _) => (
            200,
            Some(xml(
                StatusCode::OK,
                "<PutMetricDataResponse xmlns=\"http://monitoring.amazonaws.com/doc/2010-08-01/\">\
                 <ResponseMetadata><RequestId>test-request</RequestId></ResponseMetadata>\
                 </PutMetricDataResponse>"
                    .to_owned(),
            )),
        ),
    };
    let refusal = decoded.as_ref().err().cloned();
    let (namespace, data) = decoded.unwrap_or_default();
    state.lock().expect("state").calls.push(Call {
        namespace,
        data,
        body_bytes: body.len(),
        gzip,
        status,
        refusal,
    });
    match response {
        Some(response) => response,
        None => std::future::pending().await,
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

type Decoded = (String, Vec<Datum>);

/// Decodes and validates a form-encoded PutMetricData body as the service does.
pub fn decode(body: &[u8]) -> Result<Decoded, String> {
    if body.len() > MAX_BYTES {
        return Err(format!("request of {} bytes, over 1 MB", body.len()));
    }
    let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        fields.insert(percent_decode(key), percent_decode(value));
    }
    if fields.get("Action").map(String::as_str) != Some("PutMetricData") {
        return Err(format!("Action {:?}", fields.get("Action")));
    }
    if fields.get("Version").map(String::as_str) != Some("2010-08-01") {
        return Err(format!("Version {:?}", fields.get("Version")));
    }
    let namespace = fields.get("Namespace").cloned().unwrap_or_default();
    if namespace.is_empty() || namespace.len() > 255 || namespace.starts_with("AWS/") {
        return Err(format!("Namespace {namespace:?}"));
    }
    let mut data: BTreeMap<usize, Datum> = BTreeMap::new();
    let mut dimensions: BTreeMap<(usize, usize), (String, String)> = BTreeMap::new();
    let mut statistics: BTreeMap<usize, BTreeMap<String, f64>> = BTreeMap::new();
    for (key, value) in &fields {
        let Some(rest) = key.strip_prefix("MetricData.member.") else {
            continue;
        };
        let (index, field) = rest.split_once('.').ok_or(format!("field {key}"))?;
        let index: usize = index.parse().map_err(|_| format!("index in {key}"))?;
        let datum = data.entry(index).or_default();
        let number = || value.parse::<f64>().map_err(|_| format!("{key}={value}"));
        match field {
            "MetricName" => datum.name = value.clone(),
            // awsQuery's empty list: `Dimensions=` with nothing after it.
            "Dimensions" | "Values" | "Counts" if value.is_empty() => {}
            "Timestamp" => datum.timestamp = Some(value.clone()),
            "Unit" => datum.unit = Some(value.clone()),
            "Value" => datum.value = Some(number()?),
            "StorageResolution" => {
                datum.storage_resolution = Some(value.parse().map_err(|_| key.clone())?)
            }
            _ => {
                if let Some(stat) = field.strip_prefix("StatisticValues.") {
                    statistics
                        .entry(index)
                        .or_default()
                        .insert(stat.to_owned(), number()?);
                } else if let Some(dim) = field.strip_prefix("Dimensions.member.") {
                    let (j, part) = dim.split_once('.').ok_or(key.clone())?;
                    let j: usize = j.parse().map_err(|_| key.clone())?;
                    let entry = dimensions.entry((index, j)).or_default();
                    match part {
                        "Name" => entry.0 = value.clone(),
                        "Value" => entry.1 = value.clone(),
                        _ => return Err(format!("field {key}")),
                    }
                } else {
                    return Err(format!("unknown field {key}"));
                }
            }
        }
    }
    for ((index, _), dimension) in dimensions {
        if let Some(datum) = data.get_mut(&index) {
            datum.dimensions.push(dimension);
        }
    }
    for (index, stats) in statistics {
        let get = |name: &str| {
            stats
                .get(name)
                .copied()
                .ok_or(format!("StatisticValues.{name} missing"))
        };
        let set = StatisticSet {
            sample_count: get("SampleCount")?,
            sum: get("Sum")?,
            minimum: get("Minimum")?,
            maximum: get("Maximum")?,
        };
        if set.sample_count <= 0.0 || set.minimum > set.maximum {
            return Err(format!("invalid statistic set {set:?}"));
        }
        if let Some(datum) = data.get_mut(&index) {
            datum.statistics = Some(set);
        }
    }
    if data.is_empty() || data.len() > MAX_DATUMS {
        return Err(format!("{} metric data", data.len()));
    }
    let data: Vec<Datum> = data.into_values().collect();
    for datum in &data {
        if datum.name.is_empty() {
            return Err("MetricName missing".to_owned());
        }
        if datum.dimensions.len() > MAX_DIMENSIONS {
            return Err(format!("{} dimensions", datum.dimensions.len()));
        }
        if datum
            .dimensions
            .iter()
            .any(|(n, v)| n.is_empty() || v.is_empty() || v.len() > 1024)
        {
            return Err(format!("invalid dimension in {datum:?}"));
        }
        if datum.value.is_some() == datum.statistics.is_some() {
            return Err(format!("Value or StatisticValues, one of them: {datum:?}"));
        }
    }
    Ok((namespace, data))
}
