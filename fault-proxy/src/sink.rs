//! The local sink: answers PutRecords, PutRecord, ListShards, DescribeStreamSummary and
//! DescribeStream itself, for any stream name, from a fixed shard layout; as a read sink, also
//! GetShardIterator and GetRecords over pre-generated records (see [`crate::reads`]).

use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{Response, StatusCode};
use serde_json::json;

use crate::reads::{GetRecordsInput, GetShardIteratorInput, ReadData, ReadSpec};
use crate::shards::{ShardMap, SinkShard, partition_key_hash};
use crate::stats::{Counters, add};
use crate::wire::{
    ACCOUNT_ID, Body, EntryFault, PutRecordInput, PutRecordsInput, StreamRequest,
    base64_decoded_len, error_response, json_response, write_failed_entry,
};

/// Most entries in one PutRecords request.
pub(crate) const MAX_PUT_RECORDS_ENTRIES: usize = 500;
/// Most bytes of data in one record (the default MaxRecordSize).
pub(crate) const MAX_RECORD_DATA: usize = 1024 * 1024;
/// Most bytes of data in one record of a stream whose MaxRecordSize was raised.
pub(crate) const MAX_RAISED_RECORD_DATA: usize = 10 * 1024 * 1024;
/// Most bytes of data plus partition keys in one PutRecords request.
pub(crate) const MAX_PUT_RECORDS_BYTES: usize = 5 * 1024 * 1024;
/// The same for a stream whose MaxRecordSize was raised.
pub(crate) const MAX_RAISED_PUT_RECORDS_BYTES: usize = 10 * 1024 * 1024;
/// Most characters in a partition key.
pub(crate) const MAX_PARTITION_KEY_CHARS: usize = 256;
/// ListShards page size when the request has no MaxResults.
const DEFAULT_LIST_SHARDS_PAGE: usize = 1000;
/// Prefix of the sink's ListShards NextToken (followed by the next shard index).
const NEXT_TOKEN_PREFIX: &str = "fault-proxy-sink:";

/// Why the sink refuses a request: answered HTTP 400 with this error type and message.
#[derive(Debug)]
pub(crate) struct Refusal {
    error_type: &'static str,
    message: String,
}

impl Refusal {
    pub(crate) fn validation(message: String) -> Self {
        Self {
            error_type: "ValidationException",
            message,
        }
    }

    pub(crate) fn invalid_argument(message: String) -> Self {
        Self {
            error_type: "InvalidArgumentException",
            message,
        }
    }

    /// A shard (or stream) that does not exist.
    pub(crate) fn resource_not_found(message: String) -> Self {
        Self {
            error_type: "ResourceNotFoundException",
            message,
        }
    }

    /// A request body the sink cannot parse.
    pub(crate) fn serialization(err: &serde_json::Error) -> Self {
        Self {
            error_type: "SerializationException",
            message: format!("cannot parse the request body: {err}"),
        }
    }

    /// An operation the sink does not implement.
    pub(crate) fn unknown_operation(operation: &str) -> Self {
        Self {
            error_type: "UnknownOperationException",
            message: format!("the fault-proxy sink does not implement {operation:?}"),
        }
    }

    /// The HTTP 400 answer.
    pub(crate) fn into_response(self) -> Response<Body> {
        error_response(StatusCode::BAD_REQUEST, self.error_type, &self.message)
    }
}

/// The sink's state: its shards (with their sequence counters), its creation time and, for a
/// read sink, the records GetRecords serves.
#[derive(Debug)]
pub(crate) struct Sink {
    map: ShardMap,
    created: f64,
    reads: Option<ReadData>,
    max_record_data: usize,
    max_request_bytes: usize,
}

