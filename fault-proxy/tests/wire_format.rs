//! What the AWS SDK actually sends: captured from a real `aws-sdk-kinesis` client by a bare TCP
//! listener, so the proxy's assumptions about the wire format are checked, not guessed.
//!
//! Needs no emulator.

use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use integration_tests::kinesis_client_at;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Reads one HTTP/1.1 request (headers, then a Content-Length body) from `stream`.
async fn read_request(stream: &mut tokio::net::TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = stream.read(&mut chunk).await.expect("read request");
        assert!(n > 0, "connection closed before the request headers ended");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
    };
    let head = String::from_utf8(buf[..header_end].to_vec()).expect("ASCII headers");
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .expect("a Content-Length header");
    let mut body = buf[header_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.expect("read body");
        assert!(n > 0, "connection closed inside the body");
        body.extend_from_slice(&chunk[..n]);
    }
    (head, body)
}

#[tokio::test]
async fn sdk_speaks_aws_json_1_1() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let request = read_request(&mut stream).await;
        let body = br#"{"FailedRecordCount":0,"Records":[{"SequenceNumber":"1","ShardId":"shardId-000000000000"}]}"#;
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body).await.unwrap();
        request
    });

    let client = kinesis_client_at(&endpoint).await;
    let data = b"\x00\xffhello".to_vec();
    let entry = PutRecordsRequestEntry::builder()
        .partition_key("pk-1")
        .explicit_hash_key("42")
        .data(Blob::new(data.clone()))
        .build()
        .unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        client
            .put_records()
            .stream_name("wire")
            .records(entry)
            .send(),
    )
    .await
    .expect("PutRecords finished")
    .expect("PutRecords succeeded against the canned answer");
    assert_eq!(out.records()[0].shard_id(), Some("shardId-000000000000"));

    let (head, body) = server.await.unwrap();
    let body_text = String::from_utf8_lossy(&body);
    eprintln!("---- request captured from aws-sdk-kinesis ----\n{head}{body_text}\n----");

    let mut lines = head.lines();
    assert_eq!(lines.next(), Some("POST / HTTP/1.1"));
    let header = |name: &str| {
        head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    assert_eq!(
        header("x-amz-target").as_deref(),
        Some("Kinesis_20131202.PutRecords")
    );
    assert_eq!(
        header("content-type").as_deref(),
        Some("application/x-amz-json-1.1")
    );
    assert!(
        header("authorization").is_some_and(|auth| auth.starts_with("AWS4-HMAC-SHA256")),
        "SigV4-signed"
    );
    let json: serde_json::Value = serde_json::from_slice(&body).expect("a JSON body");
    assert_eq!(json["StreamName"], "wire");
    let record = &json["Records"][0];
    assert_eq!(record["PartitionKey"], "pk-1");
    assert_eq!(record["ExplicitHashKey"], "42");
    assert_eq!(
        record["Data"],
        STANDARD.encode(&data),
        "blobs are padded base64"
    );
}
