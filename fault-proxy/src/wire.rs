//! The awsJson1_1 wire format pieces the proxy reads and writes.
//!
//! Requests are `POST /` with `X-Amz-Target: Kinesis_20131202.<Operation>` and a JSON body;
//! blobs are base64 strings. Errors are a non-2xx status with
//! `{"__type":"<Code>","message":"..."}`.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use hyper::body::{Frame, SizeHint};
use serde::Deserialize;

/// The response body of the proxy: byte chunks sent one after the other, with an exact length
/// (so `Content-Length` is set). Several chunks let the read sink answer GetRecords with a
/// slice of its pre-encoded records between a prefix and a suffix, without copying it.
#[derive(Debug, Default)]
pub(crate) struct Body {
    chunks: VecDeque<Bytes>,
}

impl Body {
    /// A body of one chunk.
    pub(crate) fn new(bytes: Bytes) -> Self {
        Self::from_chunks([bytes])
    }

    /// A body of these chunks, in order (empty ones are left out).
    pub(crate) fn from_chunks(chunks: impl IntoIterator<Item = Bytes>) -> Self {
        Self {
            chunks: chunks.into_iter().filter(|c| !c.is_empty()).collect(),
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(
            self.get_mut()
                .chunks
                .pop_front()
                .map(|c| Ok(Frame::data(c))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.chunks.iter().map(|c| c.len() as u64).sum())
    }
}

/// Content type of every awsJson1_1 request and response.
pub(crate) const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// The account id used in messages and ARNs (kinesis-mock's default).
pub(crate) const ACCOUNT_ID: &str = "000000000000";

/// `ErrorCode` of a throttled PutRecords entry (also the whole-call throttling `__type`).
pub(crate) const THROUGHPUT_EXCEEDED: &str = "ProvisionedThroughputExceededException";

/// `ErrorCode` of a PutRecords entry that failed inside the service.
pub(crate) const INTERNAL_FAILURE: &str = "InternalFailure";

/// The operation of a request: the part of `X-Amz-Target` after the last `.`, or `""`.
pub(crate) fn operation(target: Option<&HeaderValue>) -> &str {
    target
        .and_then(|value| value.to_str().ok())
        .map(|target| target.rsplit_once('.').map_or(target, |(_, op)| op))
        .unwrap_or("")
}

/// A JSON response with the awsJson1_1 content type.
pub(crate) fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    json_response_chunks(status, Body::new(body.into()))
}

/// A JSON response with the awsJson1_1 content type, whose body is already built.
pub(crate) fn json_response_chunks(status: StatusCode, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE),
    );
    response
}

#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "__type")]
    error_type: &'a str,
    message: &'a str,
}

/// An error response: `status` with `{"__type":error_type,"message":message}`.
pub(crate) fn error_response(
    status: StatusCode,
    error_type: &str,
    message: &str,
) -> Response<Body> {
    let body = serde_json::to_vec(&ErrorBody {
        error_type,
        message,
    })
    // Serializing two strings into a Vec cannot fail; an empty body still carries the status.
    .unwrap_or_default();
    let mut response = json_response(status, body);
    // The header the SDK reads first for the error code (it also reads `__type`).
    if let Ok(value) = HeaderValue::from_str(error_type) {
        response.headers_mut().insert("x-amzn-errortype", value);
    }
    response
}

/// A stream named by `StreamName`, or by the name part of `StreamARN`.
pub(crate) fn stream_name<'a>(name: Option<&'a str>, arn: Option<&'a str>) -> &'a str {
    name.or_else(|| arn.map(|arn| arn.rsplit_once('/').map_or(arn, |(_, name)| name)))
        .unwrap_or("")
}

/// A PutRecords request, borrowing from the body.
#[derive(Debug, Deserialize)]
pub(crate) struct PutRecordsInput<'a> {
    #[serde(rename = "Records", borrow)]
    pub(crate) records: Vec<EntryInput<'a>>,
    #[serde(rename = "StreamName", borrow, default)]
    pub(crate) stream_name: Option<Cow<'a, str>>,
    #[serde(rename = "StreamARN", borrow, default)]
    pub(crate) stream_arn: Option<Cow<'a, str>>,
}