impl Sink {
    pub(crate) fn new(shards: u32) -> Self {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |elapsed| elapsed.as_secs_f64().floor());
        Self {
            map: ShardMap::even(shards),
            created,
            reads: None,
            max_record_data: MAX_RECORD_DATA,
            max_request_bytes: MAX_PUT_RECORDS_BYTES,
        }
    }

    /// A stream whose MaxRecordSize was raised to `max_record_data` bytes (checked by the
    /// caller to be 1 to 10 MiB): PutRecords requests may then carry 10 MiB.
    pub(crate) fn with_max_record_size(mut self, max_record_data: usize) -> Self {
        self.max_record_data = max_record_data;
        if max_record_data > MAX_RECORD_DATA {
            self.max_request_bytes = MAX_RAISED_PUT_RECORDS_BYTES;
        }
        self
    }

    /// A read sink: generates `spec`'s records for every shard (CPU-bound: call it off the
    /// async threads).
    pub(crate) fn with_reads(shards: u32, spec: ReadSpec) -> Self {
        let mut sink = Self::new(shards);
        sink.reads = Some(ReadData::generate(&sink.map, spec));
        sink
    }

    /// Answers GetShardIterator (a read sink only).
    pub(crate) fn get_shard_iterator(
        &self,
        input: &GetShardIteratorInput<'_>,
    ) -> Result<Response<Body>, Refusal> {
        match &self.reads {
            Some(reads) => reads.get_shard_iterator(&self.map, input),
            None => Err(Refusal::unknown_operation("GetShardIterator")),
        }
    }

    /// Answers GetRecords (a read sink only) and counts the records it returns.
    pub(crate) fn get_records(
        &self,
        input: &GetRecordsInput<'_>,
        counters: &Counters,
    ) -> Result<Response<Body>, Refusal> {
        let Some(reads) = &self.reads else {
            return Err(Refusal::unknown_operation("GetRecords"));
        };
        let (response, records) = reads.get_records(input)?;
        add(&counters.records_read, records);
        Ok(response)
    }

    /// The shard a record goes to.
    fn route(&self, partition_key: &str, explicit_hash_key: Option<&str>) -> Option<&SinkShard> {
        let hash = match explicit_hash_key {
            Some(key) => key.parse::<u128>().ok()?,
            None => partition_key_hash(partition_key),
        };
        self.map.shard_for(hash)
    }

    /// Checks one record against the service limits; returns its data plus key size.
    fn validate_record(
        &self,
        index: usize,
        data: &str,
        partition_key: &str,
        explicit_hash_key: Option<&str>,
    ) -> Result<usize, Refusal> {
        let key_chars = partition_key.chars().count();
        if key_chars == 0 || key_chars > MAX_PARTITION_KEY_CHARS {
            return Err(Refusal::validation(format!(
                "1 validation error detected: Value at 'records.{}.member.partitionKey' failed to \
                 satisfy constraint: Member must have length between 1 and {MAX_PARTITION_KEY_CHARS}",
                index + 1
            )));
        }
        let data_len = base64_decoded_len(data);
        if data_len > self.max_record_data {
            return Err(Refusal::validation(format!(
                "1 validation error detected: Value at 'records.{}.member.data' failed to satisfy \
                 constraint: Member must have length less than or equal to {}",
                index + 1,
                self.max_record_data
            )));
        }
        if let Some(key) = explicit_hash_key
            && (key.is_empty()
                || !key.bytes().all(|b| b.is_ascii_digit())
                || key.parse::<u128>().is_err())
        {
            return Err(Refusal::invalid_argument(format!(
                "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. \
                 Specified value was {key}"
            )));
        }
        Ok(data_len + partition_key.len())
    }

    /// Checks a PutRecords request against the service limits.
    pub(crate) fn validate_put_records(&self, input: &PutRecordsInput<'_>) -> Result<(), Refusal> {
        let count = input.records.len();
        if count == 0 || count > MAX_PUT_RECORDS_ENTRIES {
            return Err(Refusal::validation(format!(
                "1 validation error detected: Value at 'records' failed to satisfy constraint: \
                 Member must have length between 1 and {MAX_PUT_RECORDS_ENTRIES} (got {count})"
            )));
        }
        let mut total = 0;
        for (index, entry) in input.records.iter().enumerate() {
            total += self.validate_record(
                index,
                &entry.data,
                &entry.partition_key,
                entry.explicit_hash_key.as_deref(),
            )?;
        }
        if total > self.max_request_bytes {
            return Err(Refusal::invalid_argument(format!(
                "Records size exceeds {} MB limit (data and partition keys: {total} bytes)",
                self.max_request_bytes / (1024 * 1024)
            )));
        }
        Ok(())
    }

    /// Answers a (valid) PutRecords request; entries that `faults` fails are answered with
    /// their error and take no sequence number. An empty `faults` fails nothing.
    pub(crate) fn put_records(
        &self,
        input: &PutRecordsInput<'_>,
        faults: &[EntryFault],
        counters: &Counters,
    ) -> Response<Body> {
        let stream = input.stream();
        let fault_of = |index: usize| faults.get(index).copied().unwrap_or(EntryFault::Forward);
        let mut failed = 0u64;
        let mut throttled = 0u64;
        for index in 0..input.records.len() {
            match fault_of(index) {
                EntryFault::Forward => {}
                EntryFault::Throttled => {
                    failed += 1;
                    throttled += 1;
                }
                EntryFault::InternalFailure => failed += 1,
            }
        }
        let mut out = Vec::with_capacity(48 + input.records.len() * 72);
        // Writing to a Vec cannot fail.
        let _ = write!(out, "{{\"FailedRecordCount\":{failed},\"Records\":[");
        for (index, entry) in input.records.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            // Validation checked every explicit hash key, so every entry has a shard.
            let shard = self.route(&entry.partition_key, entry.explicit_hash_key.as_deref());
            match (fault_of(index), shard) {
                (EntryFault::Forward, Some(shard)) => write_success(&mut out, shard),
                (fault, shard) => {
                    write_failed_entry(&mut out, fault, stream, shard.map(|s| s.id.as_str()));
                }
            }
        }
        out.extend_from_slice(b"]}");
        let count = input.records.len() as u64;
        add(&counters.entries_forwarded, count - failed);
        add(&counters.entries_throttled, throttled);
        add(&counters.entries_internal_failure, failed - throttled);
        json_response(StatusCode::OK, out)
    }

    /// Answers a PutRecord request.
    pub(crate) fn put_record(
        &self,
        input: &PutRecordInput<'_>,
        counters: &Counters,
    ) -> Response<Body> {
        let key = input.explicit_hash_key.as_deref();
        if let Err(refusal) = self.validate_record(0, &input.data, &input.partition_key, key) {
            return refusal.into_response();
        }
        let Some(shard) = self.route(&input.partition_key, key) else {
            return Refusal::invalid_argument("Invalid ExplicitHashKey.".to_owned())
                .into_response();
        };
        let mut out = Vec::with_capacity(96);
        out.extend_from_slice(b"{\"ShardId\":\"");
        out.extend_from_slice(shard.id.as_bytes());
        out.extend_from_slice(b"\",\"SequenceNumber\":\"");
        shard.write_next_sequence_number(&mut out);
        out.extend_from_slice(b"\"}");
        add(&counters.entries_forwarded, 1);
        json_response(StatusCode::OK, out)
    }

    fn shard_json(shard: &SinkShard) -> serde_json::Value {
        json!({
            "ShardId": shard.id,
            "HashKeyRange": {
                "StartingHashKey": shard.start.to_string(),
                "EndingHashKey": shard.end.to_string(),
            },
            "SequenceNumberRange": {
                "StartingSequenceNumber": shard.starting_sequence_number(),
            },
        })
    }

    fn arn(stream: &str) -> String {
        format!("arn:aws:kinesis:us-east-1:{ACCOUNT_ID}:stream/{stream}")
    }

    /// Answers ListShards (pages by MaxResults / NextToken / ExclusiveStartShardId).
    pub(crate) fn list_shards(&self, request: &StreamRequest<'_>) -> Response<Body> {
        let shards = self.map.shards();
        let start = if let Some(token) = request.next_token.as_deref() {
            match token
                .strip_prefix(NEXT_TOKEN_PREFIX)
                .and_then(|index| index.parse::<usize>().ok())
            {
                Some(index) => index,
                None => {
                    return Refusal::invalid_argument(format!("Invalid NextToken {token:?}"))
                        .into_response();
                }
            }
        } else if let Some(after) = request.exclusive_start_shard_id.as_deref() {
            // Shards after `after` in shard-id order (ids are zero-padded, so string order).
            shards.partition_point(|shard| shard.id.as_str() <= after)
        } else {
            0
        };
        let page = match request.max_results {
            Some(max) if max > 0 => usize::try_from(max).unwrap_or(usize::MAX),
            _ => DEFAULT_LIST_SHARDS_PAGE,
        };
        let end = start.saturating_add(page).min(shards.len());
        let listed: Vec<_> = shards
            .get(start..end)
            .unwrap_or_default()
            .iter()
            .map(Self::shard_json)
            .collect();
        let mut body = json!({ "Shards": listed });
        if end < shards.len() {
            body["NextToken"] = json!(format!("{NEXT_TOKEN_PREFIX}{end}"));
        }
        json_response(StatusCode::OK, body.to_string())
    }

    /// Answers DescribeStreamSummary: every stream exists, is ACTIVE and has the sink's shards.
    pub(crate) fn describe_stream_summary(&self, request: &StreamRequest<'_>) -> Response<Body> {
        let stream = request.stream();
        let body = json!({
            "StreamDescriptionSummary": {
                "StreamName": stream,
                "StreamARN": Self::arn(stream),
                "StreamStatus": "ACTIVE",
                "StreamModeDetails": { "StreamMode": "PROVISIONED" },
                "RetentionPeriodHours": 24,
                "StreamCreationTimestamp": self.created,
                "EnhancedMonitoring": [{ "ShardLevelMetrics": [] }],
                "EncryptionType": "NONE",
                "OpenShardCount": self.map.shards().len(),
                "ConsumerCount": 0,
            }
        });
        json_response(StatusCode::OK, body.to_string())
    }

    /// Answers DescribeStream (all shards on one page).
    pub(crate) fn describe_stream(&self, request: &StreamRequest<'_>) -> Response<Body> {
        let stream = request.stream();
        let shards: Vec<_> = self.map.shards().iter().map(Self::shard_json).collect();
        let body = json!({
            "StreamDescription": {
                "StreamName": stream,
                "StreamARN": Self::arn(stream),
                "StreamStatus": "ACTIVE",
                "StreamModeDetails": { "StreamMode": "PROVISIONED" },
                "Shards": shards,
                "HasMoreShards": false,
                "RetentionPeriodHours": 24,
                "StreamCreationTimestamp": self.created,
                "EnhancedMonitoring": [{ "ShardLevelMetrics": [] }],
                "EncryptionType": "NONE",
            }
        });
        json_response(StatusCode::OK, body.to_string())
    }
}

