//! Retrieval: reading one shard's records, for the shard consumer.
//!
//! # Model
//!
//! A shard consumer reads its shard through a [`RecordSource`]: an async stream of
//! [`ShardBatch`]es that starts at a [`StartingPosition`] and hands out every user record from
//! there exactly once, in order, already deaggregated and filtered to the shard's hash range.
//! Its only job besides is to say when the shard has ended and which shards follow it. The
//! consumer never sees iterators, subscriptions, throttling or retries: polling and enhanced
//! fan-out implement the same trait, and the lease and processor code is the same for both.
//!
//! [`FanOutSource`] is the SubscribeToShard implementation (see [`register_stream_consumer`]);
//! both read through one cursor, so deaggregation, the hash-range filter and the skip at or
//! below the position are the same code.
//!
//! [`PollingSource`] is the GetRecords implementation (the Java KCL's `PollingRecordsFetcher`
//! with its `PrefetchRecordsPublisher`):
//!
//! ```text
//!  GetShardIterator ─► GetRecords ─► deaggregate ─► hash-range filter ─► skip ≤ position ─► batch
//!        ▲   (position)     │ throttled / 5xx / timeout: jittered backoff, retry               │
//!        └──────────────────┘ expired iterator: AT_SEQUENCE_NUMBER(last record) + skip          ▼
//!                                                   prefetch task ─► channel(1) ─► next_batch()
//! ```
//!
//! Pacing follows the service: 5 GetRecords calls per second per shard, shared by every
//! application polling it. While behind, the source calls again at once (at most one call per
//! [`PollingConfig::min_time_between_calls`]); once caught up (an answer under
//! [`PollingConfig::caught_up_threshold`] behind the tip, with records or without), at most
//! once per [`PollingConfig::idle_time_between_reads`], handing out the batch immediately.
//!
//! # Positions
//!
//! Sequence numbers are decimal strings of up to 128 digits, ordered as numbers
//! ([`aggregation_proto::compare_sequence_numbers`]). A user record's position is its Kinesis
//! record's sequence number and its sub-sequence number (0 for a record that was not
//! aggregated), so a checkpoint inside an aggregate resumes at the next sub-record
//! ([`StartingPosition::AfterSequence`]).
//!
//! # Errors
//!
//! Throttling (`ProvisionedThroughputExceededException`, `KMSThrottlingException`), server
//! errors, timeouts, connection failures and expired iterators are handled inside the
//! source and counted in [`RetrievalStats`]. A [`RetrievalError`] is what is left: fatal
//! problems (stream or shard gone, access denied, unusable KMS key, invalid request), or
//! [`RetrievalError::RetriesExhausted`] when a retry limit is configured.

mod budget;
mod config;
mod cursor;
mod error;
mod fanout;
mod fetcher;
mod polling;
mod retry;
mod sequence;
mod source;
mod stats;
#[cfg(test)]
mod tests;
mod types;

pub use budget::DEFAULT_BATCH_MEMORY_BUDGET;
pub use config::{
    DEFAULT_CAUGHT_UP_THRESHOLD, DEFAULT_IDLE_TIME_BETWEEN_READS, MAX_RECORDS_LIMIT, PollingConfig,
};
pub use error::RetrievalError;
pub use fanout::{
    FanOutConfig, FanOutSource, RegisteredConsumer, RegistrationError, register_stream_consumer,
};
pub use polling::PollingSource;
pub use source::RecordSource;
pub(crate) use stats::Counters;
pub use stats::RetrievalStats;
pub use types::{ChildShard, ShardBatch, StartingPosition};

pub(crate) use budget::{
    Charge, MAX_ANSWER_BYTES, MAX_EVENT_BYTES, Reader as BudgetReader, RecordsBudget, estimate,
};
pub(crate) use error::Class;
pub(crate) use fanout::{FanOutReader, register};
pub(crate) use fetcher::{LATEST_CLOCK_SKEW_MARGIN, children_of};
pub(crate) use polling::PollingReader;
pub(crate) use sequence::compare_sequence_numbers;
pub(crate) use types::StreamId;
