//! The accept loop, the per-connection task and the request handler.
//!
//! One background task accepts connections and owns a `JoinSet` of connection tasks, so
//! aborting it (or shutting it down) closes every connection. Each connection task serves
//! HTTP/1.1 with hyper and also waits on a per-connection `Notify`: a handler that decides to
//! drop the connection signals it and never answers, and the connection task then drops the
//! socket without writing a response.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinSet;

use crate::faults::{Faults, ServerError};
use crate::reads::{GetRecordsInput, GetShardIteratorInput};
use crate::sink::{self, Sink};
use crate::stats::{Counters, add};
use crate::wire::{
    self, Body, EntryFault, PutRecordInput, PutRecordsInput, StreamRequest, THROUGHPUT_EXCEEDED,
    error_response, json_response,
};

/// Largest request body the proxy reads (generous: kinesis-mock accepts more than the service).
const MAX_REQUEST_BODY: usize = 64 * 1024 * 1024;

/// How long the forwarding client keeps an idle upstream connection (below the usual server
/// keep-alive timeouts, so a pooled connection is rarely closed under a request).
const UPSTREAM_POOL_IDLE: Duration = Duration::from_secs(2);

/// State shared by the handle and every connection.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) faults: watch::Sender<Faults>,
    pub(crate) rng: Mutex<StdRng>,
    pub(crate) counters: Counters,
    pub(crate) backend: Backend,
}

/// Where requests go.
#[derive(Debug)]
pub(crate) enum Backend {
    Sink(Sink),
    Forward(Box<Forwarder>),
}

impl Shared {
    pub(crate) fn new(faults: Faults, backend: Backend) -> Self {
        Self {
            rng: Mutex::new(StdRng::seed_from_u64(faults.seed)),
            faults: watch::Sender::new(faults),
            counters: Counters::default(),
            backend,
        }
    }

    pub(crate) fn lock_rng(&self) -> MutexGuard<'_, StdRng> {
        // The generator holds no invariant a panicking holder could break.
        self.rng.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Draws the faults for one request with `entries` PutRecords entries.
    fn decide(&self, entries: usize) -> Decision {
        let faults = self.faults.borrow();
        if !faults.is_random() {
            return Decision::default();
        }
        let mut rng = self.lock_rng();
        // `validate` keeps every rate within 0.0..=1.0, as `random_bool` requires.
        let mut hit = |rate: f64| rate > 0.0 && rng.random_bool(rate);
        let mut decision = Decision::default();
        if hit(faults.drop_connection_rate) {
            decision.drop_connection = true;
            return decision;
        }
        if hit(faults.throttle_rate) {
            decision.whole_call = Some(WholeCall::Throttle);
        } else if hit(faults.internal_error_rate) {
            decision.whole_call = Some(WholeCall::Server(faults.server_error));
        }
        if !faults.delay.is_zero() && hit(faults.delay_rate) {
            decision.delay = Some(faults.delay);
        }
        if decision.whole_call.is_some() {
            return decision;
        }
        decision.lose_response = hit(faults.lose_response_rate);
        if faults.partial_failure_rate > 0.0 && entries > 0 {
            let share = faults.partial_failure_internal_share;
            decision.entries = (0..entries)
                .map(|_| {
                    if !hit(faults.partial_failure_rate) {
                        EntryFault::Forward
                    } else if hit(share) {
                        EntryFault::InternalFailure
                    } else {
                        EntryFault::Throttled
                    }
                })
                .collect();
        }
        decision
    }
}

/// A whole-call error answer.
#[derive(Debug, Clone, Copy)]
enum WholeCall {
    Throttle,
    Server(ServerError),
}

/// The faults drawn for one request.
#[derive(Debug, Default)]
struct Decision {
    drop_connection: bool,
    whole_call: Option<WholeCall>,
    delay: Option<Duration>,
    lose_response: bool,
    /// Per-entry outcomes; empty when no entry fails.
    entries: Vec<EntryFault>,
}