impl PutRecordsInput<'_> {
    pub(crate) fn stream(&self) -> &str {
        stream_name(self.stream_name.as_deref(), self.stream_arn.as_deref())
    }
}

/// A PutRecords entry, or a whole PutRecord request (which has the same fields plus the stream).
#[derive(Debug, Deserialize)]
pub(crate) struct EntryInput<'a> {
    #[serde(rename = "Data", borrow)]
    pub(crate) data: Cow<'a, str>,
    #[serde(rename = "PartitionKey", borrow)]
    pub(crate) partition_key: Cow<'a, str>,
    #[serde(rename = "ExplicitHashKey", borrow, default)]
    pub(crate) explicit_hash_key: Option<Cow<'a, str>>,
}

/// A PutRecord request, borrowing from the body: an entry's fields (the stream is not needed).
pub(crate) type PutRecordInput<'a> = EntryInput<'a>;

/// The stream a request names (ListShards, DescribeStreamSummary, ...), borrowing from the body.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StreamRequest<'a> {
    #[serde(rename = "StreamName", borrow, default)]
    pub(crate) stream_name: Option<Cow<'a, str>>,
    #[serde(rename = "StreamARN", borrow, default)]
    pub(crate) stream_arn: Option<Cow<'a, str>>,
    #[serde(rename = "NextToken", borrow, default)]
    pub(crate) next_token: Option<Cow<'a, str>>,
    #[serde(rename = "ExclusiveStartShardId", borrow, default)]
    pub(crate) exclusive_start_shard_id: Option<Cow<'a, str>>,
    #[serde(rename = "MaxResults", default)]
    pub(crate) max_results: Option<i64>,
}

impl StreamRequest<'_> {
    pub(crate) fn stream(&self) -> &str {
        stream_name(self.stream_name.as_deref(), self.stream_arn.as_deref())
    }
}

/// The decoded length of a padded base64 string (without decoding or checking it).
pub(crate) fn base64_decoded_len(encoded: &str) -> usize {
    let bytes = encoded.as_bytes();
    let padding = bytes.iter().rev().take(2).filter(|&&b| b == b'=').count();
    (bytes.len() / 4 * 3).saturating_sub(padding)
}

/// The injected outcome of one PutRecords entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryFault {
    /// Not injected: the entry goes upstream.
    Forward,
    /// Answered `ProvisionedThroughputExceededException`.
    Throttled,
    /// Answered `InternalFailure`.
    InternalFailure,
}

/// Appends a failed PutRecords response entry (`{"ErrorCode":...,"ErrorMessage":...}`) to `out`.
///
/// `shard` is the shard the entry would have gone to, when known.
pub(crate) fn write_failed_entry(
    out: &mut Vec<u8>,
    fault: EntryFault,
    stream: &str,
    shard: Option<&str>,
) {
    out.extend_from_slice(b"{\"ErrorCode\":\"");
    match fault {
        EntryFault::Forward | EntryFault::Throttled => {
            out.extend_from_slice(THROUGHPUT_EXCEEDED.as_bytes());
            out.extend_from_slice(b"\",\"ErrorMessage\":\"Rate exceeded for shard ");
            out.extend_from_slice(shard.unwrap_or("(unknown)").as_bytes());
            out.extend_from_slice(b" in stream ");
            write_json_string_contents(out, stream);
            out.extend_from_slice(b" under account ");
            out.extend_from_slice(ACCOUNT_ID.as_bytes());
            out.extend_from_slice(b".\"}");
        }
        EntryFault::InternalFailure => {
            out.extend_from_slice(INTERNAL_FAILURE.as_bytes());
            out.extend_from_slice(b"\",\"ErrorMessage\":\"Internal service failure.\"}");
        }
    }
}

/// Appends `text` JSON-escaped, without the surrounding quotes.
pub(crate) fn write_json_string_contents(out: &mut Vec<u8>, text: &str) {
    let start = out.len();
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
    // Remove the quotes serde_json wrote around the string.
    out.remove(start);
    out.pop();
}

/// A PutRecords request split by injected entry faults: the request to forward (only the
/// entries whose fault is [`EntryFault::Forward`]) and the stream name for messages.
#[derive(Debug)]
pub(crate) struct SplitPutRecords {
    /// The JSON body to forward; `None` when every entry failed (nothing to forward).
    pub(crate) forward_body: Option<Vec<u8>>,
    pub(crate) forwarded: usize,
    pub(crate) stream: String,
}

