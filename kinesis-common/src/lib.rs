//! What the producer (`kpl`) and the consumer (`kcl`) both need from Kinesis, written once:
//!
//! - [`StreamId`]: a stream by name or by ARN, as every Kinesis operation accepts either;
//! - [`list_shards`]: every shard of a stream (all pages of ListShards), with lineage, hash-key
//!   range and whether it is still open;
//! - [`ErrorClass`] and [`classify`]: the single place that decides what a failed Kinesis call
//!   means (retry after a backoff, slow down, or give up), for whole calls and for the
//!   per-entry error codes of PutRecords;
//! - [`Backoff`]: the one jittered exponential wait between attempts of a retried call;
//! - [`later`]: a deadline that saturates instead of overflowing (`Duration::MAX` settings).
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod backoff;
mod error;
mod shards;
mod stream;
mod time;

pub use backoff::{Backoff, Jitter};
pub use error::{BoxError, ErrorClass, KinesisError, classify, classify_code, classify_error};
pub use shards::{Shard, ShardListing, list_shards, list_shards_as_sent};
pub use stream::StreamId;
pub use time::later;