/// Forwards requests to an upstream Kinesis endpoint.
#[derive(Debug)]
pub(crate) struct Forwarder {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error("cannot build the upstream request")]
    Request(#[from] http::Error),
    #[error("upstream request failed")]
    Send(#[from] hyper_util::client::legacy::Error),
    #[error("cannot read the upstream response")]
    Body(#[from] hyper::Error),
}

impl Forwarder {
    /// A forwarder to `url` (`http://host:port`, optionally with a trailing `/`).
    pub(crate) fn new(url: &str) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|err| format!("{err}"))?;
        let parts = uri.into_parts();
        let scheme = parts
            .scheme
            .ok_or("no scheme (expected http://host:port)")?;
        if scheme != http::uri::Scheme::HTTP {
            return Err(format!("scheme {scheme} is not supported (only http)"));
        }
        let authority = parts.authority.ok_or("no host")?;
        if parts
            .path_and_query
            .is_some_and(|path| path.as_str() != "/" && !path.as_str().is_empty())
        {
            return Err("a path is not supported (expected http://host:port)".to_owned());
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(UPSTREAM_POOL_IDLE)
            .build(connector);
        Ok(Self {
            scheme,
            authority,
            client,
        })
    }

    /// Sends `body` with the method, path and headers of `parts` to the upstream and reads the
    /// whole answer.
    async fn send(
        &self,
        parts: &http::request::Parts,
        body: Bytes,
    ) -> Result<(http::response::Parts, Bytes), ForwardError> {
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()?;
        let mut request = Request::builder().method(parts.method.clone()).uri(uri);
        if let Some(headers) = request.headers_mut() {
            copy_end_to_end_headers(&parts.headers, headers);
        }
        let response = self.client.request(request.body(Full::new(body))?).await?;
        let (mut parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        let mut headers = HeaderMap::with_capacity(parts.headers.len());
        copy_end_to_end_headers(&parts.headers, &mut headers);
        parts.headers = headers;
        Ok((parts, body))
    }
}

/// Copies `from` into `to` without hop-by-hop and framing headers (hyper sets the framing for
/// the new body itself).
fn copy_end_to_end_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        let skip = name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
            || name == "keep-alive"
            || name == header::TE
            || name == header::TRAILER
            || name == header::UPGRADE
            || name == header::PROXY_AUTHORIZATION;
        if !skip {
            to.append(name.clone(), value.clone());
        }
    }
}

/// Accepts connections until `shutdown` fires (or is dropped), then closes them all.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_connection(stream, peer, Arc::clone(&shared)));
                }
                Err(err) => {
                    // Out of file descriptors and the like: wait a little instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %err, "cannot set TCP_NODELAY");
    }
    let kill = Arc::new(Notify::new());
    let service = {
        let kill = Arc::clone(&kill);
        service_fn(move |request| {
            let shared = Arc::clone(&shared);
            let kill = Arc::clone(&kill);
            async move { Ok::<_, Infallible>(handle(&shared, &kill, request).await) }
        })
    };
    let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = connection => {
            if let Err(err) = result {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
        }
        () = kill.notified() => {
            tracing::debug!(%peer, "dropping connection");
        }
    }
}

/// Closes the connection without answering: the response future never completes.
async fn hang_up(kill: &Notify) -> Response<Body> {
    kill.notify_one();
    std::future::pending().await
}

fn throttle_response() -> Response<Body> {
    error_response(
        StatusCode::BAD_REQUEST,
        THROUGHPUT_EXCEEDED,
        "Rate exceeded for shard (injected by fault-proxy).",
    )
}

fn server_error_response(error: ServerError) -> Response<Body> {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error_response(status, error.error_type(), error.message())
}

fn bad_gateway(message: &str) -> Response<Body> {
    error_response(StatusCode::BAD_GATEWAY, "BadGateway", message)
}