/// Why a PutRecords body or response could not be handled.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error("`Records` is missing or not an array")]
    NoRecords,
    #[error(
        "the upstream answered {upstream} entries for {forwarded} forwarded ones (FailedRecordCount {failed})"
    )]
    EntryCountMismatch {
        upstream: usize,
        forwarded: usize,
        failed: u64,
    },
    #[error("invalid JSON")]
    Json(#[from] serde_json::Error),
}

/// The number of entries in a PutRecords JSON body (errors when it is not one).
pub(crate) fn count_put_records_entries(body: &[u8]) -> Result<usize, WireError> {
    #[derive(Deserialize)]
    struct Count {
        #[serde(rename = "Records")]
        records: Vec<serde::de::IgnoredAny>,
    }
    Ok(serde_json::from_slice::<Count>(body)?.records.len())
}

/// Removes the entries that `faults` fails from a PutRecords JSON body.
pub(crate) fn split_put_records(
    body: &[u8],
    faults: &[EntryFault],
) -> Result<SplitPutRecords, WireError> {
    let mut request: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)?;
    let stream = stream_name(
        request.get("StreamName").and_then(|v| v.as_str()),
        request.get("StreamARN").and_then(|v| v.as_str()),
    )
    .to_owned();
    let records = match request.get_mut("Records") {
        Some(serde_json::Value::Array(records)) => std::mem::take(records),
        _ => return Err(WireError::NoRecords),
    };
    let kept: Vec<serde_json::Value> = records
        .into_iter()
        .zip(faults.iter().chain(std::iter::repeat(&EntryFault::Forward)))
        .filter(|(_, fault)| **fault == EntryFault::Forward)
        .map(|(record, _)| record)
        .collect();
    let forwarded = kept.len();
    let forward_body = if kept.is_empty() {
        None
    } else {
        request.insert("Records".to_owned(), serde_json::Value::Array(kept));
        Some(serde_json::to_vec(&request)?)
    };
    Ok(SplitPutRecords {
        forward_body,
        forwarded,
        stream,
    })
}

