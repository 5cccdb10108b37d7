//! Lambda functions reading Kinesis: the user records of a Lambda Kinesis event
//! (`aws_lambda_events`), KPL aggregates taken apart, and the partial batch responses that make
//! Lambda retry from the right record.
//!
//! - [`EventDeaggregator::deaggregate`] turns a [`KinesisEvent`] into a [`DeaggregatedBatch`]:
//!   [`LambdaUserRecord`]s with shard, sequence and sub-sequence numbers, arrival time and the
//!   event source, sharing each Kinesis record's buffer. It uses `aggregation-proto`'s
//!   deaggregator (the KCL's rules: a record without the magic or with a wrong MD5 is one plain
//!   record); a corrupt aggregate body is reported in place ([`CorruptAggregates`]).
//! - [`retry_from`] is the answer for the first user record that failed: Lambda retries from
//!   its Kinesis record, so the aggregate's earlier user records come again;
//!   [`DeaggregatedBatch::skip_processed`] with the [`Position`] of the last record finished
//!   skips them. At-least-once: see [`Position`].
//!
//! - [`ExactKinesisEvent`] reads the event JSON with arrival times right to the millisecond
//!   (`aws_lambda_events` 1.2 misreads those whose last digit is a zero).
//!
//! No AWS SDK, no tokio: it works in any Lambda runtime.
//!
//! ```
//! use kinesis_lambda::{BatchItem, EventDeaggregator, Position, all_processed, retry_from};
//! use aws_lambda_events::event::kinesis::KinesisEvent;
//! use aws_lambda_events::event::streams::KinesisEventResponse;
//!
//! /// Processes what was not done yet; `done` is the last record finished, kept by the caller.
//! fn handle(event: KinesisEvent, done: &mut Option<Position>) -> Result<KinesisEventResponse, kinesis_lambda::EventError> {
//!     let mut batch = EventDeaggregator::new().deaggregate(event)?;
//!     batch.skip_processed(done.as_ref());
//!     for item in batch.items() {
//!         match item {
//!             BatchItem::Record(record) if record.data().is_empty() => return Ok(retry_from(record)),
//!             BatchItem::Record(record) => *done = Some(record.position()),
//!             BatchItem::Corrupt(corrupt) => return Ok(corrupt.retry_from_here()),
//!         }
//!     }
//!     Ok(all_processed())
//! }
//! # let mut done = None;
//! # assert_eq!(handle(KinesisEvent::default(), &mut done).unwrap(), all_processed());
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![deny(rustdoc::broken_intra_doc_links)]

mod deaggregate;
mod error;
mod event;
mod position;
mod record;
mod response;

pub use aws_lambda_events::event::kinesis::KinesisEvent;
pub use aws_lambda_events::event::streams::{KinesisBatchItemFailure, KinesisEventResponse};

pub use deaggregate::{
    BatchItem, BatchStats, CorruptAggregates, DeaggregatedBatch, EventDeaggregator,
};
pub use error::{EventError, PositionParseError};
pub use event::ExactKinesisEvent;
pub use position::Position;
pub use record::{CorruptRecord, EventSource, LambdaUserRecord};
pub use response::{all_processed, retry_from, retry_from_sequence_number};
