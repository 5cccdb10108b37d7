//! Between the AWS SDK's shapes and the [types](super::types): pure functions, so each is
//! tested without a network.

use std::time::{Duration, SystemTime};

use aggregation_proto::{HashRange, ReceivedRecord};
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::{Blob, DateTime};
use aws_sdk_kinesis::types as sdk;
use aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError as StreamError;
use bytes::Bytes;
use bytestring::ByteString;

use super::operation::{PUT_RECORDS, SUBSCRIBE_TO_SHARD};
use super::types::{
    ChildShard, ConsumerInfo, ConsumerStatus, PutEntry, PutResult, RecordsPage, ShardEvent,
    StreamSummary, SubscribeStart,
};
use crate::error::{ErrorClass, KinesisError, classify_code};

/// An error for an answer the caller cannot use.
pub(super) fn malformed(operation: &'static str, reason: &'static str) -> KinesisError {
    KinesisError::new(
        operation,
        ErrorClass::Malformed,
        "MalformedResponse",
        reason,
    )
}

/// An error for a request the SDK could not build.
pub(super) fn construction_failure(
    operation: &'static str,
    error: impl std::fmt::Display,
) -> KinesisError {
    KinesisError::new(
        operation,
        ErrorClass::InvalidRequest,
        "ConstructionFailure",
        error.to_string(),
    )
}

/// PutRecords' request entries. The data is copied once per entry (the SDK's `Blob` owns a
/// `Vec<u8>`).
pub(super) fn put_request_entries(
    entries: &[PutEntry],
) -> Result<Vec<sdk::PutRecordsRequestEntry>, KinesisError> {
    entries
        .iter()
        .map(|entry| {
            sdk::PutRecordsRequestEntry::builder()
                .partition_key(&entry.partition_key)
                .set_explicit_hash_key(entry.explicit_hash_key.clone())
                .data(Blob::new(entry.data.to_vec()))
                .build()
                .map_err(|error| construction_failure(PUT_RECORDS, error))
        })
        .collect()
}

/// PutRecords' answer, one result per entry the service answered, in order. An entry with no
/// error code but without a shard or sequence number cannot be counted as stored: it is a
/// failure with the code `MissingResult`.
pub(super) fn put_results(entries: &[sdk::PutRecordsResultEntry]) -> Vec<PutResult> {
    entries
        .iter()
        .map(|entry| {
            match (
                entry.error_code(),
                entry.shard_id(),
                entry.sequence_number(),
            ) {
                (None, Some(shard_id), Some(sequence_number)) => PutResult::Stored {
                    shard_id: shard_id.to_owned(),
                    sequence_number: sequence_number.to_owned(),
                },
                (code, _, _) => PutResult::Failed {
                    code: code.unwrap_or("MissingResult").to_owned(),
                    message: entry.error_message().unwrap_or_default().to_owned(),
                },
            }
        })
        .collect()
}

/// The SDK's record as deaggregation input, without copying data or strings.
pub(super) fn received(record: sdk::Record) -> ReceivedRecord {
    let sdk::Record {
        sequence_number,
        approximate_arrival_timestamp,
        data,
        partition_key,
        ..
    } = record;
    let received = ReceivedRecord::new(
        ByteString::from(partition_key),
        Bytes::from(data.into_inner()),
    )
    .with_sequence_number(ByteString::from(sequence_number));
    match approximate_arrival_timestamp.and_then(|at| SystemTime::try_from(at).ok()) {
        Some(arrival) => received.with_arrival_time(arrival),
        None => received,
    }
}

/// The SDK's child shards (of GetRecords or a subscription event).
pub(super) fn child_shards(
    children: Vec<sdk::ChildShard>,
) -> Result<Vec<ChildShard>, &'static str> {
    children
        .iter()
        .map(|child| {
            let range = child
                .hash_key_range()
                .ok_or("a child shard has no HashKeyRange")?;
            let hash_range =
                HashRange::from_decimal(range.starting_hash_key(), range.ending_hash_key())
                    .map_err(|_| "a child shard's HashKeyRange is not a valid range")?;
            Ok(ChildShard {
                shard_id: child.shard_id().to_owned(),
                parent_shard_ids: child.parent_shards().to_vec(),
                hash_range,
            })
        })
        .collect()
}