async fn handle(shared: &Shared, kill: &Notify, request: Request<Incoming>) -> Response<Body> {
    let target = request.headers().get("x-amz-target").cloned();
    let operation = wire::operation(target.as_ref());
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "SerializationException",
                &format!("cannot read the request body: {err}"),
            );
        }
    };
    shared.counters.count_request(operation);
    tracing::trace!(
        operation,
        method = %parts.method,
        uri = %parts.uri,
        headers = ?parts.headers,
        body = %String::from_utf8_lossy(&body),
        "request"
    );

    let applies = shared.faults.borrow().applies_to(operation);
    if applies && shared.faults.borrow().stall {
        add(&shared.counters.stalled, 1);
        let mut faults = shared.faults.subscribe();
        // The sender lives in `shared`, which outlives this request: this only ends when the
        // stall is cleared (or the connection is closed).
        let _ = faults.wait_for(|faults| !faults.stall).await;
    }

    match &shared.backend {
        Backend::Sink(sink) => sink_request(shared, sink, kill, operation, applies, &body).await,
        Backend::Forward(upstream) => {
            forward_request(shared, upstream, kill, operation, applies, &parts, body).await
        }
    }
}

/// Applies `decision`: drops the connection, answers a whole-call error, or calls `serve` with
/// the per-entry faults; then loses the response or delays it.
async fn with_faults<Fut>(
    shared: &Shared,
    kill: &Notify,
    decision: Decision,
    serve: impl FnOnce(Vec<EntryFault>) -> Fut,
) -> Response<Body>
where
    Fut: Future<Output = Response<Body>>,
{
    let counters = &shared.counters;
    if decision.drop_connection {
        add(&counters.dropped_connections, 1);
        return hang_up(kill).await;
    }
    let response = match decision.whole_call {
        Some(WholeCall::Throttle) => {
            add(&counters.throttled, 1);
            throttle_response()
        }
        Some(WholeCall::Server(error)) => {
            add(&counters.server_errors, 1);
            server_error_response(error)
        }
        None => {
            let response = serve(decision.entries).await;
            if decision.lose_response {
                add(&counters.lost_responses, 1);
                return hang_up(kill).await;
            }
            response
        }
    };
    if let Some(delay) = decision.delay {
        add(&counters.delayed, 1);
        tokio::time::sleep(delay).await;
    }
    response
}

fn decide_if(shared: &Shared, applies: bool, entries: usize) -> Decision {
    if applies {
        shared.decide(entries)
    } else {
        Decision::default()
    }
}

fn refuse(shared: &Shared, refusal: sink::Refusal) -> Response<Body> {
    add(&shared.counters.invalid_requests, 1);
    refusal.into_response()
}

async fn sink_request(
    shared: &Shared,
    sink: &Sink,
    kill: &Notify,
    operation: &str,
    applies: bool,
    body: &[u8],
) -> Response<Body> {
    let counters = &shared.counters;
    match operation {
        "PutRecords" => {
            let input: PutRecordsInput<'_> = match serde_json::from_slice(body) {
                Ok(input) => input,
                Err(err) => return refuse(shared, sink::Refusal::serialization(&err)),
            };
            if let Err(refusal) = sink.validate_put_records(&input) {
                return refuse(shared, refusal);
            }
            add(&counters.entries_received, input.records.len() as u64);
            let decision = decide_if(shared, applies, input.records.len());
            with_faults(shared, kill, decision, |entries| {
                std::future::ready(sink.put_records(&input, &entries, counters))
            })
            .await
        }
        "PutRecord" => {
            let input: PutRecordInput<'_> = match serde_json::from_slice(body) {
                Ok(input) => input,
                Err(err) => return refuse(shared, sink::Refusal::serialization(&err)),
            };
            add(&counters.entries_received, 1);
            let decision = decide_if(shared, applies, 0);
            with_faults(shared, kill, decision, |_| {
                let response = sink.put_record(&input, counters);
                if !response.status().is_success() {
                    add(&counters.invalid_requests, 1);
                }
                std::future::ready(response)
            })
            .await
        }
        "ListShards" | "DescribeStreamSummary" | "DescribeStream" => {
            let request: StreamRequest<'_> = match serde_json::from_slice(body) {
                Ok(request) => request,
                Err(err) => return refuse(shared, sink::Refusal::serialization(&err)),
            };
            let decision = decide_if(shared, applies, 0);
            with_faults(shared, kill, decision, |_| {
                std::future::ready(match operation {
                    "ListShards" => sink.list_shards(&request),
                    "DescribeStreamSummary" => sink.describe_stream_summary(&request),
                    _ => sink.describe_stream(&request),
                })
            })
            .await
        }
        "GetShardIterator" => {
            let answer = |input: &GetShardIteratorInput<'_>| sink.get_shard_iterator(input);
            sink_read(shared, kill, applies, body, answer).await
        }
        "GetRecords" => {
            let answer = |input: &GetRecordsInput<'_>| sink.get_records(input, counters);
            sink_read(shared, kill, applies, body, answer).await
        }
        other => refuse(shared, sink::Refusal::unknown_operation(other)),
    }
}

