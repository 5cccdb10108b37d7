//! What a real `aws-sdk-kinesis` client makes of each injected fault, with and without the
//! SDK's standard retry strategy. The proxy runs in sink mode, so no emulator is needed.

mod common;

use std::time::{Duration, Instant};

use aws_sdk_kinesis::error::SdkError;
use aws_sdk_kinesis::operation::put_records::{PutRecordsError, PutRecordsOutput};
use common::{client_with_attempts, dispatch_failure, entries, wait_until, within};
use fault_proxy::{FaultProxy, Faults, ServerError, Upstream};

type PutResult = Result<PutRecordsOutput, SdkError<PutRecordsError>>;

async fn sink(faults: Faults) -> FaultProxy {
    FaultProxy::start(Upstream::Sink { shards: 2 }, faults)
        .await
        .expect("start the proxy")
}

async fn put(client: &aws_sdk_kinesis::Client, prefix: &str) -> PutResult {
    within(
        "PutRecords",
        client
            .put_records()
            .stream_name("faults")
            .set_records(Some(entries(prefix, 3)))
            .send(),
    )
    .await
}

fn status(err: &SdkError<PutRecordsError>) -> Option<u16> {
    err.raw_response()
        .map(|response| response.status().as_u16())
}

#[tokio::test]
async fn throttling_is_a_modeled_error_that_the_sdk_retries() {
    let proxy = sink(Faults {
        throttle_rate: 1.0,
        ..Faults::default()
    })
    .await;

    let once = client_with_attempts(&proxy.endpoint_url(), 1).await;
    let err = put(&once, "t").await.expect_err("throttled");
    assert_eq!(status(&err), Some(400));
    let service = err.as_service_error().expect("a service error");
    assert!(
        service.is_provisioned_throughput_exceeded_exception(),
        "{service:?}"
    );
    assert_eq!(proxy.stats().requests_for("PutRecords"), 1);

    let retrying = client_with_attempts(&proxy.endpoint_url(), 3).await;
    let err = put(&retrying, "t")
        .await
        .expect_err("throttled on every attempt");
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_provisioned_throughput_exceeded_exception())
    );
    let stats = proxy.stats();
    assert_eq!(stats.requests_for("PutRecords"), 1 + 3, "the SDK retried");
    assert_eq!(stats.faults.throttled, 4);
    proxy.shutdown().await;
}

#[tokio::test]
async fn internal_failure_is_an_unmodeled_server_error_that_the_sdk_retries() {
    let proxy = sink(Faults {
        internal_error_rate: 1.0,
        ..Faults::default()
    })
    .await;

    let once = client_with_attempts(&proxy.endpoint_url(), 1).await;
    let err = put(&once, "i").await.expect_err("500");
    assert_eq!(status(&err), Some(500));
    let service = err.as_service_error().expect("a service error");
    // `InternalFailure` (the AWS common error) is not in the Kinesis model: the SDK reports
    // an unhandled error that carries the code.
    assert!(!service.is_internal_failure_exception(), "{service:?}");
    assert_eq!(
        aws_sdk_kinesis::error::ProvideErrorMetadata::code(service),
        Some("InternalFailure")
    );
    assert_eq!(proxy.stats().requests_for("PutRecords"), 1);

    let retrying = client_with_attempts(&proxy.endpoint_url(), 3).await;
    let err = put(&retrying, "i").await.expect_err("500 on every attempt");
    assert_eq!(status(&err), Some(500));
    assert_eq!(
        proxy.stats().requests_for("PutRecords"),
        1 + 3,
        "the SDK retried the 500"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn internal_failure_exception_is_modeled() {
    let proxy = sink(Faults {
        internal_error_rate: 1.0,
        server_error: ServerError::InternalFailureException,
        ..Faults::default()
    })
    .await;
    let once = client_with_attempts(&proxy.endpoint_url(), 1).await;
    let err = put(&once, "m").await.expect_err("500");
    assert_eq!(status(&err), Some(500));
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_internal_failure_exception()),
        "{err:?}"
    );

    proxy
        .set_faults(Faults {
            internal_error_rate: 1.0,
            server_error: ServerError::ServiceUnavailable,
            ..Faults::default()
        })
        .expect("valid faults");
    let err = put(&once, "m").await.expect_err("503");
    assert_eq!(status(&err), Some(503));
    proxy.shutdown().await;
}

