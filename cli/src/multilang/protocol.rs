//! The MultiLangDaemon's JSON line messages: what the daemon writes to a child's stdin and
//! what it reads back from the child's stdout.
//!
//! Every key is always written, with `null` where there is no value (Jackson includes nulls,
//! and amazon-kclpy raises `KeyError` on a missing key), in the Java daemon's field order.
//! Reading is lenient the way Jackson is: a line that is not a JSON object with a known action
//! is skipped, unknown keys are ignored.

use aggregation_proto::DeaggregatedRecord;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::jsonl::encode_base64;

/// A message from the daemon to a child.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action")]
pub(crate) enum DaemonMessage {
    /// The first message: which shard, and the checkpoint processing resumes after.
    #[serde(rename = "initialize", rename_all = "camelCase")]
    Initialize {
        shard_id: String,
        /// A decimal sequence number or a sentinel (`TRIM_HORIZON`, `LATEST`, ...).
        sequence_number: Option<String>,
        /// Null only when `sequence_number` is.
        sub_sequence_number: Option<u64>,
    },
    /// A batch of records.
    #[serde(rename = "processRecords", rename_all = "camelCase")]
    ProcessRecords {
        records: Vec<RecordMessage>,
        millis_behind_latest: Option<i64>,
    },
    /// Another worker owns the shard now (or this one is leaving): stop, no checkpointing.
    #[serde(rename = "leaseLost")]
    LeaseLost,
    /// The shard is closed and fully read: the child must checkpoint.
    #[serde(rename = "shardEnded")]
    ShardEnded,
    /// This worker is shutting down gracefully: checkpoint what is done.
    #[serde(rename = "shutdownRequested")]
    ShutdownRequested,
    /// The answer to a child's checkpoint request.
    #[serde(rename = "checkpoint", rename_all = "camelCase")]
    Checkpoint {
        /// Echoed from the request.
        sequence_number: Value,
        /// Echoed from the request.
        sub_sequence_number: Value,
        /// Null, or the simple name of the Java exception the client libraries know.
        error: Option<&'static str>,
    },
}

impl DaemonMessage {
    /// The action name the child's status must answer with.
    pub(crate) fn action(&self) -> &'static str {
        match self {
            Self::Initialize { .. } => "initialize",
            Self::ProcessRecords { .. } => "processRecords",
            Self::LeaseLost => "leaseLost",
            Self::ShardEnded => "shardEnded",
            Self::ShutdownRequested => "shutdownRequested",
            Self::Checkpoint { .. } => "checkpoint",
        }
    }

    /// The message as one line, `\n` included.
    pub(crate) fn to_line(&self) -> Vec<u8> {
        // Serializing these types cannot fail: string keys, no maps with other keys.
        let mut line = serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec());
        line.push(b'\n');
        line
    }
}

/// One record of a `processRecords` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RecordMessage {
    /// Standard padded base64.
    pub(crate) data: String,
    pub(crate) partition_key: String,
    pub(crate) sequence_number: Option<String>,
    /// Epoch milliseconds; never null (amazon-kclpy calls `int()` on it).
    pub(crate) approximate_arrival_timestamp: i64,
    /// 0 unless the record was deaggregated.
    pub(crate) sub_sequence_number: u64,
    /// Always `"record"`: amazon-kclpy dispatches every JSON object on its action.
    pub(crate) action: &'static str,
}

impl RecordMessage {
    pub(crate) fn from_record(record: &DeaggregatedRecord) -> Self {
        let arrival = record
            .approximate_arrival_timestamp()
            .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |since| {
                i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
            });
        Self {
            data: encode_base64(record.data()),
            partition_key: record.partition_key().to_owned(),
            sequence_number: record.sequence_number().map(str::to_owned),
            approximate_arrival_timestamp: arrival,
            sub_sequence_number: record.sub_sequence_number().unwrap_or(0),
            action: "record",
        }
    }
}

/// A message from a child, as far as the daemon cares.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ChildMessage {
    /// The child finished the action `response_for`.
    Status { response_for: String },
    /// The child asks for a checkpoint and waits for the answer.
    Checkpoint(CheckpointRequest),
    /// A JSON object with another action: ignored, as Java's daemon does.
    Other { action: String },
}

/// A checkpoint request, with its fields as sent (they are echoed in the reply).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CheckpointRequest {
    pub(crate) sequence_number: Value,
    pub(crate) sub_sequence_number: Value,
}

/// Where a checkpoint request asks to checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RequestedPosition {
    /// No sequence number: the largest permitted position (the last record delivered, or
    /// SHARD_END once the shard ended).
    Largest,
    /// This record (sub-sequence 0 when none was given).
    At {
        sequence_number: String,
        sub_sequence_number: u64,
    },
}