/// Merges the upstream's answer for the forwarded entries with the injected failures, in the
/// original entry order, and fixes `FailedRecordCount`. `upstream` is `None` when nothing was
/// forwarded.
pub(crate) fn merge_put_records(
    upstream: Option<&[u8]>,
    faults: &[EntryFault],
    forwarded: usize,
    stream: &str,
) -> Result<Vec<u8>, WireError> {
    let mut response: serde_json::Map<String, serde_json::Value> = match upstream {
        Some(body) => serde_json::from_slice(body)?,
        None => serde_json::Map::new(),
    };
    let upstream_failed = response
        .get("FailedRecordCount")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    let upstream_entries = match response.remove("Records") {
        Some(serde_json::Value::Array(records)) => records,
        None if upstream.is_none() => Vec::new(),
        _ => return Err(WireError::NoRecords),
    };
    if upstream_entries.len() != forwarded {
        return Err(WireError::EntryCountMismatch {
            upstream: upstream_entries.len(),
            forwarded,
            failed: upstream_failed,
        });
    }
    let mut upstream_entries = upstream_entries.into_iter();
    let mut injected = 0u64;
    let mut merged = Vec::with_capacity(faults.len());
    let mut scratch = Vec::new();
    for &fault in faults {
        if fault == EntryFault::Forward {
            // The count matched above, so the upstream has an entry for every forwarded one.
            merged.extend(upstream_entries.next());
        } else {
            injected += 1;
            scratch.clear();
            write_failed_entry(&mut scratch, fault, stream, None);
            merged.push(serde_json::from_slice(&scratch)?);
        }
    }
    response.insert(
        "FailedRecordCount".to_owned(),
        serde_json::Value::from(upstream_failed + injected),
    );
    response.insert("Records".to_owned(), serde_json::Value::Array(merged));
    Ok(serde_json::to_vec(&response)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn operation_from_target() {
        let target = HeaderValue::from_static("Kinesis_20131202.PutRecords");
        assert_eq!(operation(Some(&target)), "PutRecords");
        assert_eq!(operation(None), "");
    }

    #[test]
    fn stream_from_arn() {
        assert_eq!(
            stream_name(
                None,
                Some("arn:aws:kinesis:us-east-1:000000000000:stream/s1")
            ),
            "s1"
        );
        assert_eq!(stream_name(Some("a"), Some("x/b")), "a");
    }

    #[test]
    fn base64_lengths() {
        assert_eq!(base64_decoded_len(""), 0);
        assert_eq!(base64_decoded_len("YQ=="), 1);
        assert_eq!(base64_decoded_len("YWI="), 2);
        assert_eq!(base64_decoded_len("YWJj"), 3);
    }

    #[test]
    fn failed_entries_are_valid_json() {
        let mut out = Vec::new();
        write_failed_entry(
            &mut out,
            EntryFault::Throttled,
            "s\"1",
            Some("shardId-000000000001"),
        );
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["ErrorCode"], THROUGHPUT_EXCEEDED);
        assert_eq!(
            value["ErrorMessage"],
            "Rate exceeded for shard shardId-000000000001 in stream s\"1 under account 000000000000."
        );
        out.clear();
        write_failed_entry(&mut out, EntryFault::InternalFailure, "s", None);
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["ErrorCode"], INTERNAL_FAILURE);
    }

    #[test]
    fn split_and_merge_keep_order() {
        use EntryFault::*;
        let request = json!({
            "StreamName": "s",
            "Records": [
                {"Data": "MA==", "PartitionKey": "0"},
                {"Data": "MQ==", "PartitionKey": "1"},
                {"Data": "Mg==", "PartitionKey": "2"},
                {"Data": "Mw==", "PartitionKey": "3"},
            ]
        });
        let faults = [Throttled, Forward, InternalFailure, Forward];
        let split = split_put_records(&serde_json::to_vec(&request).unwrap(), &faults).unwrap();
        assert_eq!(split.forwarded, 2);
        assert_eq!(split.stream, "s");
        let forwarded: serde_json::Value =
            serde_json::from_slice(split.forward_body.as_deref().unwrap()).unwrap();
        assert_eq!(forwarded["Records"][0]["PartitionKey"], "1");
        assert_eq!(forwarded["Records"][1]["PartitionKey"], "3");
        assert_eq!(forwarded["StreamName"], "s");

        let upstream = json!({
            "FailedRecordCount": 1,
            "EncryptionType": "NONE",
            "Records": [
                {"SequenceNumber": "1", "ShardId": "shardId-000000000000"},
                {"ErrorCode": "InternalFailure", "ErrorMessage": "x"},
            ]
        });
        let merged = merge_put_records(
            Some(&serde_json::to_vec(&upstream).unwrap()),
            &faults,
            split.forwarded,
            &split.stream,
        )
        .unwrap();
        let merged: serde_json::Value = serde_json::from_slice(&merged).unwrap();
        assert_eq!(merged["FailedRecordCount"], 3);
        assert_eq!(merged["EncryptionType"], "NONE");
        let records = merged["Records"].as_array().unwrap();
        assert_eq!(records.len(), 4);
        assert_eq!(records[0]["ErrorCode"], THROUGHPUT_EXCEEDED);
        assert_eq!(records[1]["SequenceNumber"], "1");
        assert_eq!(records[2]["ErrorCode"], INTERNAL_FAILURE);
        assert_eq!(records[3]["ErrorMessage"], "x");
    }

    #[test]
    fn all_failed_needs_no_upstream() {
        use EntryFault::*;
        let request = json!({"StreamName": "s", "Records": [{"Data": "", "PartitionKey": "k"}]});
        let split =
            split_put_records(&serde_json::to_vec(&request).unwrap(), &[Throttled]).unwrap();
        assert!(split.forward_body.is_none());
        let merged = merge_put_records(None, &[Throttled], 0, "s").unwrap();
        let merged: serde_json::Value = serde_json::from_slice(&merged).unwrap();
        assert_eq!(merged["FailedRecordCount"], 1);
    }

    #[test]
    fn merge_rejects_count_mismatch() {
        let upstream = br#"{"FailedRecordCount":0,"Records":[]}"#;
        assert!(matches!(
            merge_put_records(Some(upstream), &[EntryFault::Forward], 1, "s"),
            Err(WireError::EntryCountMismatch { .. })
        ));
    }
}
