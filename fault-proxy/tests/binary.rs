//! The `fault-proxy` binary: prints its endpoint URL first, serves, and exits on SIGTERM with
//! its counters on stderr. Needs no emulator.

mod common;

use std::process::Stdio;

use common::{client_with_attempts, within};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn binary_prints_its_endpoint_and_serves() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fault-proxy"))
        .args(["--sink", "--shards", "3", "--throttle-rate", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn fault-proxy");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut first_line = String::new();
    within(
        "the endpoint line",
        BufReader::new(stdout).read_line(&mut first_line),
    )
    .await
    .expect("read stdout");
    let endpoint = first_line.trim();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{first_line:?}");

    let client = client_with_attempts(endpoint, 1).await;
    let shards = client
        .list_shards()
        .stream_name("bin")
        .send()
        .await
        .expect("ListShards is not faulted");
    assert_eq!(shards.shards().len(), 3);
    let err = client
        .put_records()
        .stream_name("bin")
        .set_records(Some(common::entries("bin", 1)))
        .send()
        .await
        .expect_err("--throttle-rate 1 throttles every PutRecords");
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_provisioned_throughput_exceeded_exception())
    );

    let pid = child.id().expect("running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let status = within("exit after SIGTERM", child.wait())
        .await
        .expect("wait");
    assert!(status.success(), "{status:?}");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut stderr)
        .await
        .expect("read stderr");
    let stats: serde_json::Value = serde_json::from_str(stderr.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|err| panic!("counters as JSON on stderr ({err}): {stderr}"));
    assert_eq!(stats["faults"]["throttled"], 1);
    assert_eq!(stats["requests"]["ListShards"], 1);
}