/// A read from the sink (GetShardIterator, GetRecords): the request parsed, the faults decided,
/// then the sink's answer, or its refusal.
async fn sink_read<'b, T: Deserialize<'b>>(
    shared: &Shared,
    kill: &Notify,
    applies: bool,
    body: &'b [u8],
    answer: impl FnOnce(&T) -> Result<Response<Body>, sink::Refusal>,
) -> Response<Body> {
    let input: T = match serde_json::from_slice(body) {
        Ok(input) => input,
        Err(err) => return refuse(shared, sink::Refusal::serialization(&err)),
    };
    let decision = decide_if(shared, applies, 0);
    with_faults(shared, kill, decision, |_| {
        std::future::ready(answer(&input).unwrap_or_else(|refusal| refuse(shared, refusal)))
    })
    .await
}

async fn forward_request(
    shared: &Shared,
    upstream: &Forwarder,
    kill: &Notify,
    operation: &str,
    applies: bool,
    parts: &http::request::Parts,
    body: Bytes,
) -> Response<Body> {
    let counters = &shared.counters;
    let entries = match operation {
        // An unparsable body goes upstream unchanged, to get the upstream's own error.
        "PutRecords" => wire::count_put_records_entries(&body).unwrap_or(0),
        "PutRecord" => 1,
        _ => 0,
    };
    add(&counters.entries_received, entries as u64);
    let per_entry = if operation == "PutRecords" {
        entries
    } else {
        0
    };
    let decision = decide_if(shared, applies, per_entry);
    with_faults(shared, kill, decision, |faults| async move {
        if faults.iter().any(|fault| *fault != EntryFault::Forward) {
            forward_partial(shared, upstream, parts, &body, &faults).await
        } else {
            add(&counters.entries_forwarded, entries as u64);
            forward_whole(shared, upstream, parts, body).await
        }
    })
    .await
}

async fn forward_whole(
    shared: &Shared,
    upstream: &Forwarder,
    parts: &http::request::Parts,
    body: Bytes,
) -> Response<Body> {
    match upstream.send(parts, body).await {
        Ok((parts, body)) => Response::from_parts(parts, Body::new(body)),
        Err(err) => upstream_failed(shared, &err),
    }
}

fn upstream_failed(shared: &Shared, err: &ForwardError) -> Response<Body> {
    add(&shared.counters.upstream_errors, 1);
    let message = error_chain(err);
    tracing::warn!(error = %message, "upstream request failed");
    bad_gateway(&format!("fault-proxy: {message}"))
}

