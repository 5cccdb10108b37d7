//! Partial batch responses (`ReportBatchItemFailures`).
//!
//! Lambda takes the smallest `itemIdentifier` of the answer as the checkpoint and retries
//! every Kinesis record from it, so one failure, the first, is all the answer needs. An empty
//! answer means the whole batch succeeded.

use aws_lambda_events::event::streams::KinesisEventResponse;

use crate::record::LambdaUserRecord;

/// The answer for a batch whose every record was processed: no failures.
pub fn all_processed() -> KinesisEventResponse {
    KinesisEventResponse::default()
}

/// The answer that makes Lambda retry from the Kinesis record holding `first_failed`: the
/// whole aggregate comes again, its user records before `first_failed` included (skip them
/// with [`Position`](crate::Position)).
///
/// Needs `FunctionResponseTypes: ["ReportBatchItemFailures"]` on the event source mapping;
/// without it Lambda ignores the answer and, the invocation having succeeded, moves on.
pub fn retry_from(first_failed: &LambdaUserRecord) -> KinesisEventResponse {
    retry_from_sequence_number(first_failed.sequence_number())
}

/// The answer that makes Lambda retry from the Kinesis record with this sequence number.
pub fn retry_from_sequence_number(sequence_number: &str) -> KinesisEventResponse {
    let mut response = KinesisEventResponse::default();
    response.add_failure(sequence_number);
    response
}
