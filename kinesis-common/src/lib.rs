//! What the producer (`kpl`) and the consumer (`kcl`) both need from Kinesis, written once:
//!
//! - the Kinesis client layer: one narrow trait per group of calls ([`ListShards`],
//!   [`PutRecords`], [`ReadShard`], [`StreamConsumers`], [`SubscribeToShard`]), bundled as
//!   [`ProducerApi`] and [`ConsumerApi`], with their request and answer types; [`SdkKinesis`]
//!   implements them over the AWS SDK (one attempt per call: retries off), [`Bounded`] bounds
//!   any implementation by [`Timeouts`], and `testing::FakeKinesis` (feature `test-util`) keeps
//!   streams in memory;
//! - [`StreamId`]: a stream by name or by ARN, as every Kinesis operation accepts either;
//! - [`list_shards`]: every shard of a stream (all pages of ListShards), with lineage, hash-key
//!   range and whether it is still open;
//! - [`ErrorClass`] and [`classify`]: the single place that decides what a failed Kinesis call
//!   means (retry after a backoff, slow down, or give up), for whole calls and for the
//!   per-entry error codes of PutRecords;
//! - [`Backoff`]: the one jittered exponential wait between attempts of a retried call;
//! - [`ErrorChain`]: an error and its causes on one line, each said once;
//! - [`later`]: a deadline that saturates instead of overflowing (`Duration::MAX` settings).
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod api;
mod backoff;
#[cfg(feature = "cloudwatch")]
pub mod cloudwatch;
mod error;
mod shards;
mod stream;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
mod time;

pub use api::{
    Bounded, BoxFuture, ChildShard, ConsumerApi, ConsumerInfo, ConsumerStatus, EventStream,
    ListShards, ProducerApi, PutEntry, PutRecords, PutResult, ReadShard, RecordsPage, SdkKinesis,
    Shard, ShardEvent, ShardIteratorStart, ShardListing, StreamConsumers, StreamSummary,
    SubscribeStart, SubscribeToShard, Timeouts,
};
pub use backoff::{Backoff, Jitter};
pub use error::{
    BoxError, ErrorChain, ErrorClass, KinesisError, classify, classify_code, classify_error,
};
pub use shards::{list_shards, list_shards_as_sent};
pub use stream::StreamId;
pub use time::later;