impl CheckpointRequest {
    /// The requested position; `None` when the fields cannot name one (a sequence number that
    /// is neither a string nor a number, a negative or fractional sub-sequence number): the
    /// Java daemon answers those with `IllegalArgumentException`.
    pub(crate) fn position(&self) -> Option<RequestedPosition> {
        let sequence_number = match &self.sequence_number {
            Value::Null => return Some(RequestedPosition::Largest),
            Value::String(text) => text.clone(),
            Value::Number(number) => number.to_string(),
            _ => return None,
        };
        let sub_sequence_number = match &self.sub_sequence_number {
            Value::Null => 0,
            Value::Number(number) => number.as_u64()?,
            _ => return None,
        };
        Some(RequestedPosition::At {
            sequence_number,
            sub_sequence_number,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawChildMessage {
    action: String,
    response_for: Option<String>,
    #[serde(default)]
    sequence_number: Value,
    #[serde(default)]
    sub_sequence_number: Value,
}

/// Parses one line of a child's stdout; `None` for a line to skip (blank, not JSON, no
/// action, a status without `responseFor`).
pub(crate) fn parse_child_line(line: &[u8]) -> Option<ChildMessage> {
    let trimmed = line.trim_ascii();
    if trimmed.first() != Some(&b'{') {
        return None;
    }
    let raw: RawChildMessage = serde_json::from_slice(trimmed).ok()?;
    Some(match raw.action.as_str() {
        "status" => ChildMessage::Status {
            response_for: raw.response_for?,
        },
        "checkpoint" => ChildMessage::Checkpoint(CheckpointRequest {
            sequence_number: raw.sequence_number,
            sub_sequence_number: raw.sub_sequence_number,
        }),
        _ => ChildMessage::Other { action: raw.action },
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::json;

    use super::*;

    fn line(message: &DaemonMessage) -> String {
        String::from_utf8(message.to_line()).unwrap()
    }

    #[test]
    fn daemon_messages_have_every_key_in_javas_order() {
        let init = DaemonMessage::Initialize {
            shard_id: "shardId-000000000000".into(),
            sequence_number: Some("TRIM_HORIZON".into()),
            sub_sequence_number: Some(0),
        };
        assert_eq!(
            line(&init),
            "{\"action\":\"initialize\",\"shardId\":\"shardId-000000000000\",\"sequenceNumber\":\"TRIM_HORIZON\",\"subSequenceNumber\":0}\n"
        );
        let record = aggregation_proto::ReceivedRecord::new("pk", b"hi".to_vec())
            .with_sequence_number("4959")
            .with_arrival_time(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
        let records = aggregation_proto::deaggregate(&record);
        let batch = DaemonMessage::ProcessRecords {
            records: vec![RecordMessage::from_record(&records[0])],
            millis_behind_latest: None,
        };
        assert_eq!(
            line(&batch),
            "{\"action\":\"processRecords\",\"records\":[{\"data\":\"aGk=\",\"partitionKey\":\"pk\",\"sequenceNumber\":\"4959\",\"approximateArrivalTimestamp\":1700000000123,\"subSequenceNumber\":0,\"action\":\"record\"}],\"millisBehindLatest\":null}\n"
        );
        assert_eq!(
            line(&DaemonMessage::LeaseLost),
            "{\"action\":\"leaseLost\"}\n"
        );
        assert_eq!(
            line(&DaemonMessage::ShardEnded),
            "{\"action\":\"shardEnded\"}\n"
        );
        assert_eq!(
            line(&DaemonMessage::ShutdownRequested),
            "{\"action\":\"shutdownRequested\"}\n"
        );
        let reply = DaemonMessage::Checkpoint {
            sequence_number: Value::Null,
            sub_sequence_number: Value::Null,
            error: Some("IllegalArgumentException"),
        };
        assert_eq!(
            line(&reply),
            "{\"action\":\"checkpoint\",\"sequenceNumber\":null,\"subSequenceNumber\":null,\"error\":\"IllegalArgumentException\"}\n"
        );
    }

    #[test]
    fn child_lines_python_node_and_garbage() {
        assert_eq!(
            parse_child_line(b"{\"action\": \"status\", \"responseFor\": \"initialize\"}\n"),
            Some(ChildMessage::Status {
                response_for: "initialize".into()
            })
        );
        // Python's checkpoint, with a sub-sequence; Node's, without.
        assert_eq!(
            parse_child_line(
                b"  {\"action\": \"checkpoint\", \"sequenceNumber\": \"12\", \"subSequenceNumber\": 3}"
            ),
            Some(ChildMessage::Checkpoint(CheckpointRequest {
                sequence_number: json!("12"),
                sub_sequence_number: json!(3),
            }))
        );
        let node =
            parse_child_line(b"{\"action\":\"checkpoint\",\"sequenceNumber\":null}").unwrap();
        let ChildMessage::Checkpoint(request) = node else {
            panic!("{node:?}")
        };
        assert_eq!(request.position(), Some(RequestedPosition::Largest));
        for garbage in [
            &b""[..],
            b"\n",
            b"Record processed",
            b"{not json",
            b"[1,2]",
            b"{\"no\":\"action\"}",
            b"{\"action\":\"status\"}",
            b"{\"action\":7}",
        ] {
            assert_eq!(parse_child_line(garbage), None, "{garbage:?}");
        }
        assert_eq!(
            parse_child_line(b"{\"action\":\"shutdown\",\"reason\":\"x\"}"),
            Some(ChildMessage::Other {
                action: "shutdown".into()
            })
        );
    }

    #[test]
    fn requested_positions() {
        let at = |seq: Value, sub: Value| {
            CheckpointRequest {
                sequence_number: seq,
                sub_sequence_number: sub,
            }
            .position()
        };
        assert_eq!(
            at(json!("42"), Value::Null),
            Some(RequestedPosition::At {
                sequence_number: "42".into(),
                sub_sequence_number: 0
            })
        );
        assert_eq!(
            at(json!(42), json!(2)),
            Some(RequestedPosition::At {
                sequence_number: "42".into(),
                sub_sequence_number: 2
            })
        );
        assert_eq!(at(json!("42"), json!(-1)), None);
        assert_eq!(at(json!("42"), json!(1.5)), None);
        assert_eq!(at(json!(["42"]), Value::Null), None);
        assert_eq!(at(Value::Null, json!(3)), Some(RequestedPosition::Largest));
    }
}
