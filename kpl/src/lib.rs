//! The Kinesis producer: what Amazon's KPL should have been, in-process and async.
//!
//! ```text
//! send(record) --(budget: outstanding records and bytes)--> pipeline task
//!   shard map (ListShards) -> shard -> ordering lane -> aggregate -> per-shard rate limiter
//!   -> PutRecords batches (500 records / 5 MiB, linger; calls in flight and their timeouts
//!      adapt to the endpoint) -> outcome settled per Kinesis record
//!   stored: the receipt resolves with shard, sequence and sub-sequence number
//!   retryable failure: jittered exponential backoff, bounded by the record TTL, in order
//!   anything else: the receipt resolves with a typed error, every attempt, and the record
//! ```
//!
//! Every record accepted gets exactly one answer: its receipt, or, sent with
//! [`Producer::send_detached`], its count in the metrics. Memory is bounded by
//! `max_outstanding_bytes` / `max_outstanding_records`: `send` waits at the limit, `try_send`
//! returns `Full`. With [`ProducerBuilder::ordered`], records of one partition key are stored in
//! the order sent. One producer writes to any number of streams
//! ([`Producer::for_stream`]) with one budget and one pipeline.
//!
//! The pipeline reaches Kinesis through [`KinesisApi`] (`kinesis_common`'s `ProducerApi`: the
//! [`ListShards`] and [`PutRecords`] traits of the client layer both libraries share): the AWS
//! SDK ([`SdkKinesis`]) or, for tests, the in-memory `testing::FakeKinesis` (feature
//! `test-util`), with tokio's time.
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod budget;
mod builder;
mod client;
mod config;
mod error;
mod health;
mod inbox;
mod limiter;
mod metrics;
mod pipeline;
mod producer;
mod receipt;
mod streams;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use aggregation_proto::UserRecord;
pub use builder::{BuildError, ProducerBuilder};
pub use config::{
    DEFAULT_BATCH_BYTES, MAX_ORDERING_LANES, MisroutedRecords, PUT_RECORDS_MAX_BYTES,
    PUT_RECORDS_MAX_RECORDS, RECORD_OVERHEAD_BYTES, SHARD_BYTES_PER_SEC, SHARD_RECORDS_PER_SEC,
    record_charge,
};
pub use error::{
    ConfigError, FailureReason, FlushError, FlushReport, RecordFailure, SendError, TrySendError,
};
/// The Kinesis calls the producer makes: [`ListShards`] and [`PutRecords`], one attempt per
/// call (the producer bounds each call in time and retries by itself). Every type implementing
/// both implements it: to put the producer in front of something other than the AWS SDK (a
/// test fake, a proxy), implement those two; [`SdkKinesis`] is the real one.
pub use kinesis_common::ProducerApi as KinesisApi;
/// The CloudWatch publisher, with the KPL's table in [`cloudwatch::Builder::producer`]
/// (feature `cloudwatch`).
#[cfg(feature = "cloudwatch")]
pub use kinesis_common::cloudwatch;
pub use kinesis_common::{
    BoxFuture, ErrorClass, KinesisError, ListShards, PutEntry, PutRecords, PutResult, SdkKinesis,
    Shard, ShardListing, StreamId,
};
pub use metrics::MetricsSnapshot;
pub use producer::Producer;
pub use receipt::{Attempt, MAX_KEPT_ATTEMPTS, Receipt, RecordResult, RecordSuccess};