/// GetRecords' answer. An empty next iterator is the end of the shard, as a missing one.
pub(super) fn records_page(
    operation: &'static str,
    output: aws_sdk_kinesis::operation::get_records::GetRecordsOutput,
) -> Result<RecordsPage, KinesisError> {
    let child_shards = child_shards(output.child_shards.unwrap_or_default())
        .map_err(|reason| malformed(operation, reason))?;
    Ok(RecordsPage {
        records: output.records.into_iter().map(received).collect(),
        next_iterator: output.next_shard_iterator.filter(|it| !it.is_empty()),
        millis_behind_latest: output.millis_behind_latest,
        child_shards,
    })
}

/// One subscription event. An empty continuation is the end of the shard, as a missing one.
pub(super) fn shard_event(event: sdk::SubscribeToShardEvent) -> Result<ShardEvent, KinesisError> {
    let child_shards = child_shards(event.child_shards.unwrap_or_default())
        .map_err(|reason| malformed(SUBSCRIBE_TO_SHARD, reason))?;
    Ok(ShardEvent {
        records: event.records.into_iter().map(received).collect(),
        continuation_sequence_number: Some(event.continuation_sequence_number)
            .filter(|c| !c.is_empty()),
        millis_behind_latest: Some(event.millis_behind_latest),
        child_shards,
    })
}

/// SubscribeToShard's starting position.
pub(super) fn starting_position(
    start: &SubscribeStart,
) -> Result<sdk::StartingPosition, KinesisError> {
    use sdk::ShardIteratorType as Type;
    let builder = sdk::StartingPosition::builder();
    match start {
        SubscribeStart::TrimHorizon => builder.r#type(Type::TrimHorizon),
        SubscribeStart::Latest => builder.r#type(Type::Latest),
        SubscribeStart::AtTimestamp(at) => builder
            .r#type(Type::AtTimestamp)
            .timestamp(DateTime::from(*at)),
        SubscribeStart::AtSequence(sequence_number) => builder
            .r#type(Type::AtSequenceNumber)
            .sequence_number(sequence_number),
        SubscribeStart::AfterSequence(sequence_number) => builder
            .r#type(Type::AfterSequenceNumber)
            .sequence_number(sequence_number),
    }
    .build()
    .map_err(|error| construction_failure(SUBSCRIBE_TO_SHARD, error))
}

/// A consumer's state; CREATING, and any state a newer service adds, is
/// [`ConsumerStatus::Creating`]: wait for ACTIVE.
pub(super) fn consumer_status(status: &sdk::ConsumerStatus) -> ConsumerStatus {
    match status {
        sdk::ConsumerStatus::Active => ConsumerStatus::Active,
        sdk::ConsumerStatus::Deleting => ConsumerStatus::Deleting,
        _ => ConsumerStatus::Creating,
    }
}

/// A consumer as RegisterStreamConsumer (`Consumer`) or DescribeStreamConsumer
/// (`ConsumerDescription`) describes it: its state and ARN, or `Malformed` when the answer has
/// no `field`.
pub(super) fn consumer_info(
    operation: &'static str,
    consumer: Option<(sdk::ConsumerStatus, String)>,
    field: &'static str,
) -> Result<ConsumerInfo, KinesisError> {
    let (status, consumer_arn) = consumer.ok_or_else(|| {
        KinesisError::new(
            operation,
            ErrorClass::Malformed,
            "MalformedResponse",
            format!("the response has no {field}"),
        )
    })?;
    Ok(ConsumerInfo {
        status: consumer_status(&status),
        consumer_arn,
    })
}

/// DescribeStreamSummary's answer.
pub(super) fn stream_summary(summary: sdk::StreamDescriptionSummary) -> StreamSummary {
    StreamSummary {
        open_shard_count: u32::try_from(summary.open_shard_count).ok(),
        retention: u64::try_from(summary.retention_period_hours)
            .ok()
            .map(|hours| Duration::from_secs(hours * 3600)),
        stream_name: summary.stream_name,
        stream_arn: summary.stream_arn,
    }
}