/// `err` and its sources, joined by `: `.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Forwards only the entries `faults` lets through and merges the upstream's answer with the
/// injected failures.
async fn forward_partial(
    shared: &Shared,
    upstream: &Forwarder,
    parts: &http::request::Parts,
    body: &Bytes,
    faults: &[EntryFault],
) -> Response<Body> {
    let counters = &shared.counters;
    let split = match wire::split_put_records(body, faults) {
        Ok(split) => split,
        Err(err) => {
            tracing::warn!(error = %err, "cannot split PutRecords; forwarding it whole");
            add(&counters.entries_forwarded, faults.len() as u64);
            return forward_whole(shared, upstream, parts, body.clone()).await;
        }
    };
    let (response_parts, upstream_body) = match split.forward_body {
        Some(forward_body) => {
            add(&counters.entries_forwarded, split.forwarded as u64);
            match upstream.send(parts, Bytes::from(forward_body)).await {
                Ok((response_parts, upstream_body)) if response_parts.status.is_success() => {
                    (Some(response_parts), Some(upstream_body))
                }
                // A whole-call error from the upstream is the answer for the whole call.
                Ok((response_parts, upstream_body)) => {
                    return Response::from_parts(response_parts, Body::new(upstream_body));
                }
                Err(err) => return upstream_failed(shared, &err),
            }
        }
        None => (None, None),
    };
    match wire::merge_put_records(
        upstream_body.as_deref(),
        faults,
        split.forwarded,
        &split.stream,
    ) {
        Ok(merged) => {
            for fault in faults {
                match fault {
                    EntryFault::Forward => {}
                    EntryFault::Throttled => add(&counters.entries_throttled, 1),
                    EntryFault::InternalFailure => add(&counters.entries_internal_failure, 1),
                }
            }
            match response_parts {
                Some(parts) => Response::from_parts(parts, Body::new(Bytes::from(merged))),
                None => json_response(StatusCode::OK, merged),
            }
        }
        Err(err) => {
            add(&counters.upstream_errors, 1);
            bad_gateway(&format!(
                "fault-proxy: cannot merge the upstream's PutRecords answer: {}",
                error_chain(&err)
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn shared(faults: Faults) -> Shared {
        Shared::new(faults, Backend::Sink(Sink::new(1)))
    }

    #[test]
    fn decisions_are_reproducible() {
        let faults = Faults {
            seed: 42,
            partial_failure_rate: 0.5,
            partial_failure_internal_share: 0.5,
            ..Faults::default()
        };
        let a = shared(faults.clone()).decide(100).entries;
        let b = shared(faults).decide(100).entries;
        assert_eq!(a, b);
        let failed = a.iter().filter(|f| **f != EntryFault::Forward).count();
        assert!((25..=75).contains(&failed), "{failed} of 100 failed");
        assert!(a.contains(&EntryFault::InternalFailure) && a.contains(&EntryFault::Throttled));
    }

    #[test]
    fn certain_faults() {
        let decision = shared(Faults {
            throttle_rate: 1.0,
            partial_failure_rate: 1.0,
            ..Faults::default()
        })
        .decide(3);
        assert!(matches!(decision.whole_call, Some(WholeCall::Throttle)));
        assert!(
            decision.entries.is_empty(),
            "a whole-call error has no entry faults"
        );

        let decision = shared(Faults {
            drop_connection_rate: 1.0,
            ..Faults::default()
        })
        .decide(3);
        assert!(decision.drop_connection);

        let none = shared(Faults::default()).decide(3);
        assert!(none.whole_call.is_none() && none.entries.is_empty() && none.delay.is_none());
    }

    #[test]
    fn hop_by_hop_headers_are_not_copied() {
        let mut from = HeaderMap::new();
        from.insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        from.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        from.insert(
            "x-amz-target",
            HeaderValue::from_static("Kinesis_20131202.PutRecords"),
        );
        let mut to = HeaderMap::new();
        copy_end_to_end_headers(&from, &mut to);
        assert_eq!(to.len(), 1);
        assert!(to.contains_key("x-amz-target"));
    }
}