#[tokio::test]
async fn standard_retry_turns_intermittent_500s_into_successes() {
    let proxy = sink(Faults {
        internal_error_rate: 0.5,
        seed: 3,
        ..Faults::default()
    })
    .await;
    let retrying = client_with_attempts(&proxy.endpoint_url(), 10).await;
    for call in 0..10 {
        let out = put(&retrying, "r")
            .await
            .unwrap_or_else(|err| panic!("call {call}: {err:?}"));
        assert_eq!(out.failed_record_count(), Some(0));
    }
    let stats = proxy.stats();
    assert!(stats.faults.server_errors > 0, "{stats:?}");
    assert_eq!(
        stats.requests_for("PutRecords"),
        10 + stats.faults.server_errors,
        "one retry per 500"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn dropped_connection_is_a_dispatch_failure_that_the_sdk_retries() {
    let proxy = sink(Faults {
        drop_connection_rate: 1.0,
        ..Faults::default()
    })
    .await;

    let once = client_with_attempts(&proxy.endpoint_url(), 1).await;
    let err = put(&once, "d").await.expect_err("no answer");
    // hyper reports `IncompleteMessage` (closed before the response); the SDK classifies it as
    // a transient error, which its retry strategy retries.
    assert_eq!(
        dispatch_failure(&err).as_deref(),
        Some("other(TransientError)"),
        "{err:?}"
    );
    assert_eq!(proxy.stats().faults.dropped_connections, 1);

    let retrying = client_with_attempts(&proxy.endpoint_url(), 3).await;
    let err = put(&retrying, "d")
        .await
        .expect_err("no answer on any attempt");
    assert!(dispatch_failure(&err).is_some(), "{err:?}");
    assert_eq!(
        proxy.stats().faults.dropped_connections,
        1 + 3,
        "the SDK retried"
    );

    // The proxy keeps serving once the fault is cleared.
    proxy.set_faults(Faults::default()).expect("valid faults");
    put(&once, "d").await.expect("no more faults");
    proxy.shutdown().await;
}

#[tokio::test]
async fn delay_slows_the_answer() {
    let delay = Duration::from_millis(300);
    let proxy = sink(Faults {
        delay,
        delay_rate: 1.0,
        ..Faults::default()
    })
    .await;
    let client = client_with_attempts(&proxy.endpoint_url(), 1).await;
    // Warm the connection pool so connecting is not part of the measurement.
    client
        .list_shards()
        .stream_name("faults")
        .send()
        .await
        .expect("ListShards");
    assert_eq!(proxy.stats().faults.delayed, 0, "ListShards is not faulted");

    let started = Instant::now();
    let out = put(&client, "slow").await.expect("delayed, not failed");
    let elapsed = started.elapsed();
    assert_eq!(out.failed_record_count(), Some(0));
    assert!(elapsed >= delay, "answered after {elapsed:?}");
    assert_eq!(proxy.stats().faults.delayed, 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn stall_holds_requests_until_cleared() {
    let proxy = sink(Faults {
        stall: true,
        ..Faults::default()
    })
    .await;
    let client = client_with_attempts(&proxy.endpoint_url(), 1).await;

    let held: Vec<_> = (0..3)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .put_records()
                    .stream_name("faults")
                    .set_records(Some(entries(&format!("stall-{i}"), 2)))
                    .send()
                    .await
            })
        })
        .collect();
    wait_until("three stalled PutRecords", || {
        proxy.stats().faults.stalled == 3
    })
    .await;

    // Other operations are not held.
    within(
        "ListShards during a stall",
        client.list_shards().stream_name("faults").send(),
    )
    .await
    .expect("ListShards");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        held.iter().all(|task| !task.is_finished()),
        "stalled calls must not complete"
    );

    proxy.set_faults(Faults::default()).expect("valid faults");
    for task in held {
        let out = within("a released PutRecords", task)
            .await
            .expect("task")
            .expect("released calls succeed");
        assert_eq!(out.failed_record_count(), Some(0));
    }
    assert_eq!(proxy.stats().entries_forwarded, 6);
    proxy.shutdown().await;
}

#[tokio::test]
async fn shutdown_releases_the_port_and_drops_stalled_calls() {
    let proxy = sink(Faults {
        stall: true,
        ..Faults::default()
    })
    .await;
    let addr = proxy.local_addr();
    let client = client_with_attempts(&proxy.endpoint_url(), 1).await;
    let stalled = tokio::spawn(async move { put(&client, "s").await });
    wait_until("a stalled PutRecords", || proxy.stats().faults.stalled == 1).await;
    within("shutdown", proxy.shutdown()).await;
    let err = within("the stalled call", stalled)
        .await
        .expect("task")
        .expect_err("no answer after shutdown");
    assert!(dispatch_failure(&err).is_some(), "{err:?}");
    tokio::net::TcpListener::bind(addr)
        .await
        .expect("the port is free again");
}