/// An error inside a subscription's event stream: a modeled exception by its kind (an exception
/// sent in the stream has no error code in its metadata, so the variant says what it is),
/// anything else (a dropped connection, a frame that does not decode) as transient.
pub(super) fn classify_stream_error<R>(error: SdkError<StreamError, R>) -> KinesisError
where
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let (class, code, message) = match &error {
        SdkError::ServiceError(context) => {
            let code = stream_error_code(context.err());
            let class = classify_code(&code).unwrap_or(ErrorClass::Unexpected);
            let message = context
                .err()
                .message()
                .map_or_else(|| code.clone(), str::to_owned);
            (class, code, message)
        }
        SdkError::ConstructionFailure(_) => (
            ErrorClass::InvalidRequest,
            "ConstructionFailure".to_owned(),
            DisplayErrorContext(&error).to_string(),
        ),
        _ => (
            ErrorClass::Transient,
            "StreamInterrupted".to_owned(),
            DisplayErrorContext(&error).to_string(),
        ),
    };
    KinesisError::new(SUBSCRIBE_TO_SHARD, class, code, message).with_sdk_error(error)
}

/// The service's error code of an exception received in a subscription's stream.
pub(super) fn stream_error_code(error: &StreamError) -> String {
    let code = match error {
        StreamError::ResourceNotFoundException(_) => "ResourceNotFoundException",
        StreamError::ResourceInUseException(_) => "ResourceInUseException",
        StreamError::KmsDisabledException(_) => "KMSDisabledException",
        StreamError::KmsInvalidStateException(_) => "KMSInvalidStateException",
        StreamError::KmsAccessDeniedException(_) => "KMSAccessDeniedException",
        StreamError::KmsNotFoundException(_) => "KMSNotFoundException",
        StreamError::KmsOptInRequired(_) => "KMSOptInRequired",
        StreamError::KmsThrottlingException(_) => "KMSThrottlingException",
        StreamError::InternalFailureException(_) => "InternalFailure",
        other => other.code().unwrap_or("Unknown"),
    };
    code.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kinesis::operation::get_records::GetRecordsOutput;
    use aws_sdk_kinesis::types::error::{
        InternalFailureException, KmsThrottlingException, ResourceInUseException,
        ResourceNotFoundException,
    };

    const SEQUENCE: &str = "49590338271490256608559692538361571095921575989136588898";

    fn sdk_record(at: SystemTime) -> sdk::Record {
        sdk::Record::builder()
            .sequence_number(SEQUENCE)
            .partition_key("pk")
            .data(Blob::new(b"payload".to_vec()))
            .approximate_arrival_timestamp(DateTime::from(at))
            .build()
            .unwrap()
    }

    fn sdk_child(id: &str, parents: &[&str], start: &str, end: &str) -> sdk::ChildShard {
        sdk::ChildShard::builder()
            .shard_id(id)
            .set_parent_shards(Some(parents.iter().map(|p| (*p).to_owned()).collect()))
            .hash_key_range(
                sdk::HashKeyRange::builder()
                    .starting_hash_key(start)
                    .ending_hash_key(end)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    }

    #[test]
    fn sdk_records_convert_without_losing_fields() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let received = received(sdk_record(at));
        assert_eq!(received.partition_key, "pk");
        assert_eq!(received.data, "payload");
        assert_eq!(received.sequence_number.as_deref(), Some(SEQUENCE));
        assert_eq!(received.approximate_arrival_timestamp, Some(at));
    }

    #[test]
    fn put_entries_keep_key_hash_key_and_data() {
        let entries = [
            PutEntry::new("a".into(), Some("17".into()), Bytes::from_static(b"one")),
            PutEntry::new("b".into(), None, Bytes::from_static(b"two")),
        ];
        let sent = put_request_entries(&entries).unwrap();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].partition_key(), "a");
        assert_eq!(sent[0].explicit_hash_key(), Some("17"));
        assert_eq!(sent[0].data().as_ref(), b"one");
        assert_eq!(sent[1].explicit_hash_key(), None);
    }

    #[test]
    fn put_results_are_one_per_entry_in_order() {
        let answered = [
            sdk::PutRecordsResultEntry::builder()
                .shard_id("shardId-000000000001")
                .sequence_number("7")
                .build(),
            sdk::PutRecordsResultEntry::builder()
                .error_code("ProvisionedThroughputExceededException")
                .error_message("Rate exceeded")
                .build(),
            // Neither stored nor failed: cannot be counted as stored.
            sdk::PutRecordsResultEntry::builder()
                .shard_id("shardId-000000000001")
                .build(),
        ];
        assert_eq!(
            put_results(&answered),
            [
                PutResult::Stored {
                    shard_id: "shardId-000000000001".into(),
                    sequence_number: "7".into(),
                },
                PutResult::Failed {
                    code: "ProvisionedThroughputExceededException".into(),
                    message: "Rate exceeded".into(),
                },
                PutResult::Failed {
                    code: "MissingResult".into(),
                    message: String::new(),
                },
            ]
        );
    }

    #[test]
    fn a_records_page_ends_the_shard_on_an_empty_iterator() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let output = GetRecordsOutput::builder()
            .records(sdk_record(at))
            .next_shard_iterator("")
            .millis_behind_latest(0)
            .child_shards(sdk_child(
                "shardId-000000000002",
                &["shardId-000000000000", "shardId-000000000001"],
                "0",
                "340282366920938463463374607431768211455",
            ))
            .build()
            .unwrap();
        let page = records_page("GetRecords", output).unwrap();
        assert_eq!(page.records.len(), 1);
        assert_eq!(page.next_iterator, None);
        assert_eq!(page.millis_behind_latest, Some(0));
        assert_eq!(
            page.child_shards,
            [ChildShard {
                shard_id: "shardId-000000000002".into(),
                parent_shard_ids: vec![
                    "shardId-000000000000".into(),
                    "shardId-000000000001".into()
                ],
                hash_range: HashRange::ALL,
            }]
        );
        let open = GetRecordsOutput::builder()
            .set_records(Some(Vec::new()))
            .next_shard_iterator("it-2")
            .build()
            .unwrap();
        let page = records_page("GetRecords", open).unwrap();
        assert_eq!(page.next_iterator.as_deref(), Some("it-2"));
        assert!(page.child_shards.is_empty());
    }

    #[test]
    fn a_child_with_a_bad_range_is_malformed() {
        let output = GetRecordsOutput::builder()
            .set_records(Some(Vec::new()))
            .child_shards(sdk_child("shardId-000000000002", &["p"], "10", "5"))
            .build()
            .unwrap();
        let error = records_page("GetRecords", output).unwrap_err();
        assert_eq!(error.class(), ErrorClass::Malformed);
        assert_eq!(error.operation(), "GetRecords");
        let no_range = sdk::ChildShard::builder()
            .shard_id("c")
            .set_parent_shards(Some(vec!["p".into()]))
            .build();
        // The SDK's builder insists on a range; a child decoded without one is still refused.
        if let Ok(child) = no_range {
            assert!(child_shards(vec![child]).is_err());
        }
    }

    /// An event without records, as the service sends it.
    fn empty_event(continuation: &str, millis_behind_latest: i64) -> sdk::SubscribeToShardEvent {
        sdk::SubscribeToShardEvent::builder()
            .set_records(Some(Vec::new()))
            .continuation_sequence_number(continuation)
            .millis_behind_latest(millis_behind_latest)
            .build()
            .unwrap()
    }

    #[test]
    fn a_shard_event_ends_the_shard_on_an_empty_continuation() {
        let event = shard_event(empty_event("", 5)).unwrap();
        assert_eq!(event.continuation_sequence_number, None);
        assert_eq!(event.millis_behind_latest, Some(5));
        let event = empty_event("42", 0);
        assert_eq!(
            shard_event(event)
                .unwrap()
                .continuation_sequence_number
                .as_deref(),
            Some("42")
        );
    }

    #[test]
    fn subscriptions_start_where_asked() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for (start, kind, sequence, timestamp) in [
            (
                SubscribeStart::TrimHorizon,
                sdk::ShardIteratorType::TrimHorizon,
                None,
                None,
            ),
            (
                SubscribeStart::Latest,
                sdk::ShardIteratorType::Latest,
                None,
                None,
            ),
            (
                SubscribeStart::AtTimestamp(at),
                sdk::ShardIteratorType::AtTimestamp,
                None,
                Some(DateTime::from(at)),
            ),
            (
                SubscribeStart::AtSequence("5".into()),
                sdk::ShardIteratorType::AtSequenceNumber,
                Some("5"),
                None,
            ),
            (
                SubscribeStart::AfterSequence("6".into()),
                sdk::ShardIteratorType::AfterSequenceNumber,
                Some("6"),
                None,
            ),
        ] {
            let position = starting_position(&start).unwrap();
            assert_eq!(position.r#type(), &kind, "{start:?}");
            assert_eq!(position.sequence_number(), sequence, "{start:?}");
            assert_eq!(position.timestamp(), timestamp.as_ref(), "{start:?}");
        }
    }

    #[test]
    fn consumer_states_a_newer_service_adds_mean_wait() {
        assert_eq!(
            consumer_status(&sdk::ConsumerStatus::Active),
            ConsumerStatus::Active
        );
        assert_eq!(
            consumer_status(&sdk::ConsumerStatus::Deleting),
            ConsumerStatus::Deleting
        );
        assert_eq!(
            consumer_status(&sdk::ConsumerStatus::Creating),
            ConsumerStatus::Creating
        );
        assert_eq!(
            consumer_status(&sdk::ConsumerStatus::from("UPDATING")),
            ConsumerStatus::Creating
        );
    }

    #[test]
    fn a_consumer_answer_without_its_consumer_is_malformed() {
        let info = consumer_info(
            "RegisterStreamConsumer",
            Some((sdk::ConsumerStatus::Creating, "arn:c".into())),
            "Consumer",
        )
        .unwrap();
        assert_eq!(
            info,
            ConsumerInfo {
                consumer_arn: "arn:c".into(),
                status: ConsumerStatus::Creating,
            }
        );
        let error =
            consumer_info("DescribeStreamConsumer", None, "ConsumerDescription").unwrap_err();
        assert_eq!(error.class(), ErrorClass::Malformed);
        assert_eq!(error.message(), "the response has no ConsumerDescription");
    }

    #[test]
    fn stream_summaries_keep_name_arn_shards_and_retention() {
        let summary = sdk::StreamDescriptionSummary::builder()
            .stream_name("orders")
            .stream_arn("arn:aws:kinesis:us-east-1:123456789012:stream/orders")
            .stream_status(sdk::StreamStatus::Active)
            .retention_period_hours(24)
            .stream_creation_timestamp(DateTime::from_secs(0))
            .open_shard_count(4)
            .set_enhanced_monitoring(Some(Vec::new()))
            .build()
            .unwrap();
        let summary = stream_summary(summary);
        assert_eq!(summary.stream_name, "orders");
        assert_eq!(
            summary.stream_arn,
            "arn:aws:kinesis:us-east-1:123456789012:stream/orders"
        );
        assert_eq!(summary.open_shard_count, Some(4));
        assert_eq!(summary.retention, Some(Duration::from_secs(24 * 3600)));
    }

    #[test]
    fn exceptions_in_the_stream_are_classified_by_kind() {
        let cases = [
            (
                StreamError::ResourceInUseException(ResourceInUseException::builder().build()),
                ErrorClass::Transient,
            ),
            (
                StreamError::ResourceNotFoundException(
                    ResourceNotFoundException::builder().build(),
                ),
                ErrorClass::NotFound,
            ),
            (
                StreamError::KmsThrottlingException(KmsThrottlingException::builder().build()),
                ErrorClass::Throttled,
            ),
            (
                StreamError::InternalFailureException(InternalFailureException::builder().build()),
                ErrorClass::Transient,
            ),
        ];
        for (error, class) in cases {
            let code = stream_error_code(&error);
            assert_eq!(classify_code(&code), Some(class), "{code}");
        }
    }

    #[test]
    fn a_broken_stream_is_transient_and_keeps_its_cause() {
        let error: SdkError<StreamError, ()> = SdkError::timeout_error("the connection went quiet");
        let error = classify_stream_error(error);
        assert_eq!(error.class(), ErrorClass::Transient);
        assert_eq!(error.code(), "StreamInterrupted");
        assert_eq!(error.operation(), "SubscribeToShard");
        assert!(error.sdk_error().is_some());
        assert!(
            std::error::Error::source(&error).is_none(),
            "the message holds the text once"
        );
        assert!(
            error.message().contains("the connection went quiet"),
            "{error}"
        );
    }
}
