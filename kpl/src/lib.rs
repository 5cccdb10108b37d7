//! The Kinesis producer: what Amazon's KPL should have been, in-process and async.
//!
//! ```text
//! send(record) --(budget: outstanding records and bytes)--> pipeline task
//!   shard map (ListShards) -> one aggregator per predicted shard -> per-shard rate limiter
//!   -> PutRecords batches (500 records / 5 MiB, linger) -> results
//!   success: the receipt resolves with shard, sequence and sub-sequence number
//!   retryable failure: jittered exponential backoff, bounded by the record TTL, re-routed
//!   anything else: the receipt resolves with a typed error and every attempt
//! ```
//!
//! Every record accepted gets exactly one answer: its receipt, or, sent with
//! [`Producer::send_detached`], its count in the metrics. Memory is bounded by
//! `max_outstanding_bytes` / `max_outstanding_records`: `send` waits at the limit, `try_send`
//! returns `Full`.
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod budget;
mod config;
mod error;
mod inbox;
mod limiter;
mod metrics;
mod pipeline;
mod producer;
mod put_records;
mod receipt;
mod shard_map;
mod stream;

pub use aggregation_proto::UserRecord;
pub use config::{
    PUT_RECORDS_MAX_BYTES, PUT_RECORDS_MAX_RECORDS, RECORD_OVERHEAD_BYTES, SHARD_BYTES_PER_SEC,
    SHARD_RECORDS_PER_SEC, record_charge,
};
pub use error::{ConfigError, RecordFailure, SendError, TrySendError};
pub use metrics::MetricsSnapshot;
pub use producer::{BuildError, Producer, ProducerBuilder};
pub use receipt::{Attempt, Receipt, RecordResult, RecordSuccess};
pub use stream::StreamId;
