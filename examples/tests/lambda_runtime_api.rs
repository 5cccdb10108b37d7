//! The `lambda_handler` example on the real `lambda_runtime`, against a fake Lambda Runtime API
//! (the HTTP interface Lambda gives a function: `invocation/next`, `.../response`,
//! `.../error`): each captured-style event goes in as Lambda sends it, and the answers the
//! runtime posts back are the partial batch responses, across a retry in the same execution
//! environment. One test in this binary: it sets the process environment the runtime reads.

// Each test binary uses a part of the example's module.
#[allow(dead_code)]
#[path = "../lambda_handler/handler.rs"]
mod handler;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use handler::Sink;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kinesis_lambda::{CorruptRecord, LambdaUserRecord};
use tokio::sync::mpsc;

const BASE: &str = "495903382714902566085596925383615710959215759891365888";

fn data(name: &str) -> serde_json::Value {
    let path = format!(
        "{}/../kinesis-lambda/tests/data/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Records the data of what it processed; fails "second" the first time.
#[derive(Clone, Default)]
struct Recorder {
    processed: Arc<Mutex<Vec<String>>>,
    dead_letters: Arc<Mutex<Vec<String>>>,
    failed_once: Arc<Mutex<bool>>,
}

impl Sink for Recorder {
    fn process(&mut self, record: &LambdaUserRecord) -> Result<(), String> {
        let data = String::from_utf8_lossy(record.data()).into_owned();
        let mut failed = self.failed_once.lock().unwrap();
        if data == "second" && !*failed {
            *failed = true;
            return Err("downstream refused".into());
        }
        self.processed.lock().unwrap().push(data);
        Ok(())
    }

    fn dead_letter(&mut self, corrupt: &CorruptRecord) {
        self.dead_letters
            .lock()
            .unwrap()
            .push(corrupt.sequence_number().to_owned());
    }
}

/// The fake Runtime API: hands out `events` in order (then holds `next` open, as Lambda does
/// between invocations) and passes each posted answer on as (request id, kind, body).
struct FakeRuntimeApi {
    events: Mutex<VecDeque<(String, Vec<u8>)>>,
    answers: mpsc::UnboundedSender<(String, String, serde_json::Value)>,
}

impl FakeRuntimeApi {
    async fn serve(
        self: Arc<Self>,
        request: Request<hyper::body::Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let path = request.uri().path().to_owned();
        if request.method() == Method::GET && path == "/2018-06-01/runtime/invocation/next" {
            let next = self.events.lock().unwrap().pop_front();
            let Some((id, body)) = next else {
                std::future::pending::<()>().await;
                unreachable!()
            };
            let deadline = SystemTime::now() + Duration::from_secs(60);
            let deadline = deadline
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis();
            return Ok(Response::builder()
                .header("content-type", "application/json")
                .header("lambda-runtime-aws-request-id", id)
                .header("lambda-runtime-deadline-ms", deadline.to_string())
                .header(
                    "lambda-runtime-invoked-function-arn",
                    "arn:aws:lambda:us-east-1:123456789012:function:lambda_handler",
                )
                .body(Full::new(Bytes::from(body)))
                .unwrap());
        }
        let answer = path
            .strip_prefix("/2018-06-01/runtime/invocation/")
            .and_then(|rest| rest.split_once('/'));
        if let (&Method::POST, Some((id, kind))) = (request.method(), answer) {
            let (id, kind) = (id.to_owned(), kind.to_owned());
            let body = request
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            let _ = self.answers.send((id, kind, body));
            return Ok(Response::builder()
                .status(StatusCode::ACCEPTED)
                .body(Full::new(Bytes::new()))
                .unwrap());
        }
        Ok(Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::new()))
            .unwrap())
    }
}

#[test]
fn the_handler_answers_lambda_through_the_runtime_api() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    // SAFETY: the only test of this binary, before any other thread of it exists.
    unsafe {
        std::env::set_var("AWS_LAMBDA_RUNTIME_API", address.to_string());
        std::env::set_var("AWS_LAMBDA_FUNCTION_NAME", "lambda_handler");
        std::env::set_var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128");
        std::env::set_var("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST");
    }
    let mut retry = data("aggregated.json");
    retry["Records"].as_array_mut().unwrap().remove(0);
    let mut not_kinesis = data("plain.json");
    not_kinesis["Records"][0]
        .as_object_mut()
        .unwrap()
        .remove("eventID");
    let events: VecDeque<(String, Vec<u8>)> = [
        ("req-1", data("aggregated.json")),
        ("req-2", retry),
        ("req-3", data("corrupt.json")),
        ("req-4", not_kinesis),
    ]
    .into_iter()
    .map(|(id, event)| (id.to_owned(), serde_json::to_vec(&event).unwrap()))
    .collect();
    let (answers_tx, mut answers) = mpsc::unbounded_channel();
    let api = Arc::new(FakeRuntimeApi {
        events: Mutex::new(events),
        answers: answers_tx,
    });

    let sink = Recorder::default();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let got = runtime.block_on(async {
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let api = api.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |r| api.clone().serve(r));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let function = tokio::spawn(handler::serve(sink.clone()));
        let mut got = Vec::new();
        while got.len() < 4 {
            let answer = tokio::time::timeout(Duration::from_secs(30), answers.recv())
                .await
                .expect("the runtime answers within 30 s")
                .expect("the fake is alive");
            got.push(answer);
        }
        function.abort();
        got
    });

    let seq = |offset: u32| format!("{BASE}{offset:02}");
    let none: serde_json::Value = serde_json::json!({"batchItemFailures": []});
    assert_eq!(got[0].0, "req-1");
    assert_eq!(got[0].1, "response");
    assert_eq!(
        got[0].2,
        serde_json::json!({"batchItemFailures": [{"itemIdentifier": seq(11)}]})
    );
    assert_eq!(
        (&*got[1].0, &*got[1].1, &got[1].2),
        ("req-2", "response", &none)
    );
    assert_eq!(
        (&*got[2].0, &*got[2].1, &got[2].2),
        ("req-3", "response", &none)
    );
    assert_eq!((&*got[3].0, &*got[3].1), ("req-4", "error"));
    assert_eq!(got[3].2["errorType"], "EventError");
    let message = got[3].2["errorMessage"].as_str().unwrap_or_default();
    assert!(message.contains("eventID"), "{}", got[3].2);

    let processed = sink.processed.lock().unwrap().clone();
    assert_eq!(
        processed[..8],
        [
            r#"{"id":10,"msg":"plain before"}"#,
            "first",
            // The retry: "first" skipped, "second" now goes through.
            "second",
            "third",
            "no ehk",
            "with ehk",
            "no ehk either",
            r#"{"id":13,"msg":"plain after"}"#,
        ]
    );
    assert_eq!(processed[8..11], ["first", "second", "third"]);
    assert_eq!(processed.len(), 13, "{processed:?}");
    assert_eq!(*sink.dead_letters.lock().unwrap(), [seq(21)]);
}