/// Appends a successful PutRecords response entry to `out`.
fn write_success(out: &mut Vec<u8>, shard: &SinkShard) {
    out.extend_from_slice(b"{\"SequenceNumber\":\"");
    shard.write_next_sequence_number(out);
    out.extend_from_slice(b"\",\"ShardId\":\"");
    // Shard ids are `shardId-` and digits: nothing to escape.
    out.extend_from_slice(shard.id.as_bytes());
    out.extend_from_slice(b"\"}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(response: Response<Body>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn put_records_routes_by_md5_and_explicit_key() {
        let sink = Sink::new(4);
        let counters = Counters::default();
        let body = br#"{"StreamName":"s","Records":[
            {"Data":"YQ==","PartitionKey":"a"},
            {"Data":"YQ==","PartitionKey":"a","ExplicitHashKey":"340282366920938463463374607431768211455"},
            {"Data":"YQ==","PartitionKey":"b"}
        ]}"#;
        let input: PutRecordsInput<'_> = serde_json::from_slice(body).unwrap();
        sink.validate_put_records(&input).unwrap();
        let faults = [
            EntryFault::Forward,
            EntryFault::Forward,
            EntryFault::Throttled,
        ];
        let out = body_json(sink.put_records(&input, &faults, &counters)).await;
        assert_eq!(out["FailedRecordCount"], 1);
        // MD5("a") starts with 0x0c: the first quarter.
        assert_eq!(out["Records"][0]["ShardId"], "shardId-000000000000");
        assert_eq!(out["Records"][1]["ShardId"], "shardId-000000000003");
        assert_eq!(
            out["Records"][2]["ErrorCode"],
            "ProvisionedThroughputExceededException"
        );
        // MD5("b") = 92eb5ffe...: the third quarter.
        assert_eq!(
            out["Records"][2]["ErrorMessage"],
            "Rate exceeded for shard shardId-000000000002 in stream s under account 000000000000."
        );
        let stats = counters.snapshot();
        assert_eq!(
            (stats.entries_forwarded, stats.entries_failed_injected),
            (2, 1)
        );
    }

    #[test]
    fn limits_are_enforced() {
        let sink = Sink::new(1);
        let check = |body: String| {
            let input: PutRecordsInput<'_> = serde_json::from_str(&body).unwrap();
            sink.validate_put_records(&input)
                .map_err(|r| r.into_response().status())
        };
        let entry = r#"{"Data":"YQ==","PartitionKey":"k"}"#;
        let many = vec![entry; 501].join(",");
        assert_eq!(
            check(format!(r#"{{"Records":[{many}]}}"#)),
            Err(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            check(r#"{"Records":[]}"#.to_owned()),
            Err(StatusCode::BAD_REQUEST)
        );
        let long_key = "k".repeat(257);
        assert!(
            check(format!(
                r#"{{"Records":[{{"Data":"","PartitionKey":"{long_key}"}}]}}"#
            ))
            .is_err()
        );
        assert!(
            check(
                r#"{"Records":[{"Data":"","PartitionKey":"k","ExplicitHashKey":"-1"}]}"#.to_owned()
            )
            .is_err()
        );
        assert!(
            check(
                r#"{"Records":[{"Data":"","PartitionKey":"k","ExplicitHashKey":"340282366920938463463374607431768211456"}]}"#
                    .to_owned()
            )
            .is_err()
        );
        let many = vec![entry; 500].join(",");
        assert_eq!(check(format!(r#"{{"Records":[{many}]}}"#)), Ok(()));
    }

    #[tokio::test]
    async fn list_shards_pages() {
        let sink = Sink::new(5);
        let first = StreamRequest {
            max_results: Some(2),
            ..StreamRequest::default()
        };
        let out = body_json(sink.list_shards(&first)).await;
        assert_eq!(out["Shards"].as_array().unwrap().len(), 2);
        let token = out["NextToken"].as_str().unwrap().to_owned();
        let next = StreamRequest {
            next_token: Some(token.into()),
            max_results: Some(10),
            ..StreamRequest::default()
        };
        let out = body_json(sink.list_shards(&next)).await;
        assert_eq!(out["Shards"][0]["ShardId"], "shardId-000000000002");
        assert_eq!(out["Shards"].as_array().unwrap().len(), 3);
        assert!(out.get("NextToken").is_none());
        let after = StreamRequest {
            exclusive_start_shard_id: Some("shardId-000000000003".into()),
            ..StreamRequest::default()
        };
        let out = body_json(sink.list_shards(&after)).await;
        assert_eq!(out["Shards"][0]["ShardId"], "shardId-000000000004");
    }
}
